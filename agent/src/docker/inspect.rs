//! What the agent reads of an inspected container (`GET
//! /containers/{id}/json`), and the registry entry it makes of it: a pidfd
//! on its main process, and the cgroup that process is in, read through
//! that pidfd. That cgroup, not any directory's name, is what makes a
//! cgroup the container's.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use crate::attribution::ContainerInfo;
use crate::attribution::facts::container_id_in;
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
    /// The network mode.
    #[serde(default)]
    pub host_config: HostConfig,
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

/// `HostConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    /// `bridge`, `host`, `none`, `container:<id or name>`, a network name.
    #[serde(default)]
    pub network_mode: String,
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

/// The main process of an inspected container, held.
#[derive(Debug)]
pub struct Held {
    /// A pidfd on it.
    pub process: PidFd,
    /// The id of the container's cgroup (the directory root named after
    /// it, which its processes are in or below), when cgroups are known.
    pub cgroup: Option<u64>,
}

/// A handle on the main process of an inspected container, if it runs.
/// With `cgroup_root` (the cgroup2 mount), its cgroup too.
pub fn hold(inspect: &Inspect, cgroup_root: Option<&Path>) -> Result<Held, Skipped> {
    let state = &inspect.state;
    if !state.running || state.paused || state.pid <= 0 {
        return Err(Skipped::NotRunning);
    }
    hold_process(state.pid, &inspect.id, cgroup_root).ok_or(Skipped::Process { pid: state.pid })
}

/// The registry entry for an inspected container whose main process is
/// `held`. `env_role_var` names the variable holding its role; a value
/// that is not a role is logged and ignored (the container then gets what a
/// container without one gets).
pub fn container_info(inspect: &Inspect, env_role_var: &str, held: Held) -> ContainerInfo {
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
    let network_of = inspect
        .host_config
        .network_mode
        .strip_prefix("container:")
        .filter(|x| !x.is_empty())
        .map(str::to_owned);
    ContainerInfo {
        id: inspect.id.clone(),
        name,
        labels: inspect.config.labels.clone().unwrap_or_default(),
        env_role,
        ips,
        cgroup: held.cgroup,
        network_of,
        process: Some(held.process),
    }
}

/// A pidfd on `pid` and its container's cgroup, if it is a process of
/// container `id`. The pidfd is opened first and checked alive after
/// reading the process's cgroup, so the cgroup read is the pidfd's
/// process's, not a successor's. The runtime (root) made the container's
/// cgroup, named after it: that name, where only root could have given
/// it (checked below `cgroup_root`; without it, the name alone), says
/// Docker's pid is still the container's process.
fn hold_process(pid: i32, id: &str, cgroup_root: Option<&Path>) -> Option<Held> {
    let process = PidFd::open(pid).ok()?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = unified_path(&text)?;
    let cgroup = match cgroup_root {
        Some(root) => Some(crate::attribution::cgroup::container_cgroup(
            root, path, id,
        )?),
        None if names_container(path, id) => None,
        None => return None,
    };
    (!process.exited()).then_some(Held { process, cgroup })
}

/// The unified-hierarchy (cgroup v2) line of a `/proc/<pid>/cgroup` text:
/// `0::/system.slice/docker-<id>.scope`.
fn unified_path(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("0::"))
}

/// Whether a cgroup path is container `id`'s (`/docker/<id>`,
/// `docker-<id>.scope`, …).
fn names_container(path: &str, id: &str) -> bool {
    !id.is_empty()
        && path
            .split('/')
            .filter(|s| !s.is_empty())
            .enumerate()
            .any(|(depth, segment)| container_id_in(segment, depth) == Some(id))
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

    fn own() -> Held {
        Held {
            process: PidFd::open(std::process::id() as i32).unwrap(),
            cgroup: None,
        }
    }

    #[test]
    fn reads_an_inspected_container() {
        let i = inspect(&"a".repeat(64), std::process::id());
        let info = container_info(&i, "IAM_ROLE", own());
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
        assert!(matches!(hold(&i, None), Err(Skipped::Process { .. })));
        i.state.paused = true;
        assert!(matches!(hold(&i, None), Err(Skipped::NotRunning)));
        assert!(matches!(
            hold(&inspect(&id, 0), None),
            Err(Skipped::NotRunning)
        ));
        let v1 = format!("9:memory:/docker/{id}\n0::/docker/{id}\n");
        assert_eq!(unified_path(&v1), Some(format!("/docker/{id}").as_str()));
        assert!(names_container(&format!("/docker/{id}"), &id));
        assert!(names_container(
            &format!("/system.slice/docker-{id}.scope"),
            &id
        ));
        assert!(!names_container(&format!("/docker/{id}"), &"b".repeat(64)));
        assert!(!names_container("/", ""), "an empty id names nothing");
        assert!(!names_container(&format!("/x/{id}-not"), &id));
    }

    #[test]
    fn a_bad_role_variable_is_ignored() {
        let mut i = inspect(&"a".repeat(64), std::process::id());
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
    fn a_container_in_anothers_network_says_whose() {
        let mut i = inspect(&"a".repeat(64), std::process::id());
        assert_eq!(container_info(&i, "IAM_ROLE", own()).network_of, None);
        i.host_config.network_mode = format!("container:{}", "b".repeat(64));
        assert_eq!(
            container_info(&i, "IAM_ROLE", own()).network_of,
            Some("b".repeat(64))
        );
    }
}
