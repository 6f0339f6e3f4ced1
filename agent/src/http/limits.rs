//! Connection slots per workload: one workload (or one user's many
//! workloads) can't take every slot and starve the others. The server
//! identifies a connection as soon as it is accepted, and a connection
//! over its workload's or its owner's share is closed at once.
//!
//! The owner is who made the workload: a process's uid (a user may make
//! any number of cgroups in its own subtree, each a workload), a
//! container, or an address. Workloads known only by their address
//! (attribution off: a developer's laptop) are not limited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::attribution::Workload;

/// The shares.
#[derive(Debug)]
pub struct Limits {
    per_workload: usize,
    per_owner: usize,
    open: Mutex<HashMap<Box<[u8]>, usize>>,
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
    /// owner.
    pub fn new(per_workload: usize, per_owner: usize) -> Arc<Self> {
        Arc::new(Self {
            per_workload,
            per_owner,
            open: Mutex::default(),
        })
    }

    /// Takes a share for a connection of `workload`, unless it or its
    /// owner has all its shares open.
    pub fn admit(self: &Arc<Self>, workload: &Workload) -> Result<Option<Slot>, Over> {
        let Some(owner) = owner_key(workload) else {
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

/// Whose share a workload's connections come out of.
fn owner_key(workload: &Workload) -> Option<Box<[u8]>> {
    match workload {
        Workload::Address(_) => None,
        Workload::Unknown(_) | Workload::Container(_) => Some(workload.token_binding().into()),
        // A user's slice (root named it) says whose the process is even
        // when its uid is one of the user's subordinate uids (newuidmap
        // gives a user thousands).
        Workload::Process(p) => Some(match (&p.container, p.facts.user_slice) {
            (Some(container), _) => format!("ctr:{}", container.id).into_bytes().into(),
            (None, Some(user)) => format!("uid:{user}").into_bytes().into(),
            (None, None) => format!("uid:{}", p.uid).into_bytes().into(),
        }),
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
        let limits = Limits::new(2, 3);
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
        let limits = Limits::new(10, 2);
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
    fn addresses_alone_are_not_limited() {
        let limits = Limits::new(1, 1);
        let ip = Workload::Address("127.0.0.1".parse().unwrap());
        let held: Vec<_> = (0..10).map(|_| limits.admit(&ip).unwrap()).collect();
        assert!(held.iter().all(Option::is_none));
        let unknown = Workload::Unknown("10.0.0.9".parse().unwrap());
        let one = limits.admit(&unknown).unwrap();
        assert_eq!(limits.admit(&unknown).unwrap_err(), Over::Workload);
        drop(one);
    }
}
