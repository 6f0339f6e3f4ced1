//! Attribution on a host: a client in the agent's network namespace by its
//! socket's cgroup and uid (NETLINK_SOCK_DIAG), a bridged container by its
//! address in the container registry, anything else `Unknown`.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

use super::cgroup::CgroupIndex;
use super::containers::AtAddress;
use super::{
    Attribution, ConnInfo, ContainerInfo, Containers, Identified, Process, Program, Workload,
};
use crate::creds::Changed;
use crate::sys::diag::SockDiag;

/// Walks the cgroup tree in the background when asked: a lookup that misses
/// (a cgroup created since the last walk) waits for the next walk instead of
/// walking on the request path. Requests that arrive together share one
/// walk.
#[derive(Debug)]
pub struct Rescanner {
    index: Arc<CgroupIndex>,
    wake: Notify,
    /// Walks begun and walks finished: a walk is under way when they differ.
    started: AtomicU64,
    done: watch::Sender<u64>,
}

impl Rescanner {
    /// A rescanner of `index`; `run` must be spawned for it to work.
    pub fn new(index: Arc<CgroupIndex>) -> Arc<Self> {
        Arc::new(Self {
            index,
            wake: Notify::new(),
            started: AtomicU64::new(0),
            done: watch::channel(0).0,
        })
    }

    /// Walks whenever asked, forever, calling `after_walk` after each walk
    /// (new cgroups may be workloads whose roles are to be prefetched).
    pub async fn run(self: Arc<Self>, after_walk: Arc<dyn Fn() + Send + Sync>) {
        let mut last = tokio::time::Instant::now() - WALK_GAP;
        loop {
            self.wake.notified().await;
            // Connections from cgroups the index does not know ask for
            // walks; a user making cgroups as fast as it can must not keep
            // the walker busy all the time. Requests meanwhile share the
            // next walk.
            tokio::time::sleep_until(last + WALK_GAP).await;
            self.started.fetch_add(1, Ordering::SeqCst);
            let index = Arc::clone(&self.index);
            match tokio::task::spawn_blocking(move || index.rescan()).await {
                Ok(Ok(count)) => tracing::debug!(cgroups = count, "cgroup index refreshed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot walk the cgroup tree"),
                Err(e) => tracing::warn!(error = %e, "the cgroup walk panicked"),
            }
            self.done.send_modify(|n| *n += 1);
            last = tokio::time::Instant::now();
            // It goes over every cgroup (prefetch): not on a worker.
            let after = Arc::clone(&after_walk);
            let _ = tokio::task::spawn_blocking(move || after()).await;
        }
    }

    /// Asks for a walk that starts after now; the future completes when it
    /// is done.
    pub fn request(&self) -> Changed {
        let mut done = self.done.subscribe();
        let finished = *done.borrow_and_update();
        let started = self.started.load(Ordering::SeqCst);
        // A walk under way may have started before the new cgroup existed:
        // wait for the one after it (the wake-up below runs it).
        let target = if started > finished {
            started + 1
        } else {
            finished + 1
        };
        self.wake.notify_one();
        Box::pin(async move {
            let _ = done.wait_for(|n| *n >= target).await;
        })
    }
}

/// The least time between the end of one walk and the start of the next.
const WALK_GAP: std::time::Duration = std::time::Duration::from_millis(50);

/// What the eBPF redirect recorded about a connection's client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its cgroup v2 id.
    pub cgroup_id: u64,
    /// Its process id.
    pub pid: u32,
    /// Its uid.
    pub uid: u32,
    /// Its command name.
    pub comm: String,
    /// The executable it ran at `connect()`, if the kernel could tell.
    pub exe: Option<super::ExeId>,
}

/// The eBPF redirect's records (`sys::ebpf::Redirect`), as attribution
/// reads them.
pub trait Recorded: Send + Sync + std::fmt::Debug {
    /// The record of the connection whose client socket has `cookie` (a
    /// client in the agent's network namespace).
    fn by_socket(&self, cookie: u64) -> Option<Record>;
    /// The record of the connection from `client` (a client in another
    /// network namespace, by its own address).
    fn by_address(&self, client: SocketAddrV4) -> Option<Record>;
    /// Drops that record once its connection is attributed: the address
    /// and port may be someone else's next.
    fn forget_address(&self, client: SocketAddrV4);
}

/// Attribution by kernel lookups and the container registry.
#[derive(Debug)]
pub struct Local {
    diag: Mutex<SockDiag>,
    index: Arc<CgroupIndex>,
    rescanner: Arc<Rescanner>,
    containers: Option<Arc<Containers>>,
    redirect: Option<Arc<dyn Recorded>>,
    exe: Arc<super::exe::ExeSource>,
}

impl Local {
    /// Attribution with `diag`, the cgroup `index` (refreshed by
    /// `rescanner`) and, when the Docker watcher runs, its `containers`.
    pub fn new(
        diag: SockDiag,
        index: Arc<CgroupIndex>,
        rescanner: Arc<Rescanner>,
        containers: Option<Arc<Containers>>,
    ) -> Self {
        Self {
            diag: Mutex::new(diag),
            index,
            rescanner,
            containers,
            redirect: None,
            exe: Arc::default(),
        }
    }

    /// Also reads the eBPF redirect's records: the exact process behind a
    /// redirected connection, and the cgroup of a client in another
    /// network namespace. `exe` reads the executables `exe =` rules ask
    /// for.
    pub fn with_redirect(
        mut self,
        redirect: Arc<dyn Recorded>,
        exe: Arc<super::exe::ExeSource>,
    ) -> Self {
        self.redirect = Some(redirect);
        self.exe = exe;
        self
    }

    /// The client socket of a connection from `peer` to `target`. An IPv6
    /// client sent to the agent's IPv4 listener by the redirect is an
    /// IPv6 socket with IPv4-mapped addresses.
    fn lookup(
        &self,
        peer: SocketAddr,
        target: SocketAddr,
    ) -> std::io::Result<Option<crate::sys::diag::SockInfo>> {
        let mut diag = self.diag.lock().unwrap_or_else(|e| e.into_inner());
        let found = diag.lookup(peer, target)?;
        match (found, peer, target, &self.redirect) {
            (None, SocketAddr::V4(p), SocketAddr::V4(t), Some(_)) => {
                let mapped =
                    |a: SocketAddrV4| SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port());
                diag.lookup(mapped(p), mapped(t))
            }
            (found, ..) => Ok(found),
        }
    }
}

impl Attribution for Local {
    fn identify(&self, conn: &ConnInfo) -> Identified {
        let peer = SocketAddr::new(conn.peer.ip().to_canonical(), conn.peer.port());
        let target = SocketAddr::new(conn.target.ip().to_canonical(), conn.target.port());
        let unknown = || Identified::Known(Workload::Unknown(peer.ip()));
        let socket = match self.lookup(peer, target) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!(error = %e, %peer, "sock_diag lookup failed");
                return unknown();
            }
        };
        if let Some(socket) = socket {
            // A process in the agent's network namespace.
            let record = self
                .redirect
                .as_ref()
                .and_then(|r| r.by_socket(socket.cookie));
            let Some(cgroup_id) = socket.cgroup_id else {
                return unknown();
            };
            return self.process(peer.ip(), cgroup_id, socket.uid, record, None);
        }
        // Another network namespace.
        let SocketAddr::V4(client) = peer else {
            return unknown();
        };
        match &self.redirect {
            Some(redirect) => match redirect.by_address(client) {
                Some(record) => self.bridged_record(client, record),
                // Every connection the programs redirect files its record
                // before its first packet: one without a record did not
                // come through them (a raw socket, a forged address).
                None => unknown(),
            },
            None => self.bridged_container(peer),
        }
    }
}

impl Local {
    /// A process in cgroup `cgroup_id`: the container whose cgroup it is, if
    /// the registry recorded one, else what root named of its path.
    /// `expected` is the container a bridged client's address says it must
    /// be; `peer` is the client's address.
    fn process(
        &self,
        peer: IpAddr,
        cgroup_id: u64,
        uid: u32,
        record: Option<Record>,
        expected: Option<&Arc<ContainerInfo>>,
    ) -> Identified {
        let Some(entry) = self.index.entry(cgroup_id) else {
            return Identified::Retry(self.rescanner.request());
        };
        let container = self
            .containers
            .as_ref()
            .and_then(|c| c.by_cgroup(&self.index.ancestry(cgroup_id)));
        if container.is_none() && entry.facts.container_scope {
            // Root made a container runtime's cgroup that the registry does
            // not know (yet, or at all: no Docker watcher, another
            // runtime): it is not a plain process, whose uid or unit
            // rules could match it. Wait for the registry, then Unknown.
            return match &self.containers {
                Some(containers) => Identified::Retry(containers.next_change()),
                None => Identified::Known(Workload::Unknown(peer)),
            };
        }
        if let Some(expected) = expected {
            let belongs = container
                .as_ref()
                .is_some_and(|c| c.id == expected.id || shares_network_of(c, expected));
            if !belongs {
                tracing::debug!(cgroup = %entry.path, container = %expected.name, "a record filed for a container's address by a process not in it; ignored");
                return Identified::Known(Workload::Unknown(peer));
            }
        }
        let program = record.map(|r| Program {
            pid: r.pid,
            exe: super::Exe::from(Arc::clone(&self.exe), r.exe),
            comm: r.comm,
        });
        Identified::Known(Workload::Process(Arc::new(Process {
            cgroup_id,
            cgroup: entry.path,
            uid,
            facts: entry.facts,
            container,
            program,
        })))
    }

    /// A bridged client the eBPF redirect recorded: believed only when the
    /// container registry puts the recording process in the container at
    /// that address (or one sharing its network): any network namespace
    /// can file a record under any address.
    fn bridged_record(&self, client: SocketAddrV4, record: Record) -> Identified {
        let found = self.vouched(client, record);
        // Read once: the address and port may be another's next.
        if let Some(redirect) = &self.redirect
            && matches!(found, Identified::Known(_))
        {
            redirect.forget_address(client);
        }
        found
    }

    fn vouched(&self, client: SocketAddrV4, record: Record) -> Identified {
        let Some(containers) = &self.containers else {
            tracing::debug!(%client, "a bridged client's record, and no container registry to vouch for it: no role");
            return Identified::Known(Workload::Unknown((*client.ip()).into()));
        };
        let owner = match containers.at((*client.ip()).into()) {
            AtAddress::One(owner) | AtAddress::Shared(owner, _) => owner,
            AtAddress::Nobody => return Identified::Retry(containers.next_change()),
        };
        let (cgroup_id, uid) = (record.cgroup_id, record.uid);
        self.process(
            (*client.ip()).into(),
            cgroup_id,
            uid,
            Some(record),
            Some(&owner),
        )
    }

    /// A bridged client without a record: the container at its address,
    /// if it is alone there.
    fn bridged_container(&self, peer: SocketAddr) -> Identified {
        let Some(containers) = &self.containers else {
            return Identified::Known(Workload::Unknown(peer.ip()));
        };
        match containers.at(peer.ip()) {
            AtAddress::One(container) => Identified::Known(Workload::Container(container)),
            AtAddress::Shared(owner, sharers) => {
                let names: Vec<&str> = sharers.iter().map(|c| c.name.as_str()).collect();
                tracing::debug!(container = %owner.name, sharing = ?names, %peer, "containers share this address (--network container:): no role by address");
                Identified::Known(Workload::Unknown(peer.ip()))
            }
            // A container that just started may not be registered yet.
            AtAddress::Nobody => Identified::Retry(containers.next_change()),
        }
    }
}

/// Whether `c` runs in `owner`'s network namespace (`--network
/// container:owner`, by id or name).
fn shares_network_of(c: &ContainerInfo, owner: &ContainerInfo) -> bool {
    c.network_of
        .as_deref()
        .is_some_and(|x| x == owner.id || x == owner.name)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;
    use std::time::Duration;

    use super::*;

    /// A cgroup created after the last walk is found by the next one,
    /// which a request starts at once: a workload's first request waits
    /// for one walk, not for a timeout.
    #[tokio::test]
    async fn a_request_is_answered_by_the_next_walk() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(CgroupIndex::new(dir.path().to_owned()));
        index.rescan().unwrap();
        let rescanner = Rescanner::new(Arc::clone(&index));
        tokio::spawn(Arc::clone(&rescanner).run(Arc::new(|| {})));
        for round in 0..3 {
            let new = dir.path().join(format!("new-{round}"));
            std::fs::create_dir(&new).unwrap();
            let id = std::fs::metadata(&new).unwrap().ino();
            assert!(index.path(id).is_none());
            tokio::time::timeout(Duration::from_millis(400), rescanner.request())
                .await
                .expect("the walk finishes well before the attribution wait");
            assert_eq!(index.path(id).as_deref(), Some(&*format!("/new-{round}")));
        }
    }
}
