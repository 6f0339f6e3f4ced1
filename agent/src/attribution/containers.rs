//! The containers the agent knows: by address (for bridged containers,
//! whose sockets live in another network namespace) and by cgroup (for
//! `--network host` containers, and whatever the eBPF redirect recorded).
//! Kept by the Docker watcher; read on the request path, so reads are a map
//! lookup and one poll(2).
//!
//! A cgroup is a container's only because the registry recorded it as
//! that container's: the cgroup its main process was in when the watcher
//! registered it (read through its pidfd). A directory named like a
//! container proves nothing: any user may make one in their own subtree.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use crate::sys::pidfd::PidFd;

/// What the agent knows of one container.
#[derive(Debug)]
pub struct ContainerInfo {
    /// The full 64-digit id.
    pub id: String,
    /// The name, without Docker's leading `/`.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The role its environment asks for (`IAM_ROLE=…`), if any (and
    /// valid).
    pub env_role: Option<crate::creds::Role>,
    /// Its addresses on bridge networks.
    pub ips: Vec<IpAddr>,
    /// The id of its cgroup (the cgroup2 directory's inode), as its main
    /// process showed it at registration.
    pub cgroup: Option<u64>,
    /// The container whose network namespace it shares (`--network
    /// container:X`, as Docker reports X: an id or a name).
    pub network_of: Option<String>,
    /// Its main process: once that exits, the container is gone even if
    /// the watcher has not heard yet, and its address may belong to someone
    /// else.
    pub process: Option<PidFd>,
}

impl ContainerInfo {
    /// Whether the container's process still runs.
    pub fn alive(&self) -> bool {
        self.process.as_ref().is_some_and(|p| !p.exited())
    }

    /// A container with just an id and a name (tests).
    pub fn for_tests(id: &str, name: &str) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            labels: BTreeMap::new(),
            env_role: None,
            ips: Vec::new(),
            cgroup: None,
            network_of: None,
            process: None,
        }
    }
}

/// Containers are the same container when their ids are.
impl PartialEq for ContainerInfo {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for ContainerInfo {}

impl Hash for ContainerInfo {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

/// The registry.
#[derive(Debug)]
pub struct Containers {
    inner: RwLock<Registry>,
    /// Counts changes, so a lookup that missed can wait for the next one.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for Containers {
    fn default() -> Self {
        Self {
            inner: RwLock::default(),
            changes: tokio::sync::watch::channel(0).0,
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    by_id: HashMap<String, Arc<ContainerInfo>>,
    by_ip: HashMap<IpAddr, Arc<ContainerInfo>>,
    by_cgroup: HashMap<u64, Arc<ContainerInfo>>,
    /// Containers in another's network namespace, by what they name it
    /// (`network_of`).
    sharing: HashMap<String, Vec<Arc<ContainerInfo>>>,
}

/// Who is at an address.
#[derive(Debug, Clone)]
pub enum AtAddress {
    /// One running container, alone in its network namespace.
    One(Arc<ContainerInfo>),
    /// A container and others sharing its network namespace (`--network
    /// container:X`): an address can't tell them apart.
    Shared(Arc<ContainerInfo>, Vec<Arc<ContainerInfo>>),
    /// Nobody the registry knows.
    Nobody,
}

impl Containers {
    /// Who is at `ip`. A container whose process has exited is not there:
    /// its address may already be another's.
    pub fn at(&self, ip: IpAddr) -> AtAddress {
        let registry = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let Some(owner) = registry.by_ip.get(&ip).filter(|c| c.alive()) else {
            return AtAddress::Nobody;
        };
        let sharers: Vec<Arc<ContainerInfo>> = [owner.id.as_str(), owner.name.as_str()]
            .iter()
            .filter_map(|key| registry.sharing.get(*key))
            .flatten()
            .filter(|c| c.alive())
            .cloned()
            .collect();
        if sharers.is_empty() {
            AtAddress::One(Arc::clone(owner))
        } else {
            AtAddress::Shared(Arc::clone(owner), sharers)
        }
    }

    /// The running container at `ip`, if it is alone there.
    pub fn by_ip(&self, ip: IpAddr) -> Option<Arc<ContainerInfo>> {
        match self.at(ip) {
            AtAddress::One(c) => Some(c),
            AtAddress::Shared(..) | AtAddress::Nobody => None,
        }
    }

    /// The running container with `id`.
    pub fn by_id(&self, id: &str) -> Option<Arc<ContainerInfo>> {
        let registry = self.inner.read().unwrap_or_else(|e| e.into_inner());
        registry.by_id.get(id).filter(|c| c.alive()).cloned()
    }

    /// The running container whose recorded cgroup is the first of
    /// `ancestry` (a cgroup and its ancestors, innermost first) that is
    /// any container's: a process in a container's cgroup or below it.
    pub fn by_cgroup(&self, ancestry: &[u64]) -> Option<Arc<ContainerInfo>> {
        let registry = self.inner.read().unwrap_or_else(|e| e.into_inner());
        ancestry
            .iter()
            .find_map(|id| registry.by_cgroup.get(id))
            .filter(|c| c.alive())
            .cloned()
    }

    /// A future that completes at the next change of the registry: a
    /// container that just started may be registered a moment after its
    /// first request arrives.
    pub fn next_change(&self) -> crate::creds::Changed {
        let mut changes = self.changes.subscribe();
        changes.borrow_and_update();
        Box::pin(async move {
            let _ = changes.changed().await;
        })
    }

    /// Adds or replaces a container. The newest registration of an address
    /// wins: an address is only reused after its previous owner stopped.
    pub fn upsert(&self, container: ContainerInfo) {
        let container = Arc::new(container);
        let _changed = Changed(&self.changes);
        let mut registry = self.inner.write().unwrap_or_else(|e| e.into_inner());
        registry.unlink(&container.id);
        for ip in &container.ips {
            registry.by_ip.insert(*ip, Arc::clone(&container));
        }
        if let Some(cgroup) = container.cgroup {
            registry.by_cgroup.insert(cgroup, Arc::clone(&container));
        }
        if let Some(network) = &container.network_of {
            registry
                .sharing
                .entry(network.clone())
                .or_default()
                .push(Arc::clone(&container));
        }
        registry.by_id.insert(container.id.clone(), container);
    }

    /// Forgets a container.
    pub fn remove(&self, id: &str) -> Option<Arc<ContainerInfo>> {
        let _changed = Changed(&self.changes);
        let mut registry = self.inner.write().unwrap_or_else(|e| e.into_inner());
        registry.unlink(id)
    }

    /// Keeps only the containers in `ids` (after a full resync).
    pub fn retain(&self, ids: &std::collections::HashSet<String>) {
        let gone: Vec<String> = {
            let registry = self.inner.read().unwrap_or_else(|e| e.into_inner());
            registry
                .by_id
                .keys()
                .filter(|id| !ids.contains(*id))
                .cloned()
                .collect()
        };
        for id in gone {
            self.remove(&id);
        }
    }

    /// Every registered container.
    pub fn all(&self) -> Vec<Arc<ContainerInfo>> {
        let registry = self.inner.read().unwrap_or_else(|e| e.into_inner());
        registry.by_id.values().cloned().collect()
    }
}

impl Registry {
    /// Takes container `id` out of every map (where it is still the one
    /// there: a newer registration of its address or cgroup stays).
    fn unlink(&mut self, id: &str) -> Option<Arc<ContainerInfo>> {
        let old = self.by_id.remove(id)?;
        for ip in &old.ips {
            if self.by_ip.get(ip).is_some_and(|c| c.id == old.id) {
                self.by_ip.remove(ip);
            }
        }
        if let Some(cgroup) = old.cgroup
            && self.by_cgroup.get(&cgroup).is_some_and(|c| c.id == old.id)
        {
            self.by_cgroup.remove(&cgroup);
        }
        if let Some(network) = &old.network_of
            && let Some(list) = self.sharing.get_mut(network)
        {
            list.retain(|c| c.id != old.id);
            if list.is_empty() {
                self.sharing.remove(network);
            }
        }
        Some(old)
    }
}

/// Counts a change when dropped: after the registry's lock is released, so
/// a waiter that wakes finds the change in place.
struct Changed<'a>(&'a tokio::sync::watch::Sender<u64>);

impl Drop for Changed<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(id: &str, ip: &str) -> (ContainerInfo, std::process::Child) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut c = ContainerInfo::for_tests(id, id);
        c.ips = vec![ip.parse().unwrap()];
        c.process = Some(PidFd::open(child.id() as i32).unwrap());
        (c, child)
    }

    #[test]
    fn a_reused_address_belongs_to_the_new_container_only() {
        let registry = Containers::default();
        let ip: IpAddr = "172.17.0.2".parse().unwrap();
        let (a, mut a_process) = running("aaa", "172.17.0.2");
        registry.upsert(a);
        assert_eq!(registry.by_ip(ip).unwrap().id, "aaa");
        // A stops; the watcher has not heard yet: its address is nobody's.
        a_process.kill().unwrap();
        a_process.wait().unwrap();
        assert!(registry.by_ip(ip).is_none());
        // B gets the address.
        let (b, mut b_process) = running("bbb", "172.17.0.2");
        registry.upsert(b);
        assert_eq!(registry.by_ip(ip).unwrap().id, "bbb");
        // The watcher catches up with A's removal: B keeps its address.
        registry.remove("aaa");
        assert_eq!(registry.by_ip(ip).unwrap().id, "bbb");
        b_process.kill().unwrap();
        b_process.wait().unwrap();
    }

    #[test]
    fn a_container_without_a_process_is_never_attributed() {
        let registry = Containers::default();
        let mut c = ContainerInfo::for_tests("ccc", "c");
        c.ips = vec!["172.17.0.9".parse().unwrap()];
        registry.upsert(c);
        assert!(registry.by_ip("172.17.0.9".parse().unwrap()).is_none());
        assert!(registry.by_id("ccc").is_none());
        assert_eq!(registry.all().len(), 1);
    }

    #[test]
    fn a_cgroup_is_a_containers_only_as_recorded() {
        let registry = Containers::default();
        let (mut c, mut process) = running("ddd", "172.17.0.4");
        c.cgroup = Some(77);
        registry.upsert(c);
        assert_eq!(registry.by_cgroup(&[78, 77, 1]).unwrap().id, "ddd");
        assert!(registry.by_cgroup(&[78, 1]).is_none());
        process.kill().unwrap();
        process.wait().unwrap();
        assert!(registry.by_cgroup(&[77]).is_none(), "gone with its process");
        registry.remove("ddd");
        assert!(registry.all().is_empty());
    }

    #[test]
    fn a_shared_network_namespace_is_nobody_by_address() {
        let registry = Containers::default();
        let ip: IpAddr = "172.17.0.5".parse().unwrap();
        let (x, mut x_process) = running("xxx", "172.17.0.5");
        registry.upsert(x);
        assert!(matches!(registry.at(ip), AtAddress::One(_)));
        let (mut sidecar, mut sidecar_process) = running("sss", "172.17.0.5");
        sidecar.ips.clear();
        sidecar.network_of = Some("xxx".into());
        registry.upsert(sidecar);
        match registry.at(ip) {
            AtAddress::Shared(owner, sharers) => {
                assert_eq!(owner.id, "xxx");
                assert_eq!(sharers[0].id, "sss");
            }
            other => panic!("{other:?}"),
        }
        assert!(registry.by_ip(ip).is_none());
        // The sidecar stops: the address is X's alone again.
        sidecar_process.kill().unwrap();
        sidecar_process.wait().unwrap();
        assert_eq!(registry.by_ip(ip).unwrap().id, "xxx");
        registry.remove("sss");
        x_process.kill().unwrap();
        x_process.wait().unwrap();
    }
}
