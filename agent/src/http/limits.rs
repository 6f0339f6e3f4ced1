//! Connection slots per workload: one workload (or one user's many
//! workloads) can't take every slot and starve the others. The server
//! identifies a connection as soon as it is accepted, and a connection
//! over its workload's or its owner's share is closed at once.
//!
//! The owner is who made the workload: a process's user (a user may make
//! any number of cgroups in its own subtree, each a workload: the user is
//! the one whose slice it is in, else the owner of the subordinate uid
//! range the uid is in, from /etc/subuid, else the uid), a container, or an
//! address. Workloads known only by their address (attribution off: a
//! developer's laptop) are not limited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::attribution::Workload;

/// The shares.
#[derive(Debug)]
pub struct Limits {
    per_workload: usize,
    per_owner: usize,
    /// Subordinate uid ranges and the user each belongs to.
    subuids: Vec<SubIds>,
    open: Mutex<HashMap<Box<[u8]>, usize>>,
}

/// One line of /etc/subuid: `count` uids from `start` are `owner`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIds {
    /// The first uid.
    pub start: u32,
    /// How many.
    pub count: u32,
    /// The user they were given to.
    pub owner: u32,
}

/// The subordinate uid ranges of /etc/subuid (`name:start:count`), read
/// once at start; a name that is no user is skipped.
pub fn subordinate_uids(text: &str) -> Vec<SubIds> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().split(':');
            let (who, start, count) = (parts.next()?, parts.next()?, parts.next()?);
            let owner = match who.parse::<u32>() {
                Ok(uid) => uid,
                Err(_) => nix::unistd::User::from_name(who).ok()??.uid.as_raw(),
            };
            Some(SubIds {
                start: start.parse().ok()?,
                count: count.parse().ok()?,
                owner,
            })
        })
        .collect()
}

/// An admitted connection's hold on its shares, given back on drop.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<Limits>,
    keys: Vec<Box<[u8]>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Its workload has `per_workload` open already.
    Workload,
    /// Its owner has `per_owner` open already.
    Owner,
}

impl Limits {
    /// At most `per_workload` connections per workload and `per_owner` per
    /// owner; `subuids` say whose subordinate uids are whose.
    pub fn new(per_workload: usize, per_owner: usize, subuids: Vec<SubIds>) -> Arc<Self> {
        Arc::new(Self {
            per_workload,
            per_owner,
            subuids,
            open: Mutex::default(),
        })
    }

    /// The user a uid belongs to: the owner of the subordinate range it is
    /// in, else itself.
    fn user_of(&self, uid: u32) -> u32 {
        self.subuids
            .iter()
            .find(|r| uid >= r.start && u64::from(uid) < u64::from(r.start) + u64::from(r.count))
            .map_or(uid, |r| r.owner)
    }

    /// Takes a share for a connection of `workload`, unless it or its
    /// owner has all its shares open.
    pub fn admit(self: &Arc<Self>, workload: &Workload) -> Result<Option<Slot>, Over> {
        let Some(owner) = self.owner_key(workload) else {
            return Ok(None);
        };
        let own = workload.token_binding().into_boxed_slice();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.get(&own).copied().unwrap_or(0) >= self.per_workload {
            return Err(Over::Workload);
        }
        // A workload that is its own owner (a container, an address)
        // counts once.
        let keys: Vec<Box<[u8]>> = if owner == own {
            vec![own]
        } else {
            if open.get(&owner).copied().unwrap_or(0) >= self.per_owner {
                return Err(Over::Owner);
            }
            vec![own, owner]
        };
        for key in &keys {
            *open.entry(key.clone()).or_default() += 1;
        }
        Ok(Some(Slot {
            limits: Arc::clone(self),
            keys,
        }))
    }

    /// How many keys hold connections (tests).
    pub fn tracked(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            if let Some(count) = open.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    open.remove(key);
                }
            }
        }
    }
}

impl Limits {
    /// Whose share a workload's connections come out of.
    fn owner_key(&self, workload: &Workload) -> Option<Box<[u8]>> {
        match workload {
            Workload::Address(_) => None,
            Workload::Unknown(_) | Workload::Container(_) => Some(workload.token_binding().into()),
            // A user's slice (root named it) says whose the process is even
            // when its uid is one of the user's subordinate uids (newuidmap
            // gives a user thousands); outside a slice, /etc/subuid does.
            Workload::Process(p) => Some(match (&p.container, p.facts.user_slice) {
                (Some(container), _) => format!("ctr:{}", container.id).into_bytes().into(),
                (None, Some(user)) => format!("uid:{user}").into_bytes().into(),
                (None, None) => format!("uid:{}", self.user_of(p.uid)).into_bytes().into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::Process;

    fn process(cgroup_id: u64, uid: u32) -> Workload {
        Workload::Process(Arc::new(Process {
            cgroup_id,
            cgroup: "/x".into(),
            uid,
            facts: Arc::default(),
            container: None,
            program: None,
        }))
    }

    #[test]
    fn a_workload_and_an_owner_get_their_share_and_no_more() {
        let limits = Limits::new(2, 3, Vec::new());
        let a1 = limits.admit(&process(1, 1000)).unwrap();
        let a2 = limits.admit(&process(1, 1000)).unwrap();
        assert_eq!(limits.admit(&process(1, 1000)).unwrap_err(), Over::Workload);
        // The same user's other cgroup: the owner's third share.
        let b1 = limits.admit(&process(2, 1000)).unwrap();
        assert_eq!(limits.admit(&process(3, 1000)).unwrap_err(), Over::Owner);
        // Another user is untouched.
        assert!(limits.admit(&process(4, 2000)).unwrap().is_some());
        drop(a1);
        assert!(limits.admit(&process(3, 1000)).unwrap().is_some());
        drop((a2, b1));
        assert_eq!(limits.tracked(), 0, "every share given back");
    }

    #[test]
    fn a_users_subordinate_uids_are_that_user() {
        let limits = Limits::new(10, 2, Vec::new());
        let in_slice = |cgroup_id, uid| {
            Workload::Process(Arc::new(Process {
                cgroup_id,
                cgroup: "/x".into(),
                uid,
                facts: Arc::new(crate::attribution::facts::of_root_named(
                    "/user.slice/user-1000.slice/session-1.scope",
                )),
                container: None,
                program: None,
            }))
        };
        let _a = limits.admit(&in_slice(1, 100_000)).unwrap();
        let _b = limits.admit(&in_slice(2, 165_535)).unwrap();
        assert_eq!(
            limits.admit(&in_slice(3, 1000)).unwrap_err(),
            Over::Owner,
            "one user, however many uids"
        );
    }

    #[test]
    fn subordinate_uids_outside_a_slice_are_their_users() {
        let subuids = subordinate_uids("1001:200000:65536\nno-such-user-here:9:9\nbad line\n");
        assert_eq!(
            subuids,
            [SubIds {
                start: 200_000,
                count: 65536,
                owner: 1001,
            }]
        );
        let limits = Limits::new(10, 2, subuids);
        let _a = limits.admit(&process(1, 200_001)).unwrap();
        let _b = limits.admit(&process(2, 265_535)).unwrap();
        assert_eq!(limits.admit(&process(3, 1001)).unwrap_err(), Over::Owner);
        assert!(
            limits.admit(&process(4, 265_536)).unwrap().is_some(),
            "past the range"
        );
    }

    #[test]
    fn addresses_alone_are_not_limited() {
        let limits = Limits::new(1, 1, Vec::new());
        let ip = Workload::Address("127.0.0.1".parse().unwrap());
        let held: Vec<_> = (0..10).map(|_| limits.admit(&ip).unwrap()).collect();
        assert!(held.iter().all(Option::is_none));
        let unknown = Workload::Unknown("10.0.0.9".parse().unwrap());
        let one = limits.admit(&unknown).unwrap();
        assert_eq!(limits.admit(&unknown).unwrap_err(), Over::Workload);
        drop(one);
    }
}
