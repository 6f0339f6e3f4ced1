//! Credentials carried across a restart of the agent: at a stop the engine
//! writes what it has cached (`carry`), and the next start takes it back
//! (`take_carried`), so a restart of a whole fleet costs STS nothing. The
//! bytes live in memory only (systemd's file descriptor store, `fdstore`);
//! the engine neither knows nor cares where.
//!
//! What is taken back must be what the new agent would have fetched itself:
//! the same identity (a digest of everything of the base and its settings
//! that decides what STS gives: the active profile and its keys, the Roles
//! Anywhere session and certificate, mode, region, duration, external id,
//! MFA, session names and tags, the account and partition of bare role
//! names), a role still assigned whose account the config names,
//! credentials that do not expire within the refresh margin. Everything
//! else is dropped.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Engine;
use super::entry::Entry;
use super::schedule::refresh_at;
use crate::creds::{Credentials, Keys, Role, Secret};

/// The format's version: a start that reads another drops it all.
const VERSION: u32 = 1;

/// What a stop hands to the next start.
#[derive(serde::Serialize, serde::Deserialize)]
struct Carried {
    version: u32,
    /// What the credentials were obtained as, for the log.
    identity: String,
    /// The digest of all of it (`Engine::identity`).
    digest: String,
    roles: Vec<CarriedRole>,
}

/// The version alone, read first: another version's layout is not parsed.
#[derive(serde::Deserialize)]
struct VersionOnly {
    version: u32,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CarriedRole {
    role: Role,
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    /// Seconds since the epoch.
    last_updated: u64,
    expiration: u64,
    account_id: Option<String>,
}

/// What `take_carried` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TakenBack {
    /// Roles whose credentials are served again.
    pub kept: usize,
    /// Roles whose credentials were dropped.
    pub dropped: usize,
}

/// Why carried credentials were not taken back at all.
#[derive(Debug, thiserror::Error)]
pub enum CarryError {
    /// Not what `carry` writes (the error names where, never a value).
    #[error("the carried credentials can't be read: {0}")]
    Unreadable(String),
    /// Another version of the agent wrote them.
    #[error("the carried credentials are of format {0}, this agent reads {VERSION}")]
    Version(u32),
    /// The agent's own credentials came after the start (bootstrap): none
    /// vouch for what an earlier run cached.
    #[error(
        "the agent's own credentials ({0}) can't vouch for credentials cached before this start"
    )]
    NoIdentity(String),
    /// Obtained as another identity (or with other settings).
    #[error(
        "the carried credentials were obtained as {0} (or with other settings); the agent now is {1}"
    )]
    OtherIdentity(String, String),
}

fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// serde_json's errors quote what they failed on: only their kind and
/// place are told.
fn unreadable(e: serde_json::Error) -> CarryError {
    CarryError::Unreadable(format!(
        "{:?} at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    ))
}

impl Engine {
    /// What cached credentials were obtained as, for the log, and the
    /// digest of everything that decides what STS gives: if any of it
    /// changed, what is cached is not what this agent would fetch. `Err`
    /// (with the base's description) when the base can't vouch for a
    /// cache.
    fn identity(&self) -> Result<(String, String), String> {
        let base = self.inner.read_base();
        let settings = &self.inner.settings;
        let line = format!(
            "{}; mode {}; region {}; account {}; partition {}",
            base.describe(),
            base.identity().mode.as_str(),
            base.identity().region,
            settings
                .default_account
                .as_deref()
                .unwrap_or("(discovered)"),
            settings.default_partition,
        );
        let Some(fingerprint) = base.base.fingerprint(base.profile.as_deref()) else {
            return Err(base.describe());
        };
        let whole = format!(
            "{fingerprint}\n{:?}\n{}\n{}\n{}\n{}\n{}\n{line}",
            settings.default_account,
            settings.default_partition,
            settings.default_session_name,
            settings.hostname,
            settings.source_identity,
            settings.session_tags,
        );
        let digest = ring::digest::digest(&ring::digest::SHA256, whole.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Ok((line, hex))
    }

    /// Every role's valid credentials of the identity in force, for the
    /// next start (`take_carried`); empty when the base can't vouch for
    /// them then (bootstrap). Secrets included: the bytes are never to
    /// touch a disk.
    pub fn carry(&self) -> Vec<u8> {
        let Ok((identity, digest)) = self.identity() else {
            return Vec::new();
        };
        let now = self.inner.clock.now().wall;
        let generation = self.inner.read_base().generation;
        let entries: Vec<Arc<Entry>> = self.inner.lock_entries().values().cloned().collect();
        let roles = entries
            .iter()
            .filter_map(|entry| {
                let st = entry.lock();
                let creds = st
                    .creds
                    .as_ref()
                    .filter(|c| c.expiration > now && st.creds_generation == generation)?;
                Some(CarriedRole {
                    role: entry.role.clone(),
                    access_key_id: creds.keys.access_key_id.clone(),
                    secret_access_key: creds.keys.secret_access_key.expose().to_owned(),
                    session_token: creds.keys.session_token.expose().to_owned(),
                    last_updated: seconds(creds.last_updated),
                    expiration: seconds(creds.expiration),
                    account_id: creds.account_id.as_deref().map(str::to_owned),
                })
            })
            .collect();
        let carried = Carried {
            version: VERSION,
            identity,
            digest,
            roles,
        };
        serde_json::to_vec(&carried).unwrap_or_default()
    }

    /// Takes back what a previous agent carried: the credentials of every
    /// role `assigned` still names, obtained as the identity in force, in
    /// an account the config names, and not due for refresh yet. Each is
    /// refreshed when it would have been.
    pub fn take_carried(
        &self,
        bytes: &[u8],
        assigned: impl Fn(&Role) -> bool,
    ) -> Result<TakenBack, CarryError> {
        let version: VersionOnly = serde_json::from_slice(bytes).map_err(unreadable)?;
        if version.version != VERSION {
            return Err(CarryError::Version(version.version));
        }
        let carried: Carried = serde_json::from_slice(bytes).map_err(unreadable)?;
        let (identity, digest) = self.identity().map_err(CarryError::NoIdentity)?;
        if carried.digest != digest {
            return Err(CarryError::OtherIdentity(carried.identity, identity));
        }
        let settings = &self.inner.settings;
        let (account, partition) = (
            settings.default_account.as_deref(),
            &settings.default_partition,
        );
        let now = self.inner.clock.now();
        let generation = self.inner.read_base().generation;
        let keep = settings.keep;
        let mut taken = TakenBack::default();
        let mut entries = self.inner.lock_entries();
        for item in carried.roles {
            let at = |secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs));
            let (Some(last_updated), Some(expiration)) =
                (at(item.last_updated), at(item.expiration))
            else {
                taken.dropped += 1;
                continue;
            };
            // Due for refresh already (the latest the jitter could put it):
            // STS is asked as it would be for any refresh.
            let due = refresh_at(last_updated, expiration, keep, 0.0) <= now.wall;
            let room = entries.len() < settings.max_roles;
            // A bare name in a discovered account, or one naming the user,
            // resolves to what the agent's own credentials say: unknown
            // until STS is asked, so not vouched for.
            let resolved =
                item.role.spec.arn(account, partition).is_ok() && !item.role.spec.names_user();
            if due
                || !room
                || !resolved
                || !assigned(&item.role)
                || entries.contains_key(&item.role)
            {
                taken.dropped += 1;
                continue;
            }
            let entry = Arc::new(Entry::new(item.role.clone(), now.mono));
            {
                let mut st = entry.lock();
                st.creds = Some(Credentials {
                    keys: Arc::new(Keys {
                        access_key_id: item.access_key_id,
                        secret_access_key: Secret::new(item.secret_access_key),
                        session_token: Secret::new(item.session_token),
                    }),
                    last_updated,
                    expiration,
                    account_id: item.account_id.map(Arc::from),
                    rendered: Default::default(),
                });
                st.creds_generation = generation;
                st.next_fetch = Some(refresh_at(
                    last_updated,
                    expiration,
                    keep,
                    self.inner.jitter(),
                ));
            }
            entries.insert(item.role, entry);
            taken.kept += 1;
        }
        drop(entries);
        self.inner.wake.notify_one();
        Ok(taken)
    }
}
