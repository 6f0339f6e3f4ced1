//! Keeps the container registry current from Docker's event stream.
//!
//! The watcher subscribes to events first and lists containers second, so
//! nothing that happens in between is missed; every event that may change a
//! container's address, role or liveness makes it inspect that container
//! again, and a full resync every few minutes catches anything an event
//! did not say. When the stream breaks (Docker restarted), it starts over
//! with a full resync, backing off from 1 s to 30 s while Docker is away.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::client::{DockerClient, DockerError, Event};
use super::inspect::{Inspect, container_info, hold};
use crate::attribution::Containers;

/// One entry of `GET /containers/json`.
#[derive(Debug, Deserialize)]
struct Listed {
    #[serde(rename = "Id")]
    id: String,
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
        // A signal (`docker kill -s HUP` is a routine reload) or an OOM
        // kill of some process in it may leave the container running: ask.
        ("container", "kill" | "oom") => Change::Inspect(&event.actor.id),
        ("container", "die" | "stop" | "pause" | "destroy") => Change::Remove(&event.actor.id),
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
    /// The cgroup2 mount, where containers' cgroup ids are read (cgroup
    /// attribution on).
    cgroup_root: Option<PathBuf>,
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
/// How often the registry is checked against Docker's list while the event
/// stream runs: an event lost or misread is put right within this.
const RESYNC_EVERY: Duration = Duration::from_secs(300);

impl Watcher {
    /// A watcher filling `containers` from `client`, calling `on_change`
    /// after every change to the registry. `cgroup_root` is the cgroup2
    /// mount when cgroup attribution is on.
    pub fn new(
        client: DockerClient,
        containers: Arc<Containers>,
        env_role_var: String,
        cgroup_root: Option<PathBuf>,
        on_change: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            client,
            containers,
            env_role_var,
            cgroup_root,
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
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        loop {
            let event = tokio::select! {
                event = events.next() => event?,
                _ = resync.tick() => {
                    let count = self.resync().await?;
                    tracing::debug!(containers = count, "resynced with Docker");
                    continue;
                }
            };
            let Some(event) = event else {
                break;
            };
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
        match hold(&inspect, self.cgroup_root.as_deref()) {
            Ok(held) => {
                let info = container_info(&inspect, &self.env_role_var, held);
                tracing::info!(
                    container = %info.name,
                    id = short(id),
                    ips = ?info.ips,
                    cgroup = info.cgroup,
                    network_of = info.network_of.as_deref(),
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
        for survivable in ["kill", "oom"] {
            assert_eq!(
                change(&event("container", survivable, "a", None)),
                Change::Inspect("a"),
                "{survivable} may leave it running"
            );
        }
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
