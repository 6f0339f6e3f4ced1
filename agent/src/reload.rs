//! Config reload: a changed config file is checked whole, then what can
//! change without a restart is put in force (the log level, the instance
//! metadata) and every other changed key is named in the log as needing
//! one. A file that does not check changes nothing.
//!
//! Two ways in: SIGHUP re-reads the file the agent started from, and the
//! admin socket's `POST /config` takes the text (`imds-agent reload`, the
//! unit's `ExecReload=`: under systemd the agent started from systemd's
//! copy of the file, made at the start, which root reads the new file
//! into). The role rules reload on their own (inotify, SIGHUP).
//!
//! Keys are compared by name, so only their names are ever logged: a
//! changed secret shows as `profiles.work.secret_access_key`, never its
//! value.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::assign::watch::{RulesNudge, RulesStatus};
use crate::config::{Config, HostFacts, Origin, Overrides};
use crate::imds::{Imds, InstanceData};

/// The config an agent started from, as it was read.
#[derive(Clone)]
pub struct Source {
    /// The file it came from (none: the config built into the binary).
    pub path: Option<PathBuf>,
    /// Its text.
    pub text: String,
    /// What the command line set, which wins over the file at a reload too.
    pub overrides: Overrides,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The text holds secrets.
        f.debug_struct("Source")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What a reload did, by key (`log.level`, `instance.region`, …).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// Changed and now in force.
    pub applied: Vec<String>,
    /// Changed, and not in force until the agent is restarted.
    pub needs_restart: Vec<String>,
    /// The role rules once read again (`None`: no answer from their
    /// watcher), through the admin socket only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<RulesStatus>,
}

/// Puts reloaded configs in force.
pub struct Reloader {
    origin: Origin,
    path: Option<PathBuf>,
    overrides: Overrides,
    imds: Arc<Imds>,
    /// Has the role rules' watcher read them again (a reload through the
    /// admin socket reloads them too, as SIGHUP does).
    rules: RulesNudge,
    /// The running agent's account and partition: rules and role ARNs
    /// were resolved with them, so they stay until a restart.
    account_id: String,
    partition: String,
    /// The region the agent's own STS calls go to (it may follow
    /// `instance.region`), which stays until a restart.
    sts_region: Option<String>,
    state: Mutex<State>,
}

struct State {
    /// The settings in force, by dotted key: the start's, with every
    /// applied change since.
    running: BTreeMap<String, toml::Value>,
    /// The file's text when it was last read, so that a SIGHUP with the
    /// file unchanged (systemd's copy never changes) changes nothing.
    file_text: String,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for the agent that started from `source` (checked as
    /// `config`), serves `imds` and has its rules read again through
    /// `rules`.
    pub fn new(source: Source, config: &Config, imds: Arc<Imds>, rules: RulesNudge) -> Self {
        let running = source
            .text
            .parse::<toml::Table>()
            .map(|table| flatten(&table))
            .unwrap_or_default();
        Self {
            origin: config.origin.clone(),
            path: source.path,
            overrides: source.overrides,
            imds,
            rules,
            account_id: config.instance.account_id.clone(),
            partition: config.instance.partition.clone(),
            sts_region: sts_region(config),
            state: Mutex::new(State {
                running,
                file_text: source.text,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks `text` as a whole config and puts in force what can change
    /// without a restart; logs what it did. An error (the text does not
    /// check) changes nothing.
    pub fn apply(&self, text: &str) -> Result<Outcome, String> {
        let host = HostFacts::read();
        let env = |name: &str| std::env::var(name).ok();
        let config = match Config::parse(text, self.origin.clone(), &self.overrides, &host, &env) {
            Ok(config) => config,
            Err(e) => {
                let why = e.with_causes();
                tracing::warn!(error = %why, "config reload refused: nothing changed");
                return Err(why);
            }
        };
        // It checked, so it is a TOML table.
        let keys = text
            .parse::<toml::Table>()
            .map(|table| flatten(&table))
            .unwrap_or_default();
        let mut state = self.state();
        let mut outcome = Outcome::default();
        let mut instance = false;
        for key in changed(&state.running, &keys) {
            match kind(&key) {
                Kind::LogLevel if self.overrides.log_level.is_some() => {
                    // --log-level wins, as at the start.
                    outcome
                        .needs_restart
                        .push(format!("{key} (--log-level wins)"));
                    continue;
                }
                Kind::LogLevel => {
                    if let Err(e) = crate::logging::set_level(&config.log_level) {
                        tracing::warn!(error = %e, "the log level could not be changed");
                        outcome.needs_restart.push(key);
                        continue;
                    }
                }
                // Checked by value below: it stays until a restart, and
                // stays named until then.
                Kind::Instance if key == "instance.account_id" => continue,
                Kind::Instance => instance = true,
                Kind::Restart => {
                    outcome.needs_restart.push(key);
                    continue;
                }
            }
            match keys.get(&key) {
                Some(value) => state.running.insert(key.clone(), value.clone()),
                None => state.running.remove(&key),
            };
            outcome.applied.push(key);
        }
        if config.instance.account_id != self.account_id {
            outcome.needs_restart.push("instance.account_id".to_owned());
        }
        if config.instance.partition != self.partition {
            outcome
                .needs_restart
                .push("instance.region (its partition)".to_owned());
        }
        if sts_region(&config) != self.sts_region {
            outcome.needs_restart.push(
                "the agent's own STS region (credentials.region, or instance.region)".to_owned(),
            );
        }
        if instance {
            let mut data: InstanceData = config.instance.clone();
            data.account_id.clone_from(&self.account_id);
            data.partition.clone_from(&self.partition);
            self.imds.replace_instance(&data);
        }
        log(&outcome);
        Ok(outcome)
    }

    /// Has the role rules read again now (whatever the config said) and
    /// says how that went.
    pub async fn reload_rules(&self) -> Option<RulesStatus> {
        self.rules.reload().await
    }

    /// Reloads the file the agent started from at every SIGHUP from now
    /// on (the role rules' watcher reloads them on the same signal). The
    /// handler is in place when this returns: `run` ignores SIGHUP until
    /// then.
    pub fn reload_on_hangup(self: Arc<Self>) {
        let Some(path) = self.path.clone() else {
            return;
        };
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!(error = %e, "cannot catch SIGHUP; the config reloads only through `imds-agent reload`");
                return;
            }
        };
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let (reloader, path) = (Arc::clone(&self), path.clone());
                // Reading the file and the certificates it names blocks.
                let _ = tokio::task::spawn_blocking(move || reloader.reload_file(&path)).await;
            }
        });
    }

    fn reload_file(&self, path: &std::path::Path) {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "SIGHUP: cannot read the config file: nothing changed");
                return;
            }
        };
        if self.state().file_text == text {
            tracing::info!(
                file = %path.display(),
                "SIGHUP: the config file is unchanged (under systemd the agent reads systemd's copy, made at the start: `systemctl reload imds-agent` hands it the new file)"
            );
            return;
        }
        if self.apply(&text).is_ok() {
            self.state().file_text = text;
        }
    }
}

/// The region `config`'s own STS calls go to, if it calls STS.
fn sts_region(config: &Config) -> Option<String> {
    match &config.credentials {
        crate::config::CredentialsConfig::Sts(sts) => Some(sts.identity.region.clone()),
        crate::config::CredentialsConfig::Static { .. } => None,
    }
}

fn log(outcome: &Outcome) {
    if outcome.applied.is_empty() && outcome.needs_restart.is_empty() {
        tracing::info!("config reloaded: nothing changed");
        return;
    }
    if !outcome.applied.is_empty() {
        tracing::info!(keys = %outcome.applied.join(", "), "config reloaded: these changes are in force");
    }
    if !outcome.needs_restart.is_empty() {
        tracing::warn!(
            keys = %outcome.needs_restart.join(", "),
            "config reloaded: these changes need a restart to take effect (`systemctl restart imds-agent` carries the cached credentials over and costs STS nothing)"
        );
    }
}

/// What a reload can do with a changed key.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// `log.level`: the filter is replaced.
    LogLevel,
    /// `instance.*`: the metadata is rebuilt (the account and partition
    /// excepted, checked by value).
    Instance,
    /// Everything else: listeners, host mode, credentials, attribution,
    /// privileges, the rules' directory and defaults.
    Restart,
}

fn kind(key: &str) -> Kind {
    if key == "log.level" {
        Kind::LogLevel
    } else if key.starts_with("instance.") {
        Kind::Instance
    } else {
        Kind::Restart
    }
}

/// Every leaf of `table` by its dotted key (arrays are leaves).
fn flatten(table: &toml::Table) -> BTreeMap<String, toml::Value> {
    let mut out = BTreeMap::new();
    fn walk(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
        for (key, value) in table {
            let name = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(inner) => walk(&name, inner, out),
                leaf => {
                    out.insert(name, leaf.clone());
                }
            }
        }
    }
    walk("", table, &mut out);
    out
}

/// The keys whose value differs, or that are in one and not the other.
fn changed(
    before: &BTreeMap<String, toml::Value>,
    after: &BTreeMap<String, toml::Value>,
) -> Vec<String> {
    let mut keys: Vec<String> = before
        .iter()
        .filter(|(key, value)| after.get(*key) != Some(value))
        .map(|(key, _)| key.clone())
        .collect();
    keys.extend(
        after
            .keys()
            .filter(|key| !before.contains_key(*key))
            .cloned(),
    );
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(text: &str) -> BTreeMap<String, toml::Value> {
        flatten(&text.parse::<toml::Table>().unwrap())
    }

    #[test]
    fn changed_keys_are_named_never_their_values() {
        let before = flat(
            "[log]\nlevel = \"info\"\n[instance]\nregion = \"eu-west-1\"\n[profiles.work]\nsecret_access_key = \"old\"\n",
        );
        let after = flat(
            "[log]\nlevel = \"debug\"\n[instance]\nregion = \"eu-west-1\"\navailability_zone = \"eu-west-1b\"\n[profiles.work]\nsecret_access_key = \"new\"\n",
        );
        assert_eq!(
            changed(&before, &after),
            [
                "instance.availability_zone",
                "log.level",
                "profiles.work.secret_access_key"
            ]
        );
        assert!(changed(&after, &after).is_empty());
        assert_eq!(changed(&after, &flat("")).len(), 4, "removed keys too");
    }

    #[test]
    fn only_the_log_level_and_instance_data_reload() {
        assert_eq!(kind("log.level"), Kind::LogLevel);
        assert_eq!(kind("instance.tags"), Kind::Instance);
        for key in [
            "log.target",
            "server.listen",
            "host.mode",
            "credentials.duration_seconds",
            "roles.default",
            "instancex.y",
        ] {
            assert_eq!(kind(key), Kind::Restart, "{key}");
        }
    }
}
