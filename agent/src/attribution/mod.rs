//! Which workload is asking: turns a connection into a `Workload`, whose
//! identity IMDSv2 tokens are bound to and whose role the assignment rules
//! look up.
//!
//! - `ByPeerAddress` (attribution off): the peer address is the workload.
//! - `Local` (`local.rs`): a client in the agent's network namespace is
//!   found by its socket (NETLINK_SOCK_DIAG: cgroup and uid); one in another
//!   namespace (a bridged container) by its address in the container
//!   registry (`containers.rs`, kept by the Docker watcher). A client it
//!   can't tell is `Unknown` and gets no role.

pub mod cgroup;
pub mod containers;
pub mod exe;
pub mod facts;
mod local;
pub mod procs;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use containers::{ContainerInfo, Containers};
pub use exe::ExeId;
pub use local::{Local, Record, Recorded, Rescanner};

use self::facts::CgroupFacts;
use crate::creds::Changed;

/// What host attribution needs from the kernel, opened before the agent
/// drops privileges.
#[derive(Debug)]
pub struct Kernel {
    /// The sock_diag socket.
    pub diag: crate::sys::diag::SockDiag,
    /// The cgroup index, walked once.
    pub cgroups: Arc<cgroup::CgroupIndex>,
    /// The cgroup2 mount.
    pub root: std::path::PathBuf,
    /// The eBPF redirect's records, in eBPF mode.
    pub redirect: Option<Arc<dyn Recorded>>,
    /// Where executables are read (eBPF mode).
    pub exe: Arc<exe::ExeSource>,
}

/// Opens what `config` needs: nothing unless cgroup attribution is on.
pub fn open(config: &crate::config::AttributionConfig) -> anyhow::Result<Option<Kernel>> {
    use anyhow::Context as _;
    if !config.cgroups {
        return Ok(None);
    }
    let root = match &config.cgroup_root {
        Some(root) => root.clone(),
        None => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
                .context("reading /proc/self/mountinfo")?;
            cgroup::cgroup2_mount(&mountinfo).context(
                "no cgroup2 file system is mounted; mount one or set attribution.cgroups = false",
            )?
        }
    };
    let cgroups = Arc::new(cgroup::CgroupIndex::new(root.clone()));
    let count = cgroups
        .rescan()
        .with_context(|| format!("walking the cgroup tree at {}", root.display()))?;
    let diag = crate::sys::diag::SockDiag::open().context("opening a NETLINK_SOCK_DIAG socket")?;
    tracing::info!(root = %root.display(), cgroups = count, "cgroup attribution");
    Ok(Some(Kernel {
        diag,
        cgroups,
        root,
        redirect: None,
        exe: Arc::default(),
    }))
}

/// The two ends of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The address the connection arrived at.
    pub local: SocketAddr,
    /// The address the client connected to: `local`, unless DNAT changed
    /// it (then the original destination).
    pub target: SocketAddr,
}

/// A process on this host, found by its socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Process {
    /// The cgroup v2 id its socket was created in.
    pub cgroup_id: u64,
    /// That cgroup's path (`/system.slice/nginx.service`), for logs; rules
    /// read `facts`.
    pub cgroup: Arc<str>,
    /// The socket's owner.
    pub uid: u32,
    /// What the path says, as far as root named it (unit, user unit, user
    /// slice).
    pub facts: Arc<CgroupFacts>,
    /// The container whose cgroup it is, by the container registry's record
    /// of its cgroup (a `--network host` container, or one the eBPF
    /// redirect attributed): then it is that container, and nothing else.
    pub container: Option<Arc<ContainerInfo>>,
    /// The exact process, when the eBPF redirect recorded it.
    pub program: Option<Program>,
}

/// The process behind a redirected connection, as the eBPF programs
/// recorded it at `connect()`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Program {
    /// Its process id.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
    /// Its executable, read from /proc when a rule first asks.
    pub exe: Exe,
}

impl Program {
    /// The path of the process's executable, as `/proc/<pid>/exe` shows
    /// it: read once, and only when a rule names an executable (most
    /// connections never pay for it). Not proof of anything by itself: see
    /// `runs_what_connected`. Blocking: the server reads it off the request
    /// path (`resolve_exe`) before rules are asked.
    pub fn exe(&self) -> Option<&str> {
        self.exe
            .path
            .get_or_init(|| self.exe.source.path_of(self.pid))
            .as_deref()
    }

    /// Whether the file `exe` names, in the agent's own view of the file
    /// system, is the one the kernel recorded the process running at
    /// `connect()`. A process that exec'd another program since (connect,
    /// fork, exec the allowed binary, send from the child), a pid reused
    /// by another process, or a path that names another file in the
    /// process's own mount namespace (a bind mount over the allowed
    /// binary) all fail. Checked once; only worth asking when a rule's
    /// pattern matches the path (the path is the workload's to choose).
    pub fn runs_what_connected(&self) -> bool {
        *self.exe.verified.get_or_init(|| {
            // The kernel could not tell what it ran: nothing to bind a
            // match to.
            let (Some(recorded), Some(path)) = (self.exe.recorded, self.exe()) else {
                return false;
            };
            let now = exe::identity_of(path);
            if now != Some(recorded) {
                tracing::info!(pid = self.pid, exe = %path, "the process's executable is not the file it ran when it connected: no exe rule matches it");
                return false;
            }
            true
        })
    }

    /// The executable's path, if `exe` has been read already (then it
    /// costs nothing); an empty one when it could not be read.
    pub fn exe_if_read(&self) -> Option<Arc<str>> {
        self.exe
            .path
            .get()
            .map(|p| p.clone().unwrap_or_else(|| Arc::from("")))
    }

    /// Whether `runs_what_connected` has been checked already.
    pub fn exe_checked(&self) -> bool {
        self.exe.verified.get().is_some()
    }
}

/// A process's executable, read on first use. It follows from the pid and
/// the record, so it takes no part in comparisons.
#[derive(Debug, Clone, Default)]
pub struct Exe {
    path: Arc<std::sync::OnceLock<Option<Arc<str>>>>,
    verified: Arc<std::sync::OnceLock<bool>>,
    /// The file it ran at `connect()`, as the kernel recorded it.
    recorded: Option<ExeId>,
    source: Arc<exe::ExeSource>,
}

impl Exe {
    /// Not read yet: `source` reads it, and it counts only if it is still
    /// `recorded`.
    pub fn from(source: Arc<exe::ExeSource>, recorded: Option<ExeId>) -> Self {
        Self {
            path: Arc::default(),
            verified: Arc::default(),
            recorded,
            source,
        }
    }

    /// Already known and checked: `path` (tests).
    pub fn known(path: Option<&str>) -> Self {
        Self {
            path: Arc::new(std::sync::OnceLock::from(path.map(Arc::from))),
            verified: Arc::new(std::sync::OnceLock::from(path.is_some())),
            recorded: None,
            source: Arc::default(),
        }
    }

    /// What was read, if it was.
    pub fn if_read(&self) -> Option<&str> {
        self.path.get().and_then(|e| e.as_deref())
    }
}

impl PartialEq for Exe {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Exe {}

impl std::hash::Hash for Exe {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

/// A workload, as far as attribution could tell.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Known only by its address: attribution is off.
    Address(IpAddr),
    /// A process on this host.
    Process(Arc<Process>),
    /// A container on a bridge, by its address.
    Container(Arc<ContainerInfo>),
    /// Attribution is on and could not tell who this is. It gets no role,
    /// never someone else's.
    Unknown(IpAddr),
}

impl Workload {
    /// The bytes an IMDSv2 token is bound to. Distinct workloads give
    /// distinct bytes (the kind prefix keeps kinds apart), so a token can't
    /// be replayed by another workload, even from the same address.
    pub fn token_binding(&self) -> Vec<u8> {
        match self {
            Workload::Address(ip) | Workload::Unknown(ip) => format!("ip:{ip}").into_bytes(),
            Workload::Process(p) => format!("cg:{}:{}", p.cgroup_id, p.uid).into_bytes(),
            Workload::Container(c) => format!("ctr:{}", c.id).into_bytes(),
        }
    }

    /// The container this workload is, if any.
    pub fn container(&self) -> Option<&Arc<ContainerInfo>> {
        match self {
            Workload::Container(c) => Some(c),
            Workload::Process(p) => p.container.as_ref(),
            _ => None,
        }
    }

    /// The workload as the credentials engine keeps it: what its life is
    /// checked by (its container, else its cgroup) and, for a user's own
    /// cgroups, who made it: a user with a slice (`user-UID.slice`), or
    /// the unit that delegated the subtree it is in. The host's own units
    /// and containers have no owner: only users make workloads by the
    /// hundred.
    pub fn credentials_user(&self) -> crate::creds::User {
        use crate::creds::{Holder, User};
        match self {
            Workload::Address(_) | Workload::Unknown(_) => User {
                holder: Holder::Unchecked,
                owner: None,
            },
            Workload::Container(c) => User {
                holder: Holder::Container(Arc::from(c.id.as_str())),
                owner: None,
            },
            Workload::Process(p) => match &p.container {
                Some(c) => User {
                    holder: Holder::Container(Arc::from(c.id.as_str())),
                    owner: None,
                },
                None => User {
                    holder: Holder::Cgroup(p.cgroup_id),
                    owner: match p.facts.user_slice {
                        Some(uid) => Some(Arc::from(format!("user:{uid}"))),
                        None if *p.facts.trusted != *p.cgroup => {
                            Some(Arc::from(format!("delegated:{}", p.facts.trusted)))
                        }
                        None => None,
                    },
                },
            },
        }
    }

    /// A name for `RoleSessionName`: the container's name, or what the
    /// cgroup's path says (`CgroupFacts::label`).
    pub fn session_label(&self) -> Option<String> {
        match self {
            Workload::Address(_) | Workload::Unknown(_) => None,
            Workload::Container(c) => Some(c.name.clone()),
            Workload::Process(p) => match &p.container {
                Some(c) => Some(c.name.clone()),
                None => p.facts.label(),
            },
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Address(ip) => write!(f, "address {ip}"),
            Workload::Unknown(ip) => write!(f, "unknown workload at {ip}"),
            Workload::Container(c) => write!(f, "container {} ({})", c.name, short(&c.id)),
            Workload::Process(p) => {
                match (&p.container, &p.facts.user_unit, &p.facts.unit) {
                    (Some(c), ..) => {
                        write!(f, "container {} ({}, by cgroup", c.name, short(&c.id))?;
                    }
                    (None, Some(user), _) => {
                        write!(f, "user {}'s unit {} (uid {}", user.uid, user.name, p.uid)?;
                    }
                    (None, None, Some(unit)) => write!(f, "unit {unit} (uid {}", p.uid)?,
                    (None, None, None) => write!(f, "cgroup {} (uid {}", p.cgroup, p.uid)?,
                }
                match &p.program {
                    Some(program) => write!(f, ", pid {} {})", program.pid, program.comm),
                    None => f.write_str(")"),
                }
            }
        }
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// What attribution found.
pub enum Identified {
    /// The workload.
    Known(Workload),
    /// Not yet: the future completes when trying again may succeed (a new
    /// cgroup the index has not seen yet).
    Retry(Changed),
}

impl fmt::Debug for Identified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identified::Known(w) => f.debug_tuple("Known").field(w).finish(),
            Identified::Retry(_) => f.write_str("Retry(..)"),
        }
    }
}

/// Tells which workload is behind a connection. Called once per connection,
/// on its first request, so it may cost a kernel lookup but must not block.
pub trait Attribution: Send + Sync + fmt::Debug {
    /// The workload behind `conn`.
    fn identify(&self, conn: &ConnInfo) -> Identified;
}

/// Identifies workloads by the peer address alone: attribution off.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByPeerAddress;

impl Attribution for ByPeerAddress {
    fn identify(&self, conn: &ConnInfo) -> Identified {
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; use
        // the IPv4 form so both listeners agree on who a client is.
        Identified::Known(Workload::Address(conn.peer.ip().to_canonical()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(i: Identified) -> Workload {
        match i {
            Identified::Known(w) => w,
            Identified::Retry(_) => panic!("retry"),
        }
    }

    #[test]
    fn mapped_ipv4_is_the_same_workload() {
        let local: SocketAddr = "[::]:80".parse().unwrap();
        let conn = |peer: &str| ConnInfo {
            peer: peer.parse().unwrap(),
            local,
            target: local,
        };
        let mapped = known(ByPeerAddress.identify(&conn("[::ffff:10.0.0.1]:5000")));
        let plain = known(ByPeerAddress.identify(&conn("10.0.0.1:6000")));
        assert_eq!(mapped, plain);
        assert_eq!(plain.token_binding(), b"ip:10.0.0.1");
    }

    #[test]
    fn bindings_differ_between_kinds_and_workloads() {
        let process = |id, uid| {
            Workload::Process(Arc::new(Process {
                cgroup_id: id,
                cgroup: "/a".into(),
                uid,
                facts: Arc::default(),
                container: None,
                program: None,
            }))
        };
        let container = Workload::Container(Arc::new(ContainerInfo::for_tests("abc", "api")));
        let all = [
            Workload::Address("10.0.0.1".parse().unwrap()),
            Workload::Address("10.0.0.12".parse().unwrap()),
            process(5, 0),
            process(5, 1000),
            process(55, 0),
            container,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.token_binding(), b.token_binding(), "{a} / {b}");
            }
        }
        // An unknown workload and the address it came from bind alike: both
        // are only the address.
        assert_eq!(
            Workload::Unknown("10.0.0.1".parse().unwrap()).token_binding(),
            all[0].token_binding()
        );
    }

    #[test]
    fn session_labels() {
        let unit = Workload::Process(Arc::new(Process {
            cgroup_id: 1,
            cgroup: "/system.slice/web.service".into(),
            uid: 0,
            facts: Arc::new(facts::of_root_named("/system.slice/web.service")),
            container: None,
            program: None,
        }));
        assert_eq!(unit.session_label().as_deref(), Some("web.service"));
        let bare = Workload::Process(Arc::new(Process {
            cgroup_id: 1,
            cgroup: "/ci/job-7".into(),
            uid: 0,
            facts: Arc::new(facts::of_root_named("/ci/job-7")),
            container: None,
            program: None,
        }));
        assert_eq!(bare.session_label().as_deref(), Some("job-7"));
        let user = Workload::Process(Arc::new(Process {
            cgroup_id: 1,
            cgroup: "/user.slice/user-4242.slice/user@4242.service/app.slice/nginx.service".into(),
            uid: 4242,
            facts: Arc::new(facts::of_root_named(
                "/user.slice/user-4242.slice/user@4242.service/app.slice/nginx.service",
            )),
            container: None,
            program: None,
        }));
        assert_eq!(
            user.session_label().as_deref(),
            Some("u4242-nginx.service"),
            "a user's unit never passes for the system unit of that name"
        );
        assert_eq!(
            Workload::Unknown("10.0.0.1".parse().unwrap()).session_label(),
            None
        );
    }
}
