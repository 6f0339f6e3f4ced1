//! One cached role: its credentials, its last error, who uses it, and the
//! rules for keeping it and for making room in a full cache.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::Settings;
use super::status::RoleStatus;
use crate::creds::session_name;
use crate::creds::{Credentials, Holder, Role, Unavailable, User};
use crate::timefmt::iso8601;

/// Holders an entry remembers; past them a use counts as unchecked.
const MAX_HOLDERS: usize = 16;

/// One cached role.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) role: Role,
    state: Mutex<EntryState>,
    /// Bumped when a fetch ends, for `prepare` waiters.
    pub(super) fetched: watch::Sender<u64>,
    /// Dropped from a full cache while its fetch waited for the budget: the
    /// fetch gives up instead of calling STS for nobody.
    pub(super) abandoned: AtomicBool,
    /// A request waits for the fetch under way.
    pub(super) waited: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
pub(super) struct EntryState {
    pub(super) creds: Option<Credentials>,
    /// The base generation `creds` were issued under.
    pub(super) creds_generation: u64,
    pub(super) error: Option<Unavailable>,
    /// Why, in full (the STS endpoint, the HTTP stack's error): for the
    /// log and the admin socket, never for workloads.
    pub(super) error_detail: Option<String>,
    pub(super) failures: u32,
    pub(super) fetching: bool,
    /// When the scheduler fetches next (refresh or retry).
    pub(super) next_fetch: Option<SystemTime>,
    /// The agent's monotonic time of the last use.
    pub(super) last_used: Duration,
    pub(super) wanted: bool,
    /// Workloads that used it, as far as their life can be checked.
    pub(super) holders: Vec<Holder>,
    /// A workload whose life can't be checked used it (or more than
    /// `MAX_HOLDERS` did).
    pub(super) unchecked: bool,
    /// One of `holders` was alive at the last look.
    pub(super) live: bool,
    /// Whose turns its fetches on demand take: its first user's owner.
    pub(super) owner: Option<Arc<str>>,
    /// Warned that its credentials live too short for SDKs.
    pub(super) warned_short: bool,
    /// Its last fetch failed for want of a person's MFA code.
    pub(super) needs_code: bool,
    /// `next_fetch` is its first fetch, put off by the prefetch spread
    /// (not a retry): a workload that appears brings it forward.
    pub(super) spread: bool,
}

impl Entry {
    /// A new entry, used (or named) at monotonic time `now`.
    pub(super) fn new(role: Role, now: Duration) -> Self {
        Self {
            role,
            state: Mutex::new(EntryState {
                last_used: now,
                ..EntryState::default()
            }),
            fetched: watch::channel(0).0,
            abandoned: AtomicBool::new(false),
            waited: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, EntryState> {
        // A panic while holding the lock leaves plain data behind; keep
        // serving it rather than poisoning every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn status(
        &self,
        settings: &Settings,
        profile: Option<&str>,
        now: SystemTime,
    ) -> RoleStatus {
        let st = self.lock();
        let valid = st.creds.as_ref().filter(|c| c.expiration > now);
        RoleStatus {
            role: self.role.spec.to_string(),
            session_name: session_name_of(&self.role, settings, profile),
            valid: valid.is_some(),
            expiration: st.creds.as_ref().map(|c| iso8601(c.expiration)),
            remaining_seconds: valid.map(|c| {
                c.expiration
                    .duration_since(now)
                    .unwrap_or_default()
                    .as_secs()
            }),
            expires_at: st.creds.as_ref().map(|c| {
                c.expiration
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
            }),
            access_key_suffix: st.creds.as_ref().map(|c| c.keys.key_suffix().to_owned()),
            error: st.error.as_ref().map(|u| match &st.error_detail {
                Some(detail) => format!("{}: {detail}", u.code),
                None => format!("{}: {}", u.code, u.message),
            }),
            in_use: st.live || st.unchecked,
            fetching: st.fetching,
        }
    }
}

impl EntryState {
    /// Forgets the last failure and when it was to be retried: what the
    /// agent's identity changed or dropped.
    pub(super) fn forget_errors(&mut self) {
        self.error = None;
        self.error_detail = None;
        self.failures = 0;
        self.next_fetch = None;
        self.needs_code = false;
    }

    /// Records that `user` used the entry; `checkable`: whether the agent
    /// can tell holders' lives.
    pub(super) fn note(&mut self, user: &User, checkable: bool) {
        if self.owner.is_none() {
            self.owner.clone_from(&user.owner);
        }
        match &user.holder {
            Holder::Unchecked => self.unchecked = true,
            _ if !checkable => self.unchecked = true,
            holder if self.holders.contains(holder) => self.live = true,
            holder if self.holders.len() < MAX_HOLDERS => {
                self.holders.push(holder.clone());
                self.live = true;
            }
            _ => {
                self.unchecked = true;
                self.live = true;
            }
        }
    }

    /// Whether the entry stays at monotonic time `now`. It goes once no
    /// assignment names it, no fetch is under way, none of its holders
    /// lives, and it went unused for `idle_ttl`; used by a workload whose
    /// life can't be checked, it also waits for the credentials that
    /// workload took to expire (it comes back then, however long that is).
    pub(super) fn keeps(&self, now: Duration, idle_ttl: Duration) -> bool {
        if self.wanted || self.fetching || self.live {
            return true;
        }
        let idle = now.saturating_sub(self.last_used);
        if idle <= idle_ttl {
            return true;
        }
        self.unchecked
            && self.creds.as_ref().is_some_and(|c| {
                let lifetime = c
                    .expiration
                    .duration_since(c.last_updated)
                    .unwrap_or_default();
                idle <= idle_ttl + lifetime
            })
    }
}

/// Drops one entry from a full cache, among those no assignment names:
/// first one no live workload holds, then one of the owner holding the
/// most entries; among those one with no credentials yet before one with
/// credentials, and the one used longest ago (a fetch still waiting for the
/// budget gives up). A user asking for sessions by the thousand churns its
/// own entries and does not push out others' credentials. False when every
/// entry is wanted.
pub(super) fn make_room(entries: &mut HashMap<Role, Arc<Entry>>) -> bool {
    /// What eviction looks at in one entry.
    struct Candidate<'a> {
        role: &'a Role,
        live: bool,
        has_creds: bool,
        last_used: Duration,
        owner: Option<Arc<str>>,
    }
    let candidates: Vec<Candidate<'_>> = entries
        .iter()
        .filter_map(|(role, entry)| {
            let st = entry.lock();
            (!st.wanted).then(|| Candidate {
                role,
                live: st.live,
                has_creds: st.creds.is_some(),
                last_used: st.last_used,
                owner: st.owner.clone(),
            })
        })
        .collect();
    let mut held: HashMap<&Arc<str>, usize> = HashMap::new();
    for owner in candidates.iter().filter_map(|c| c.owner.as_ref()) {
        *held.entry(owner).or_default() += 1;
    }
    let victim = candidates
        .iter()
        .min_by_key(|c| {
            let owned = c.owner.as_ref().map_or(0, |o| held[o]);
            (c.live, std::cmp::Reverse(owned), c.has_creds, c.last_used)
        })
        .map(|c| c.role.clone());
    let Some(victim) = victim else {
        return false;
    };
    if let Some(entry) = entries.remove(&victim) {
        entry
            .abandoned
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    tracing::debug!(role = %victim.spec, session = ?victim.session.session_name, "role cache full: dropped an entry");
    true
}

/// `RoleSessionName`: the assignment's, else the active profile's name,
/// else the agent's default (`imds-agent-<host>`), so CloudTrail shows who
/// acted.
pub(super) fn session_name_of(role: &Role, settings: &Settings, profile: Option<&str>) -> String {
    role.session
        .session_name
        .clone()
        .or_else(|| profile.and_then(|p| session_name::sanitize(&format!("imds-agent-{p}"))))
        .unwrap_or_else(|| settings.default_session_name.clone())
}
