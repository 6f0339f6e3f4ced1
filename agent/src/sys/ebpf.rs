//! The eBPF redirect (`host.mode = "ebpf"`): loads imds-agent's programs
//! (built by `cargo xtask build-ebpf` from `agent-ebpf/`, embedded in the
//! binary), attaches them to a cgroup, tells them where the agent listens,
//! and reads who made each redirected connection.
//!
//! The programs' links are pinned in a bpf file system (`Settings::pins`):
//! they stay attached when the agent stops or dies, so workloads get
//! "connection refused", never whatever answers at 169.254.169.254. A
//! starting agent attaches its own programs, then removes the pins it finds
//! (its predecessor's), which detaches those; `imds-agent cleanup` removes
//! them all. Without a pin directory the programs live as long as this
//! value: dropping it (or the process's exit) detaches them.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use agent_ebpf_common::{AddrKey, Config, ExeOffsets, Origin};
use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, SockOps};

/// The programs, as `cargo xtask build-ebpf` built them.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("IMDS_EBPF_OBJECT"));

/// The cgroup programs and their names in the object.
const SOCK_ADDR_PROGRAMS: [&str; 4] = [
    "imds_connect4",
    "imds_connect6",
    "imds_getpeername4",
    "imds_getpeername6",
];
const SOCK_OPS_PROGRAM: &str = "imds_sockops";

/// aya attaches through BPF links (Linux 5.7+), which sit beside other
/// programs on the same cgroup whatever the mode; the kernel refuses
/// `BPF_F_ALLOW_MULTI` on a link, so the mode must be the plain one.
const ATTACH_MODE: CgroupAttachMode = CgroupAttachMode::Single;

/// Why the redirect could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// The kernel refused the object (no BPF support, no CAP_BPF, …).
    #[error("cannot load the eBPF programs")]
    Load(#[source] aya::EbpfError),
    /// A program is missing from the object.
    #[error("the eBPF object has no program {0}; rebuild it with `cargo xtask build-ebpf`")]
    Missing(&'static str),
    /// The verifier or the kernel refused a program.
    #[error("cannot load or attach the eBPF program {0}")]
    Program(&'static str, #[source] aya::programs::ProgramError),
    /// The cgroup can't be opened.
    #[error("cannot open the cgroup {0}")]
    Cgroup(PathBuf, #[source] std::io::Error),
    /// A map is missing or can't be used.
    #[error("the eBPF map {0} can't be used")]
    Map(&'static str, #[source] aya::maps::MapError),
    /// The pin directory is not on a bpf file system, or can't be made.
    #[error("cannot pin the programs in {0}")]
    PinDir(PathBuf, #[source] std::io::Error),
    /// A link could not be pinned.
    #[error("cannot pin the link of {0} at {1}")]
    Pin(&'static str, PathBuf, #[source] aya::pin::PinError),
    /// A program's link is not a BPF link (kernel older than 5.7).
    #[error("the link of {0} can't be pinned (a BPF link needs Linux 5.7)")]
    NotPinnable(&'static str),
}

/// Where redirected connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The cgroup v2 directory the programs attach to: every process in it
    /// and below is redirected.
    pub cgroup: PathBuf,
    /// The agent's loopback listener.
    pub local: SocketAddrV4,
    /// The host address containers in other network namespaces reach the
    /// agent at (same port), if they are redirected.
    pub bridge: Option<Ipv4Addr>,
    /// The agent's process id and (after the drop) uid: its own
    /// connections are left alone.
    pub agent_tgid: u32,
    /// See `agent_tgid`.
    pub agent_uid: u32,
    /// The agent's network namespace cookie.
    pub agent_netns: u64,
    /// Where the links are pinned (a directory on a bpf file system), if
    /// they are to outlive the agent.
    pub pins: Option<PathBuf>,
    /// Where the programs find the connecting process's executable (from
    /// the kernel's BTF); all zero when unknown.
    pub exe_offsets: ExeOffsets,
}

/// The attached programs and the maps the agent reads.
pub struct Redirect {
    /// Holds the programs; dropping it detaches those not pinned.
    _ebpf: Ebpf,
    /// The pinned links (their pins keep them attached after the agent).
    _pinned: Vec<PinnedLink>,
    by_cookie: HashMap<MapData, u64, Origin>,
    /// Behind a lock: removing an entry takes `&mut` (aya's API), though
    /// the kernel needs none.
    by_addr: std::sync::Mutex<HashMap<MapData, AddrKey, Origin>>,
}

impl std::fmt::Debug for Redirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redirect").finish_non_exhaustive()
    }
}

impl Redirect {
    /// Loads the programs, attaches them to `settings.cgroup` and sets
    /// them up. Needs CAP_BPF and CAP_NET_ADMIN (or root).
    pub fn attach(settings: &Settings) -> Result<Self, EbpfError> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(EbpfError::Load)?;
        let mut config: Array<MapData, Config> = take_map(&mut ebpf, "CONFIG")?;
        config
            .set(0, config_of(settings), 0)
            .map_err(|e| EbpfError::Map("CONFIG", e))?;
        let cgroup = std::fs::File::open(&settings.cgroup)
            .map_err(|e| EbpfError::Cgroup(settings.cgroup.clone(), e))?;
        let pins = settings.pins.as_deref().map(PinDir::open).transpose()?;
        let mut pinned = Vec::new();
        for name in SOCK_ADDR_PROGRAMS {
            let program: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(EbpfError::Missing(name))?
                .try_into()
                .map_err(|e| EbpfError::Program(name, e))?;
            program.load().map_err(|e| EbpfError::Program(name, e))?;
            let link = program
                .attach(cgroup.as_fd(), ATTACH_MODE)
                .map_err(|e| EbpfError::Program(name, e))?;
            if let Some(pins) = &pins {
                let link = program
                    .take_link(link)
                    .map_err(|e| EbpfError::Program(name, e))?;
                let link = FdLink::try_from(link).map_err(|_| EbpfError::NotPinnable(name))?;
                pinned.push(pins.pin(name, link)?);
            }
        }
        let sock_ops: &mut SockOps = ebpf
            .program_mut(SOCK_OPS_PROGRAM)
            .ok_or(EbpfError::Missing(SOCK_OPS_PROGRAM))?
            .try_into()
            .map_err(|e| EbpfError::Program(SOCK_OPS_PROGRAM, e))?;
        sock_ops
            .load()
            .map_err(|e| EbpfError::Program(SOCK_OPS_PROGRAM, e))?;
        let link = sock_ops
            .attach(cgroup.as_fd(), ATTACH_MODE)
            .map_err(|e| EbpfError::Program(SOCK_OPS_PROGRAM, e))?;
        if let Some(pins) = &pins {
            let link = sock_ops
                .take_link(link)
                .map_err(|e| EbpfError::Program(SOCK_OPS_PROGRAM, e))?;
            let link =
                FdLink::try_from(link).map_err(|_| EbpfError::NotPinnable(SOCK_OPS_PROGRAM))?;
            pinned.push(pins.pin(SOCK_OPS_PROGRAM, link)?);
            // Ours are in place: the ones before them (a predecessor's)
            // can go, which detaches them.
            for old in pins.others() {
                match std::fs::remove_file(&old) {
                    Ok(()) => {
                        tracing::info!(pin = %old.display(), "took over from a previous agent's eBPF link")
                    }
                    Err(e) => {
                        tracing::warn!(pin = %old.display(), error = %e, "cannot remove a previous agent's eBPF link")
                    }
                }
            }
        }
        Ok(Self {
            by_cookie: take_map(&mut ebpf, "BY_COOKIE")?,
            by_addr: std::sync::Mutex::new(take_map(&mut ebpf, "BY_ADDR")?),
            _pinned: pinned,
            _ebpf: ebpf,
        })
    }
}

/// The bpf file system's magic number (`statfs`'s `f_type`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// A directory of pins on a bpf file system, and the names this agent
/// gives its own.
struct PinDir {
    dir: PathBuf,
    /// What this agent's pins' names end with: `-<pid>-<ns>`, unique
    /// (bpffs refuses names with a dot).
    suffix: String,
}

impl PinDir {
    /// `dir`, made if missing (its parent must be on a bpf file system).
    fn open(dir: &Path) -> Result<Self, EbpfError> {
        let err = |e| EbpfError::PinDir(dir.to_owned(), e);
        let parent = dir.parent().unwrap_or(Path::new("/"));
        if !is_bpf_fs(parent).map_err(err)? {
            return Err(err(std::io::Error::other(format!(
                "{} is not a bpf file system (mount one: `mount -t bpf bpf {}`; or set host.ebpf_pin_dir = \"\" to let the programs go with the agent, failing open)",
                parent.display(),
                parent.display()
            ))));
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e)),
        }
        Ok(Self {
            dir: dir.to_owned(),
            suffix: format!("-{}-{}", std::process::id(), monotonic_ns().unwrap_or(0)),
        })
    }

    fn pin(&self, name: &'static str, link: FdLink) -> Result<PinnedLink, EbpfError> {
        let path = self.dir.join(format!("{name}{}", self.suffix));
        link.pin(&path)
            .map_err(|e| EbpfError::Pin(name, path.clone(), e))
    }

    /// The pins in the directory that are not this agent's.
    fn others(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with(&self.suffix))
            })
            .collect()
    }
}

/// Whether `path` is on a bpf file system.
#[allow(unsafe_code)]
fn is_bpf_fs(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `statfs` is plain data the call fills; `c` is a NUL-terminated
    // path that outlives the call.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &raw mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// How long after its `connect()` a bridged client's record is believed
/// (it is read when the connection's first request arrives).
const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`.
#[allow(unsafe_code)]
fn monotonic_ns() -> Option<u64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    (rc == 0).then(|| now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
}

fn addr_key(client: SocketAddrV4) -> AddrKey {
    AddrKey {
        ip4: u32::from_ne_bytes(client.ip().octets()),
        port: u32::from(client.port()),
    }
}

fn config_of(settings: &Settings) -> Config {
    Config {
        agent_tgid: settings.agent_tgid,
        local_ip4: u32::from_ne_bytes(settings.local.ip().octets()),
        bridge_ip4: settings
            .bridge
            .map_or(0, |ip| u32::from_ne_bytes(ip.octets())),
        port: settings.local.port(),
        enabled: 1,
        agent_netns: settings.agent_netns,
        agent_uid: settings.agent_uid,
        exe_offsets: settings.exe_offsets,
        _pad: 0,
    }
}

/// Where the programs find a task's executable in this kernel, from its
/// BTF; all zero (the programs then record no executable, and `exe` rules
/// match nothing) when it can't be read.
pub fn exe_offsets() -> ExeOffsets {
    let btf = match crate::sys::btf::Btf::kernel() {
        Ok(btf) => btf,
        Err(e) => {
            tracing::warn!(error = %e, "no kernel BTF: `exe` rules can't be bound to the connecting process and match nothing");
            return ExeOffsets::default();
        }
    };
    let offset = |s: &str, m: &str| btf.member_offset(s, m);
    let found = (|| {
        Some(ExeOffsets {
            task_mm: offset("task_struct", "mm")?,
            mm_exe_file: offset("mm_struct", "exe_file")?,
            file_inode: offset("file", "f_inode")?,
            inode_ino: offset("inode", "i_ino")?,
            inode_sb: offset("inode", "i_sb")?,
            sb_dev: offset("super_block", "s_dev")?,
        })
    })();
    found.unwrap_or_else(|| {
        tracing::warn!(
            "the kernel's BTF lacks a member the eBPF programs read: `exe` rules match nothing"
        );
        ExeOffsets::default()
    })
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(EbpfError::Missing(name))?;
    T::try_from(map).map_err(|e| EbpfError::Map(name, e))
}

/// A process's command name, from `Origin::comm`.
fn comm(origin: &Origin) -> String {
    let end = origin
        .comm
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(origin.comm.len());
    String::from_utf8_lossy(&origin.comm[..end]).into_owned()
}

/// Whether `path` is a cgroup v2 directory (what the programs attach to).
pub fn is_cgroup2_dir(path: &Path) -> bool {
    path.join("cgroup.procs").is_file()
}

impl crate::attribution::Recorded for Redirect {
    fn by_socket(&self, cookie: u64) -> Option<crate::attribution::Record> {
        let origin = self.by_cookie.get(&cookie, 0).ok()?;
        Some(record(&origin))
    }

    /// Only a record younger than `MAX_AGE`: an older one may be of a
    /// container that has gone, whose address and port another now uses.
    fn by_address(&self, client: SocketAddrV4) -> Option<crate::attribution::Record> {
        let origin = self
            .by_addr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr_key(client), 0)
            .ok()?;
        let age = monotonic_ns()?.checked_sub(origin.connected_ns)?;
        (age <= MAX_AGE.as_nanos() as u64).then(|| record(&origin))
    }

    fn forget_address(&self, client: SocketAddrV4) {
        // Gone already (the LRU evicted it) is fine.
        let _ = self
            .by_addr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr_key(client));
    }
}

fn record(origin: &Origin) -> crate::attribution::Record {
    crate::attribution::Record {
        cgroup_id: origin.cgroup_id,
        pid: origin.tgid,
        uid: origin.uid,
        comm: comm(origin),
        exe: (origin.exe_ino != 0).then_some(crate::attribution::ExeId {
            ino: origin.exe_ino,
            // The kernel's dev_t: major in the top 12 bits, minor below.
            major: origin.exe_dev >> 20,
            minor: origin.exe_dev & 0xf_ffff,
        }),
    }
}
