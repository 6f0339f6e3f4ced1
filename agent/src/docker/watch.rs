//! Keeps the container registry current from Docker's event stream.
//!
//! The watcher subscribes to events first and lists containers second, so
//! nothing that happens in between is missed; every event that may change a
//! container's address, role or liveness makes it inspect that container
//! again. When the stream breaks (Docker restarted), it starts over with a
//! full resync, backing off from 1 s to 30 s while Docker is away.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::client::{DockerClient, DockerError, Event};
use crate::attribution::{ContainerInfo, Containers};
use crate::creds::Role;
use crate::sys::pidfd::PidFd;

/// What the agent reads of `GET /containers/{id}/json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Inspect {
    /// The full id.
    pub id: String,
    /// `/name`.
    #[serde(default)]
    pub name: String,
    /// Running, paused, main pid.
    #[serde(default)]
    pub state: State,
    /// Env and labels.
    #[serde(default)]
    pub config: ContainerConfig,
    /// Addresses.
    #[serde(default)]
    pub network_settings: NetworkSettings,
}

/// `State`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct State {
    /// Whether it runs.
    #[serde(default)]
    pub running: bool,
    /// Whether it is paused.
    #[serde(default)]
    pub paused: bool,
    /// Its main process, in the daemon's pid namespace.
    #[serde(default)]
    pub pid: i32,
}

/// `Config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `NAME=value` entries.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Labels.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `NetworkSettings`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    /// Per network.
    #[serde(default)]
    pub networks: Option<HashMap<String, Endpoint>>,
}

/// One network's endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Endpoint {
    /// IPv4 address (empty on `host` and `none`).
    #[serde(rename = "IPAddress", default)]
    pub ip_address: String,
    /// IPv6 address, if any.
    #[serde(rename = "GlobalIPv6Address", default)]
    pub global_ipv6_address: String,
}

/// One entry of `GET /containers/json`.
#[derive(Debug, Deserialize)]
struct Listed {
    #[serde(rename = "Id")]
    id: String,
}

/// Why a container was not registered.
#[derive(Debug, thiserror::Error)]
pub enum Skipped {
    /// It does not run.
    #[error("not running")]
    NotRunning,
    /// Its main process could not be held: it exited, or it is not the
    /// container's (a pid reused in between).
    #[error("its process {pid} is gone or not the container's")]
    Process {
        /// The pid Docker gave.
        pid: i32,
    },
}

/// A handle on the main process of an inspected container, if it runs.
pub fn hold(inspect: &Inspect) -> Result<PidFd, Skipped> {
    let state = &inspect.state;
    if !state.running || state.paused || state.pid <= 0 {
        return Err(Skipped::NotRunning);
    }
    hold_process(state.pid, &inspect.id).ok_or(Skipped::Process { pid: state.pid })
}

/// The registry entry for an inspected container whose main process is
/// `process`. `env_role_var` names the variable holding its role; a value
/// that is not a role is logged and ignored (the container then gets what a
/// container without one gets).
pub fn container_info(inspect: &Inspect, env_role_var: &str, process: PidFd) -> ContainerInfo {
    let name = inspect.name.trim_start_matches('/').to_owned();
    let env_role = inspect
        .config
        .env
        .iter()
        .flatten()
        .find_map(|entry| entry.strip_prefix(env_role_var)?.strip_prefix('='))
        .filter(|value| !value.is_empty())
        .and_then(|value| match Role::parse(value) {
            Ok(role) => Some(role),
            Err(e) => {
                tracing::warn!(container = %name, var = env_role_var, error = %e, "ignoring the container's role variable");
                None
            }
        });
    let mut ips: Vec<IpAddr> = Vec::new();
    for endpoint in inspect
        .network_settings
        .networks
        .iter()
        .flat_map(HashMap::values)
    {
        for text in [&endpoint.ip_address, &endpoint.global_ipv6_address] {
            if let Ok(ip) = text.parse::<IpAddr>()
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
    }
    ContainerInfo {
        id: inspect.id.clone(),
        name,
        labels: inspect.config.labels.clone().unwrap_or_default(),
        env_role,
        ips,
        process: Some(process),
    }
}

/// A pidfd on `pid`, if it is a process of container `id`. The pidfd is
/// opened first and checked alive after reading the process's cgroup, so
/// the cgroup read is the pidfd's process's, not a successor's.
fn hold_process(pid: i32, id: &str) -> Option<PidFd> {
    let pidfd = PidFd::open(pid).ok()?;
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    (names_container(&cgroup, id) && !pidfd.exited()).then_some(pidfd)
}

/// Whether a `/proc/<pid>/cgroup` text puts the process in container `id`'s
/// cgroup (`/docker/<id>`, `docker-<id>.scope`, …).
fn names_container(cgroup: &str, id: &str) -> bool {
    is_id(id)
        && cgroup.lines().any(|line| {
            let path = line.splitn(3, ':').nth(2).unwrap_or("");
            crate::attribution::cgroup::facts(path)
                .container_id
                .as_deref()
                == Some(id)
        })
}

/// What an event means for the registry.
#[derive(Debug, PartialEq, Eq)]
enum Change<'a> {
    /// Inspect this container again.
    Inspect(&'a str),
    /// It stopped running.
    Remove(&'a str),
    /// Nothing.
    None,
}

fn change(event: &Event) -> Change<'_> {
    match (event.kind.as_str(), event.action.as_str()) {
        ("container", "start" | "unpause" | "restart" | "rename" | "update") => {
            Change::Inspect(&event.actor.id)
        }
        ("container", "die" | "stop" | "kill" | "pause" | "destroy" | "oom") => {
            Change::Remove(&event.actor.id)
        }
        ("network", "connect" | "disconnect") => match event.actor.attributes.get("container") {
            Some(id) => Change::Inspect(id),
            None => Change::None,
        },
        _ => Change::None,
    }
}

/// The watcher.
pub struct Watcher {
    client: DockerClient,
    containers: Arc<Containers>,
    env_role_var: String,
    on_change: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("client", &self.client)
            .field("env_role_var", &self.env_role_var)
            .finish_non_exhaustive()
    }
}

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Watcher {
    /// A watcher filling `containers` from `client`, calling `on_change`
    /// after every change to the registry.
    pub fn new(
        client: DockerClient,
        containers: Arc<Containers>,
        env_role_var: String,
        on_change: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            client,
            containers,
            env_role_var,
            on_change,
        }
    }

    /// Watches forever.
    pub async fn run(self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            match self.session().await {
                Ok(()) => {
                    tracing::warn!("Docker's event stream ended; resyncing");
                    backoff = MIN_BACKOFF;
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), retry_in_seconds = backoff.as_secs(), "cannot watch Docker");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One subscription: resync, then follow events until the stream ends.
    async fn session(&self) -> Result<(), DockerError> {
        let mut events = self.client.events().await?;
        let count = self.resync().await?;
        tracing::info!(containers = count, "watching Docker");
        while let Some(event) = events.next().await? {
            let changed = match change(&event) {
                Change::Inspect(id) => self.refresh(id).await,
                Change::Remove(id) => self.forget(id),
                Change::None => false,
            };
            if changed {
                (self.on_change)();
            }
        }
        Ok(())
    }

    /// Replaces the registry with the running containers. Returns how many
    /// were registered.
    pub async fn resync(&self) -> Result<usize, DockerError> {
        let listed: Vec<Listed> = self.client.get_json("/containers/json").await?;
        let mut seen = HashSet::new();
        for container in &listed {
            self.refresh(&container.id).await;
            if self.containers.by_id(&container.id).is_some() {
                seen.insert(container.id.clone());
            }
        }
        self.containers.retain(&seen);
        (self.on_change)();
        Ok(self.containers.all().len())
    }

    /// Inspects container `id` and registers it, or forgets it if it no
    /// longer runs. Returns whether the registry changed.
    async fn refresh(&self, id: &str) -> bool {
        if !is_id(id) {
            return false;
        }
        let inspect: Inspect = match self
            .client
            .get_json(&format!("/containers/{id}/json"))
            .await
        {
            Ok(inspect) => inspect,
            Err(DockerError::Status { status: 404, .. }) => return self.forget(id),
            Err(e) => {
                // Not registered: unattributable, so it gets nothing rather
                // than a stale answer. The next event or resync retries.
                tracing::warn!(container = short(id), error = %error_chain(&e), "cannot inspect container");
                return self.forget(id);
            }
        };
        match hold(&inspect) {
            Ok(process) => {
                let info = container_info(&inspect, &self.env_role_var, process);
                tracing::info!(
                    container = %info.name,
                    id = short(id),
                    ips = ?info.ips,
                    env_role = info.env_role.as_ref().map(|r| r.spec.to_string()),
                    "container registered"
                );
                self.containers.upsert(info);
                true
            }
            Err(reason) => {
                tracing::debug!(container = short(id), %reason, "container not registered");
                self.forget(id)
            }
        }
    }

    fn forget(&self, id: &str) -> bool {
        let removed = self.containers.remove(id);
        if let Some(c) = &removed {
            tracing::info!(container = %c.name, id = short(id), "container gone");
        }
        removed.is_some()
    }
}

/// A container id as Docker writes it: only such ids go into paths.
fn is_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSPECT: &str = r#"{
        "Id": "ID",
        "Name": "/api",
        "State": {"Status": "running", "Running": true, "Paused": false, "Pid": PID},
        "Config": {"Env": ["PATH=/bin", "IAM_ROLE=api@123456789012", "IAM_ROLE_X=no"], "Labels": {"team": "blue"}},
        "HostConfig": {"NetworkMode": "default"},
        "NetworkSettings": {"IPAddress": "172.17.0.2", "Networks": {
            "bridge": {"IPAddress": "172.17.0.2", "GlobalIPv6Address": ""},
            "backend": {"IPAddress": "172.18.0.5", "GlobalIPv6Address": "fd00:1::5"}
        }}
    }"#;

    fn inspect(id: &str, pid: u32) -> Inspect {
        let text = INSPECT.replace("PID", &pid.to_string()).replace("ID", id);
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn reads_an_inspected_container() {
        let i = inspect(&"a".repeat(64), std::process::id());
        let own = PidFd::open(std::process::id() as i32).unwrap();
        let info = container_info(&i, "IAM_ROLE", own);
        assert_eq!(info.name, "api");
        assert_eq!(info.labels["team"], "blue");
        assert_eq!(
            info.env_role.as_ref().unwrap().spec.to_string(),
            "api@123456789012"
        );
        let mut ips: Vec<String> = info.ips.iter().map(ToString::to_string).collect();
        ips.sort();
        assert_eq!(ips, ["172.17.0.2", "172.18.0.5", "fd00:1::5"]);
        assert!(info.alive());
    }

    #[test]
    fn only_a_running_process_of_the_container_is_held() {
        let id = "a".repeat(64);
        // This test's own process is not in the container's cgroup.
        let mut i = inspect(&id, std::process::id());
        assert!(matches!(hold(&i), Err(Skipped::Process { .. })));
        i.state.paused = true;
        assert!(matches!(hold(&i), Err(Skipped::NotRunning)));
        assert!(matches!(hold(&inspect(&id, 0)), Err(Skipped::NotRunning)));
        let v1 = format!("9:memory:/docker/{id}\n0::/docker/{id}\n");
        assert!(names_container(&v1, &id));
        assert!(names_container(
            &format!("0::/system.slice/docker-{id}.scope"),
            &id
        ));
        assert!(!names_container(
            &format!("0::/docker/{id}"),
            &"b".repeat(64)
        ));
        assert!(!names_container("0::/", ""), "an empty id names nothing");
        assert!(!names_container(&format!("0::/x/{id}-not"), &id));
    }

    #[test]
    fn a_bad_role_variable_is_ignored() {
        let mut i = inspect(&"a".repeat(64), std::process::id());
        let own = || PidFd::open(std::process::id() as i32).unwrap();
        i.config.env = Some(vec!["IAM_ROLE=not a role!".to_owned()]);
        assert!(container_info(&i, "IAM_ROLE", own()).env_role.is_none());
        i.config.env = None;
        assert!(container_info(&i, "IAM_ROLE", own()).env_role.is_none());
        i.config.env = Some(vec!["IAM_ROLE_X=x".to_owned(), "MY_ROLE=mine".to_owned()]);
        assert!(container_info(&i, "IAM_ROLE", own()).env_role.is_none());
        assert_eq!(
            container_info(&i, "MY_ROLE", own()).env_role.unwrap().name,
            "mine"
        );
    }

    #[test]
    fn events_map_to_changes() {
        let event = |kind: &str, action: &str, id: &str, container: Option<&str>| Event {
            kind: kind.to_owned(),
            action: action.to_owned(),
            actor: super::super::client::Actor {
                id: id.to_owned(),
                attributes: container
                    .map(|c| [("container".to_owned(), c.to_owned())].into())
                    .unwrap_or_default(),
            },
        };
        assert_eq!(
            change(&event("container", "start", "a", None)),
            Change::Inspect("a")
        );
        assert_eq!(
            change(&event("container", "die", "a", None)),
            Change::Remove("a")
        );
        assert_eq!(
            change(&event("container", "create", "a", None)),
            Change::None
        );
        assert_eq!(
            change(&event("network", "connect", "n", Some("c"))),
            Change::Inspect("c")
        );
        assert_eq!(change(&event("network", "create", "n", None)), Change::None);
        assert!(is_id(&"a".repeat(64)) && !is_id("../x") && !is_id(""));
    }
}
