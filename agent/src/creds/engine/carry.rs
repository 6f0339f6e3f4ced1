//! Credentials carried across a restart of the agent: at a stop the engine
//! writes what it has cached (`carry`), and the next start takes it back
//! (`take_carried`), so a restart of a whole fleet costs STS nothing. The
//! bytes live in memory only (systemd's file descriptor store, `fdstore`);
//! the engine neither knows nor cares where.
//!
//! What is taken back must be what the new agent would have fetched itself:
//! the same identity (base, profile, mode, account and partition of bare
//! role names), a role still assigned, credentials that do not expire
//! within the refresh margin. Everything else is dropped.

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
    /// What the credentials were obtained as (`Engine::identity_line`).
    identity: String,
    roles: Vec<CarriedRole>,
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
    /// Not what `carry` writes.
    #[error("the carried credentials can't be read: {0}")]
    Unreadable(String),
    /// Another version of the agent wrote them.
    #[error("the carried credentials are of format {0}, this agent reads {VERSION}")]
    Version(u32),
    /// Obtained as another identity.
    #[error("the carried credentials were obtained as {0}, the agent now is {1}")]
    OtherIdentity(String, String),
}

fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl Engine {
    /// What cached credentials were obtained as: if any of it changed, what
    /// is cached is not what this agent would fetch.
    fn identity_line(&self) -> String {
        let base = self.inner.read_base();
        let settings = &self.inner.settings;
        format!(
            "{}; mode {}; region {}; account {}; partition {}",
            base.describe(),
            base.identity().mode.as_str(),
            base.identity().region,
            settings
                .default_account
                .as_deref()
                .unwrap_or("(discovered)"),
            settings.default_partition,
        )
    }

    /// Every role's valid credentials of the identity in force, for the
    /// next start (`take_carried`). Secrets included: the bytes are never
    /// to touch a disk.
    pub fn carry(&self) -> Vec<u8> {
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
            identity: self.identity_line(),
            roles,
        };
        serde_json::to_vec(&carried).unwrap_or_default()
    }

    /// Takes back what a previous agent carried: the credentials of every
    /// role `assigned` still names, obtained as the identity in force, and
    /// not due for refresh yet. Each is refreshed when it would have been.
    pub fn take_carried(
        &self,
        bytes: &[u8],
        assigned: impl Fn(&Role) -> bool,
    ) -> Result<TakenBack, CarryError> {
        let carried: Carried =
            serde_json::from_slice(bytes).map_err(|e| CarryError::Unreadable(e.to_string()))?;
        if carried.version != VERSION {
            return Err(CarryError::Version(carried.version));
        }
        let identity = self.identity_line();
        if carried.identity != identity {
            return Err(CarryError::OtherIdentity(carried.identity, identity));
        }
        let now = self.inner.clock.now();
        let generation = self.inner.read_base().generation;
        let keep = self.inner.settings.keep;
        let mut taken = TakenBack::default();
        let mut entries = self.inner.lock_entries();
        for item in carried.roles {
            let last_updated = UNIX_EPOCH + Duration::from_secs(item.last_updated);
            let expiration = UNIX_EPOCH + Duration::from_secs(item.expiration);
            // Due for refresh already (the latest the jitter could put it):
            // STS is asked as it would be for any refresh.
            let due = refresh_at(last_updated, expiration, keep, 0.0) <= now.wall;
            let room = entries.len() < self.inner.settings.max_roles;
            if due || !room || !assigned(&item.role) || entries.contains_key(&item.role) {
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
