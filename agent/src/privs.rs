//! Dropping privileges once the privileged setup is done: the listeners are
//! bound, the address added, the firewall installed, the netlink sockets
//! opened. The agent becomes an unprivileged user with no capability, and
//! can't regain any (`no_new_privs`). The stop helper
//! (`net::stop_helper`) becomes the same user with CAP_NET_ADMIN alone.
//!
//! Capabilities are per thread, so this must run while the process has one
//! thread: before the async runtime starts. `drop_to` checks that.

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Group, Uid, User};

use crate::config::PrivilegesConfig;

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    /// No such user.
    #[error(
        "no user {0:?} (privileges.user): create it (`cargo xtask install` does, with systemd/imds-agent.sysusers and systemd-sysusers), or set privileges.user to a user of the agent's own or a uid"
    )]
    NoUser(String),
    /// No such group.
    #[error("no group {0:?} (privileges.group or supplementary_groups)")]
    NoGroup(String),
    /// Other threads exist.
    #[error("privileges must be dropped before any other thread starts ({0} threads)")]
    Threads(usize),
    /// A step failed.
    #[error("cannot drop privileges: {step} failed")]
    Step {
        /// The step.
        step: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn step<E: std::error::Error + Send + Sync + 'static>(
    step: &'static str,
) -> impl FnOnce(E) -> PrivError {
    move |e| PrivError::Step {
        step,
        source: Box::new(e),
    }
}

/// What the agent becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The user to switch to, when started as root.
    pub user: Option<Account>,
    /// The one capability a helper keeps (the stop helper CAP_NET_ADMIN,
    /// the executable helper CAP_SYS_PTRACE); the serving agent keeps none.
    pub keep: Option<Capability>,
}

/// A user to switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user's name (or uid, as text).
    pub name: String,
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub groups: Vec<u32>,
}

impl Target {
    /// The uid the agent serves as.
    pub fn uid(&self) -> u32 {
        self.user
            .as_ref()
            .map_or_else(|| Uid::current().as_raw(), |u| u.uid)
    }

    /// The gid the agent serves as.
    pub fn gid(&self) -> u32 {
        self.user
            .as_ref()
            .map_or_else(|| Gid::current().as_raw(), |u| u.gid)
    }

    /// The same target, keeping `capability` (a helper).
    pub fn keeping(&self, capability: Capability) -> Self {
        Self {
            keep: Some(capability),
            ..self.clone()
        }
    }

    /// Adds a supplementary group (the Docker socket's).
    pub fn add_group(&mut self, gid: u32) {
        if let Some(user) = &mut self.user
            && user.gid != gid
            && !user.groups.contains(&gid)
        {
            user.groups.push(gid);
        }
    }
}

/// What `config` says the agent becomes, or `None` if there is nothing to
/// drop: a root process switches to the configured user; any process
/// holding capabilities (a non-root service given some by systemd) drops
/// them.
pub fn target(config: &PrivilegesConfig) -> Result<Option<Target>, PrivError> {
    let root = Uid::effective().is_root();
    let user = match &config.user {
        Some(user) if root => Some(resolve(user, config)?),
        _ => None,
    };
    if user.is_none() && !holds_capabilities() {
        return Ok(None);
    }
    Ok(Some(Target { user, keep: None }))
}

fn resolve(user: &str, config: &PrivilegesConfig) -> Result<Account, PrivError> {
    let (uid, primary) = match User::from_name(user).ok().flatten() {
        Some(u) => (u.uid.as_raw(), u.gid.as_raw()),
        None => match user.parse::<u32>() {
            // A uid with no passwd entry (a dynamic user): its own gid.
            Ok(uid) => (uid, uid),
            Err(_) => return Err(PrivError::NoUser(user.to_owned())),
        },
    };
    let gid = match &config.group {
        Some(group) => group_id(group)?,
        None => primary,
    };
    let groups = config
        .supplementary_groups
        .iter()
        .map(|g| group_id(g))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Account {
        name: user.to_owned(),
        uid,
        gid,
        groups,
    })
}

fn holds_capabilities() -> bool {
    [CapSet::Permitted, CapSet::Effective, CapSet::Ambient]
        .into_iter()
        .any(|set| caps::read(None, set).is_ok_and(|c| !c.is_empty()))
}

fn group_id(name: &str) -> Result<u32, PrivError> {
    match Group::from_name(name).ok().flatten() {
        Some(g) => Ok(g.gid.as_raw()),
        None => name
            .parse()
            .map_err(|_| PrivError::NoGroup(name.to_owned())),
    }
}

/// Becomes `target`. Order matters (each step needs what the previous one
/// keeps): shrink the bounding set while CAP_SETPCAP is held; keep the
/// permitted set across the uid change; change groups, then gid, then uid;
/// trim permitted, effective and inheritable to what is kept (and ambient,
/// so nothing leaks to children); forbid regaining anything.
pub fn drop_to(target: &Target) -> Result<(), PrivError> {
    let threads = thread_count();
    if threads != 1 {
        return Err(PrivError::Threads(threads));
    }
    let keep: CapsHashSet = target.keep.into_iter().collect();
    // Without CAP_SETPCAP (a non-root service) the bounding set stays; with
    // nothing permitted and no_new_privs, nothing in it can be regained.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::runtime::thread_all_supported() {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)
                    .map_err(step("drop from the bounding set"))?;
            }
        }
    }
    if let Some(user) = &target.user {
        caps::securebits::set_keepcaps(true).map_err(step("set keepcaps"))?;
        let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).map_err(step("setgroups"))?;
        let gid = Gid::from_raw(user.gid);
        nix::unistd::setresgid(gid, gid, gid).map_err(step("setresgid"))?;
        let uid = Uid::from_raw(user.uid);
        nix::unistd::setresuid(uid, uid, uid).map_err(step("setresuid"))?;
    }
    // Ambient first: it must stay a subset of permitted and inheritable.
    caps::clear(None, CapSet::Ambient).map_err(step("clear ambient"))?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(step("clear inheritable"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(step("set effective"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(step("set permitted"))?;
    if target.user.is_some() {
        caps::securebits::set_keepcaps(false).map_err(step("clear keepcaps"))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(step("set no_new_privs"))?;
    Ok(())
}

/// What a helper forked from the agent (the stop helper, the executable
/// helper) does first: ignore SIGINT and SIGTERM, which a terminal or
/// systemd sends to the agent's whole group (the helper's end is the
/// agent's business), take `name`, close every descriptor but `keep`, and
/// become `target`.
pub fn become_helper(
    name: &std::ffi::CStr,
    keep: &[std::os::fd::RawFd],
    target: &Target,
) -> Result<(), PrivError> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: setting a signal's disposition to "ignore" installs no
    // handler code.
    #[allow(unsafe_code)]
    unsafe {
        let _ = signal(Signal::SIGINT, SigHandler::SigIgn);
        let _ = signal(Signal::SIGTERM, SigHandler::SigIgn);
    }
    let _ = nix::sys::prctl::set_name(name);
    close_all_but(keep);
    drop_to(target)
}

/// Closes every descriptor but stdin/out/err and `keep`: a helper forked
/// from the agent must not hold its listeners or sockets.
fn close_all_but(keep: &[std::os::fd::RawFd]) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<std::os::fd::RawFd> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // Closing the directory's own descriptor (already dropped) fails
        // harmlessly.
        let _ = nix::unistd::close(fd);
    }
}

/// The lines of `/proc/self/status` that say what the process may do.
pub fn status() -> String {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let wanted = [
        "Uid:",
        "Gid:",
        "Groups:",
        "CapPrm:",
        "CapEff:",
        "CapBnd:",
        "CapAmb:",
        "NoNewPrivs:",
    ];
    text.lines()
        .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("; ")
}

fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_user_no_switch() {
        let t = target(&PrivilegesConfig::default()).unwrap();
        assert!(t.is_none_or(|t| t.user.is_none()));
    }

    #[test]
    fn resolves_names_and_numbers() {
        if !Uid::effective().is_root() {
            return;
        }
        let config = |user: &str| PrivilegesConfig {
            user: Some(user.to_owned()),
            ..PrivilegesConfig::default()
        };
        let nobody = target(&config("nobody")).unwrap().unwrap();
        assert_eq!(nobody.uid(), 65534);
        let mut dynamic = target(&config("61234")).unwrap().unwrap();
        assert_eq!((dynamic.uid(), dynamic.gid()), (61234, 61234));
        dynamic.add_group(61234);
        dynamic.add_group(7);
        dynamic.add_group(7);
        assert_eq!(dynamic.user.as_ref().unwrap().groups, [7]);
        assert!(matches!(
            target(&config("no-such-user-here")),
            Err(PrivError::NoUser(_))
        ));
        let bad_group = PrivilegesConfig {
            supplementary_groups: vec!["no-such-group-here".to_owned()],
            ..config("nobody")
        };
        assert!(matches!(target(&bad_group), Err(PrivError::NoGroup(_))));
    }

    #[test]
    fn refuses_with_threads_running() {
        // The test harness itself runs threads.
        let target = Target {
            user: None,
            keep: None,
        };
        assert!(matches!(drop_to(&target), Err(PrivError::Threads(_))));
        assert!(status().contains("Uid:"));
    }
}
