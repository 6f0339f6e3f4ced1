//! The credentials engine: temporary credentials from STS, cached per role
//! and session parameters, fetched ahead of need and refreshed ahead of
//! expiry, so that no request waits on STS and an STS outage does not take
//! workloads down.
//!
//! - One entry per `Role` (role and session parameters). An entry has at
//!   most one fetch in flight, so any number of simultaneous first requests
//!   make one STS call.
//! - Every role an assignment names is fetched as soon as it is named
//!   (`set_wanted`), and refreshed at a jittered point before it expires.
//! - A failed fetch keeps the credentials the entry still has (they are
//!   served while valid), records the error (served to workloads that have
//!   nothing else) and is retried later: refusals after `error_ttl`,
//!   transient failures with exponential backoff. All STS calls share one
//!   rate budget.
//! - Entries no assignment names are dropped after `idle_ttl` without use,
//!   and at once when `set_wanted` no longer names them.
//!
//! The request path (`lookup`) only reads memory. STS calls happen in tasks
//! the engine spawns and in `run_due`, which its scheduler calls.

mod base;
mod budget;
mod schedule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};

pub use base::{BaseConfig, Identity, MfaSettings, Mode, Profile};

use self::base::BaseState;
use self::budget::{Budget, Lane};
use self::schedule::{Jitter, refresh_at, retry_after};
use super::mfa::{MfaCode, TotpSecret};
use super::session_name;
use super::source::Changed;
use super::sts::{AssumeRoleRequest, BaseCreds, Issued, Mfa, Sts, StsError};
use super::{CredentialSource, Credentials, Keys, Lookup, Role, RoleError, Unavailable};
use crate::clock::{Clock, Now};
use crate::timefmt::iso8601;

/// The engine's tunables.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Credentials are replaced this long before they expire (at most half
    /// their lifetime), so served credentials keep at least this long.
    pub keep: Duration,
    /// How long a refusal (access denied) is served before STS is asked
    /// again.
    pub error_ttl: Duration,
    /// The longest wait between retries of a transient failure.
    pub max_backoff: Duration,
    /// STS calls a second, on average.
    pub rate: f64,
    /// STS calls at once.
    pub burst: u32,
    /// Roles cached at most.
    pub max_roles: usize,
    /// An entry no assignment names is dropped after this long unused.
    pub idle_ttl: Duration,
    /// The account of roles named without one; `None`: the account of the
    /// agent's own credentials (`GetCallerIdentity`).
    pub default_account: Option<String>,
    /// The partition of roles named without an ARN.
    pub default_partition: String,
    /// `RoleSessionName` when the assignment gives none.
    pub default_session_name: String,
    /// Set `SourceIdentity` to the session name.
    pub source_identity: bool,
    /// Tag sessions with the host and workload.
    pub session_tags: bool,
    /// The host's name, for session tags.
    pub hostname: String,
    /// Seed of the jitter generator.
    pub jitter_seed: u64,
}

/// Why the engine could not get credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum FetchError {
    #[error("the agent has no credentials of its own yet: post them with `imds-agent bootstrap`")]
    NoBase,
    #[error("an MFA code is needed: run `imds-agent mfa CODE`")]
    MfaRequired,
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error(transparent)]
    Sts(#[from] StsError),
    #[error("the role left the cache before STS was asked")]
    Abandoned,
}

impl FetchError {
    fn is_transient(&self) -> bool {
        matches!(self, FetchError::Sts(e) if e.is_transient())
    }

    /// The `Code` and `Message` served while a role has nothing better.
    fn unavailable(&self, arn: &str, at: SystemTime) -> Unavailable {
        let (code, message) = match self {
            FetchError::Sts(StsError::Throttled(_) | StsError::Unavailable(_)) => (
                "ServiceUnavailable",
                format!("STS could not issue credentials for {arn} ({self}); retrying"),
            ),
            FetchError::Sts(StsError::Refused { code, message }) => (
                "AssumeRoleUnauthorizedAccess",
                format!("STS refused credentials for {arn}: {code}: {message}"),
            ),
            _ => (
                "AssumeRoleUnauthorizedAccess",
                format!("no credentials for {arn}: {self}"),
            ),
        };
        Unavailable {
            code: code.into(),
            message,
            last_updated: at,
        }
    }
}

/// One cached role.
#[derive(Debug)]
struct Entry {
    role: Role,
    state: Mutex<EntryState>,
    /// Bumped when a fetch ends, for `first_fetch` waiters.
    fetched: watch::Sender<u64>,
    /// Dropped from a full cache while its fetch waited for the budget: the
    /// fetch gives up instead of calling STS for nobody.
    abandoned: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct EntryState {
    creds: Option<Credentials>,
    error: Option<Unavailable>,
    failures: u32,
    fetching: bool,
    /// When the scheduler fetches next (refresh or retry).
    next_fetch: Option<SystemTime>,
    /// The agent's monotonic time of the last lookup.
    last_used: Duration,
    wanted: bool,
}

/// The MFA session or the session-token credentials, shared by all roles.
#[derive(Debug, Default)]
struct SessionCache {
    generation: u64,
    issued: Option<Issued>,
}

#[derive(Debug)]
struct Inner {
    sts: Arc<dyn Sts>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    base: RwLock<BaseState>,
    /// Single flight for the shared session: held across its STS call.
    session: tokio::sync::Mutex<SessionCache>,
    /// The base's account, discovered once per generation.
    account: tokio::sync::Mutex<Option<(u64, String)>>,
    entries: Mutex<HashMap<Role, Arc<Entry>>>,
    budget: Budget,
    jitter: Mutex<Jitter>,
    wake: Notify,
    runtime: tokio::runtime::Handle,
}

/// The engine. Cheap to clone; every clone is the same engine.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// What `status` reports about one role.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoleStatus {
    /// The role as configured.
    pub role: String,
    /// Its session name.
    pub session_name: String,
    /// Whether valid credentials are cached.
    pub valid: bool,
    /// When they expire.
    pub expiration: Option<String>,
    /// Seconds they have left.
    pub remaining_seconds: Option<u64>,
    /// The last access key id's last four characters.
    pub access_key_suffix: Option<String>,
    /// The last error, if the last fetch failed.
    pub error: Option<String>,
}

/// One profile, as the admin socket shows it: never its secret key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProfileInfo {
    /// Its name.
    pub name: String,
    /// Whether it is the active one.
    pub active: bool,
    /// Its access key id's last four characters.
    pub access_key_suffix: String,
    /// STS's region.
    pub region: String,
    /// `assume-role` or `session-token`.
    pub mode: String,
    /// Session duration.
    pub duration_seconds: u64,
    /// The role its workloads get, if it names one.
    pub role: Option<String>,
    /// Its MFA device.
    pub mfa_serial: Option<String>,
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// Every wanted role has valid credentials.
    pub ready: bool,
    /// Where the agent's own credentials come from.
    pub base: String,
    /// The active profile.
    pub profile: Option<String>,
    /// `assume-role` or `session-token`.
    pub mode: String,
    /// Whether the last STS call reached STS (`None`: no call yet).
    pub sts_reachable: Option<bool>,
    /// The MFA device, when one is configured.
    pub mfa_serial: Option<String>,
    /// When the MFA session expires.
    pub mfa_session_expiration: Option<String>,
    /// Every cached role.
    pub roles: Vec<RoleStatus>,
}

/// Why a change to the agent's own identity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaseError {
    /// No such profile.
    #[error("no profile named {0:?}")]
    UnknownProfile(String),
    /// The agent does not use profiles.
    #[error("the agent is not configured with profiles (credentials.base is not \"profiles\")")]
    NotProfiles,
    /// The agent does not take bootstrap credentials.
    #[error(
        "the agent is not configured for bootstrap credentials (credentials.base is not \"bootstrap\")"
    )]
    NotBootstrap,
    /// No MFA device is configured for the active identity.
    #[error("no MFA device is configured (credentials.mfa_serial)")]
    NoMfa,
}

impl Engine {
    /// An engine calling `sts` as `base`. Must be called inside a tokio
    /// runtime: fetches are spawned on it.
    pub fn new(
        sts: Arc<dyn Sts>,
        clock: Arc<dyn Clock>,
        base: BaseConfig,
        settings: Settings,
    ) -> Self {
        let budget = Budget::new(settings.rate, settings.burst);
        let jitter = Jitter::new(settings.jitter_seed);
        Self {
            inner: Arc::new(Inner {
                sts,
                clock,
                base: RwLock::new(BaseState::new(base)),
                session: tokio::sync::Mutex::default(),
                account: tokio::sync::Mutex::default(),
                entries: Mutex::default(),
                budget,
                jitter: Mutex::new(jitter),
                wake: Notify::new(),
                runtime: tokio::runtime::Handle::current(),
                settings,
            }),
        }
    }

    /// Runs the scheduler forever: fetches what is due, sleeps until the
    /// next thing is due (at most 30 s, so a stepped wall clock is noticed).
    pub async fn run(self) {
        loop {
            let next = self.run_due().await;
            let now = self.inner.clock.now().wall;
            let sleep = next
                .duration_since(now)
                .unwrap_or_default()
                .min(Duration::from_secs(30));
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.inner.wake.notified() => {}
            }
        }
    }

    /// Fetches every role whose refresh or retry is due, waits for those
    /// fetches, drops idle entries, and returns when the next one is due.
    pub async fn run_due(&self) -> SystemTime {
        let now = self.inner.clock.now();
        let mut next = now.wall + Duration::from_secs(30);
        let mut due = Vec::new();
        {
            let mut entries = self.inner.lock_entries();
            entries.retain(|_, entry| {
                let mut st = entry.lock();
                let idle = now.mono.saturating_sub(st.last_used) > self.inner.settings.idle_ttl;
                if !st.wanted && idle && !st.fetching {
                    return false;
                }
                match st.next_fetch {
                    Some(at) if at <= now.wall && !st.fetching => {
                        st.fetching = true;
                        due.push(Arc::clone(entry));
                    }
                    Some(at) => next = next.min(at),
                    None => {}
                }
                true
            });
        }
        let mut fetches = tokio::task::JoinSet::new();
        for entry in due {
            fetches.spawn(Arc::clone(&self.inner).fetch(entry));
        }
        while fetches.join_next().await.is_some() {}
        next
    }

    /// Makes `roles` the roles to keep fresh ahead of need: each is fetched
    /// now if it is not cached. Any other role stays cached while workloads
    /// use it and is dropped once idle; `retain` drops roles at once.
    pub fn set_wanted(&self, roles: impl IntoIterator<Item = Role>) {
        // Half the cache at most: room stays for workloads no assignment
        // foresaw, however many cgroups a glob matches.
        let cap = (self.inner.settings.max_roles / 2).max(1);
        let mut wanted = std::collections::HashSet::new();
        let mut dropped = 0usize;
        for role in roles {
            if wanted.len() < cap {
                wanted.insert(role);
            } else if !wanted.contains(&role) {
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::warn!(
                prefetched = cap,
                not_prefetched = dropped,
                "more roles to prefetch than half of credentials.max_roles: the rest are fetched on their first request"
            );
        }
        let mut start = Vec::new();
        {
            let mut entries = self.inner.lock_entries();
            for (role, entry) in entries.iter() {
                if !wanted.contains(role) {
                    entry.lock().wanted = false;
                }
            }
            for role in wanted {
                let entry = entries
                    .entry(role.clone())
                    .or_insert_with(|| Arc::new(Entry::new(role)));
                let mut st = entry.lock();
                st.wanted = true;
                if st.creds.is_none() && !st.fetching && st.next_fetch.is_none() {
                    st.fetching = true;
                    start.push(Arc::clone(entry));
                }
            }
            // The wanted ones take room from the others, never beyond
            // the bound.
            while entries.len() > self.inner.settings.max_roles && make_room(&mut entries) {}
        }
        for entry in start {
            self.inner.spawn_fetch(entry);
        }
    }

    /// Drops at once, credentials and all, every role for which `keep` is
    /// false: an assignment that was removed stops being served now, not
    /// when its credentials expire.
    pub fn retain(&self, keep: impl Fn(&Role) -> bool) {
        let mut dropped = Vec::new();
        self.inner.lock_entries().retain(|role, _| {
            let kept = keep(role);
            if !kept {
                dropped.push((role.spec.to_string(), role.session.session_name.clone()));
            }
            kept
        });
        for (role, session_name) in dropped {
            tracing::info!(%role, ?session_name, "role no longer assigned: credentials dropped");
        }
    }

    /// Changes whenever the agent's own identity does (bootstrap, profile
    /// switch).
    pub fn base_generation(&self) -> u64 {
        self.inner.read_base().generation
    }

    /// The role the active profile gives every workload, if it names one.
    pub fn profile_role(&self) -> Option<Arc<Role>> {
        self.inner.read_base().profile_role().cloned()
    }

    /// Replaces the agent's own credentials with `keys` (bootstrap). Every
    /// cached credential is discarded and fetched again with the new keys.
    pub fn bootstrap(&self, keys: Keys) -> Result<(), BaseError> {
        let suffix = keys.key_suffix().to_owned();
        {
            let mut base = self.inner.write_base();
            if !matches!(base.config, BaseConfig::Bootstrap { .. }) {
                return Err(BaseError::NotBootstrap);
            }
            base.creds = Some(BaseCreds::Keys(Arc::new(keys)));
            base.generation += 1;
        }
        tracing::info!(access_key_suffix = %suffix, "bootstrap credentials received");
        self.inner.flush();
        Ok(())
    }

    /// Switches to profile `name`. Every cached credential is discarded;
    /// `wanted` (called once the switch is made) gives the roles to fetch as
    /// the new profile: roles no longer wanted are dropped, not refetched.
    pub fn use_profile(
        &self,
        name: &str,
        wanted: impl FnOnce() -> Vec<Role>,
    ) -> Result<(), BaseError> {
        {
            let mut base = self.inner.write_base();
            let BaseConfig::Profiles { profiles, .. } = &base.config else {
                return Err(BaseError::NotProfiles);
            };
            let profile = profiles
                .get(name)
                .ok_or_else(|| BaseError::UnknownProfile(name.to_owned()))?;
            base.creds = Some(BaseCreds::Keys(Arc::new(profile.keys.clone())));
            base.profile = Some(name.to_owned());
            base.generation += 1;
            base.mfa_code = None;
        }
        tracing::info!(profile = name, "switched profile");
        let wanted = wanted();
        // Everything cached was fetched as the old profile: drop what the
        // new one does not want, and fetch the rest anew (a fetch under way
        // notices the switch and fetches again).
        {
            let keep: std::collections::HashSet<&Role> = wanted.iter().collect();
            self.inner
                .lock_entries()
                .retain(|role, _| keep.contains(role));
        }
        self.inner.flush();
        self.set_wanted(wanted);
        Ok(())
    }

    /// What profile `name` is, without its secrets: `None` if there is no
    /// such profile.
    pub fn profile(&self, name: &str) -> Option<ProfileInfo> {
        let base = self.inner.read_base();
        let BaseConfig::Profiles { profiles, .. } = &base.config else {
            return None;
        };
        let profile = profiles.get(name)?;
        Some(ProfileInfo {
            name: name.to_owned(),
            active: base.profile.as_deref() == Some(name),
            access_key_suffix: profile.keys.key_suffix().to_owned(),
            region: profile.identity.region.clone(),
            mode: profile.identity.mode.as_str().to_owned(),
            duration_seconds: profile.identity.duration.as_secs(),
            role: profile.role.as_ref().map(|r| r.spec.to_string()),
            mfa_serial: profile.identity.mfa.as_ref().map(|m| m.serial.clone()),
        })
    }

    /// The configured profiles and the active one (empty without profiles).
    pub fn profiles(&self) -> (Vec<String>, Option<String>) {
        let base = self.inner.read_base();
        match &base.config {
            BaseConfig::Profiles { profiles, .. } => {
                (profiles.keys().cloned().collect(), base.profile.clone())
            }
            _ => (Vec::new(), None),
        }
    }

    /// Takes an MFA code a person handed in and retries every role that is
    /// waiting for one.
    pub fn mfa_code(&self, code: MfaCode) -> Result<(), BaseError> {
        {
            let mut base = self.inner.write_base();
            if base.identity().mfa.is_none() {
                return Err(BaseError::NoMfa);
            }
            base.mfa_code = Some(code);
        }
        tracing::info!("MFA code received");
        self.inner.retry_waiting();
        Ok(())
    }

    /// Refreshes every cached role now, keeping what is cached until the new
    /// credentials arrive (or serving it on if STS fails).
    pub fn refresh_all(&self) {
        let now = self.inner.clock.now().wall;
        for entry in self.inner.lock_entries().values() {
            let mut st = entry.lock();
            if !st.fetching {
                st.next_fetch = Some(now);
            }
        }
        self.inner.wake.notify_one();
    }

    /// Discards the MFA session or session token, so the next fetch opens a
    /// new one.
    pub async fn clear_session(&self) {
        *self.inner.session.lock().await = SessionCache::default();
        self.inner.flush();
    }

    /// Whether every wanted role has valid credentials (what `status`
    /// reports as `ready`), without the rest of the status.
    pub fn is_ready(&self) -> bool {
        let now = self.inner.clock.now().wall;
        self.inner.lock_entries().values().all(|e| {
            let st = e.lock();
            !st.wanted || st.creds.as_ref().is_some_and(|c| c.expiration > now)
        })
    }

    /// The engine's state, for the admin socket.
    pub async fn status(&self) -> Status {
        let now = self.inner.clock.now().wall;
        let (base, profile, mode, mfa_serial, generation) = {
            let b = self.inner.read_base();
            let identity = b.identity();
            (
                b.describe(),
                b.profile.clone(),
                identity.mode.as_str().to_owned(),
                identity.mfa.as_ref().map(|m| m.serial.clone()),
                b.generation,
            )
        };
        let mfa_session_expiration = {
            let session = self.inner.session.lock().await;
            session
                .issued
                .as_ref()
                .filter(|_| session.generation == generation)
                .map(|s| iso8601(s.expiration))
        };
        let entries: Vec<Arc<Entry>> = self.inner.lock_entries().values().cloned().collect();
        let mut roles: Vec<RoleStatus> = entries
            .iter()
            .map(|e| e.status(&self.inner.settings, profile.as_deref(), now))
            .collect();
        roles.sort_by(|a, b| (&a.role, &a.session_name).cmp(&(&b.role, &b.session_name)));
        let ready = self.is_ready();
        let sts_reachable = entries
            .iter()
            .filter_map(|e| {
                let st = e.lock();
                match (&st.creds, &st.error) {
                    (_, Some(u)) => Some(u.code != "ServiceUnavailable"),
                    (Some(_), None) => Some(true),
                    (None, None) => None,
                }
            })
            .reduce(|a, b| a && b);
        Status {
            ready,
            base,
            profile,
            mode,
            sts_reachable,
            mfa_serial,
            mfa_session_expiration,
            roles,
        }
    }
}

impl CredentialSource for Engine {
    fn lookup(&self, role: &Role, now: SystemTime) -> Lookup {
        let Some(entry) = self.inner.entry_for(role) else {
            return Lookup::Unavailable(Unavailable {
                code: "ServiceUnavailable".into(),
                message: format!(
                    "the agent caches at most {} roles; {} is not one of them",
                    self.inner.settings.max_roles, role.spec
                ),
                last_updated: now,
            });
        };
        let mut st = entry.lock();
        st.last_used = self.inner.clock.now().mono;
        // Valid credentials are served even when the last refresh failed:
        // an STS outage must not take workloads down.
        if let Some(creds) = st.creds.as_ref().filter(|c| c.expiration > now) {
            return Lookup::Ready(creds.clone());
        }
        if let Some(error) = &st.error {
            return Lookup::Unavailable(error.clone());
        }
        let start = !st.fetching && st.next_fetch.is_none_or(|at| at <= now);
        if start {
            st.fetching = true;
        }
        drop(st);
        if start {
            self.inner.spawn_fetch(Arc::clone(&entry));
        }
        Lookup::Unavailable(Unavailable {
            code: "ServiceUnavailable".into(),
            message: format!(
                "credentials for {} are being fetched; retry shortly",
                role.spec
            ),
            last_updated: now,
        })
    }

    fn first_fetch(&self, role: &Role) -> Option<Changed> {
        let entry = self.inner.lock_entries().get(role).cloned()?;
        let st = entry.lock();
        if st.creds.is_some() || st.error.is_some() || !st.fetching {
            return None;
        }
        let mut fetched = entry.fetched.subscribe();
        drop(st);
        Some(Box::pin(async move {
            let _ = fetched.changed().await;
        }))
    }
}

/// Drops one entry from a full cache, among those no assignment names:
/// one with no credentials yet before one with credentials, and the one
/// used longest ago among those (a fetch still waiting for the budget
/// gives up). A workload asking for sessions by the thousand churns its
/// own, still unfetched, entries, and does not push out others' cached
/// credentials. False when every entry is wanted.
fn make_room(entries: &mut HashMap<Role, Arc<Entry>>) -> bool {
    let victim = entries
        .iter()
        .filter_map(|(role, entry)| {
            let st = entry.lock();
            (!st.wanted).then(|| ((st.creds.is_some(), st.last_used), role.clone()))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, role)| role);
    let Some(victim) = victim else {
        return false;
    };
    if let Some(entry) = entries.remove(&victim) {
        entry
            .abandoned
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    tracing::debug!(role = %victim.spec, session = ?victim.session.session_name, "role cache full: dropped the entry used longest ago");
    true
}

impl Entry {
    fn new(role: Role) -> Self {
        Self {
            role,
            state: Mutex::default(),
            fetched: watch::channel(0).0,
            abandoned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EntryState> {
        // A panic while holding the lock leaves plain data behind; keep
        // serving it rather than poisoning every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn status(&self, settings: &Settings, profile: Option<&str>, now: SystemTime) -> RoleStatus {
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
            access_key_suffix: st.creds.as_ref().map(|c| c.keys.key_suffix().to_owned()),
            error: st
                .error
                .as_ref()
                .map(|u| format!("{}: {}", u.code, u.message)),
        }
    }
}

/// `RoleSessionName`: the assignment's, else the active profile's name,
/// else the agent's default (`imds-agent-<host>`), so CloudTrail shows who
/// acted.
fn session_name_of(role: &Role, settings: &Settings, profile: Option<&str>) -> String {
    role.session
        .session_name
        .clone()
        .or_else(|| profile.and_then(|p| session_name::sanitize(&format!("imds-agent-{p}"))))
        .unwrap_or_else(|| settings.default_session_name.clone())
}

impl Inner {
    fn lock_entries(&self) -> std::sync::MutexGuard<'_, HashMap<Role, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_base(&self) -> std::sync::RwLockReadGuard<'_, BaseState> {
        self.base.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_base(&self) -> std::sync::RwLockWriteGuard<'_, BaseState> {
        self.base.write().unwrap_or_else(|e| e.into_inner())
    }

    fn jitter(&self) -> f64 {
        self.jitter.lock().unwrap_or_else(|e| e.into_inner()).next()
    }

    /// The entry for `role`, created (and its first fetch started by the
    /// caller) if missing. A full cache makes room (`make_room`); `None`
    /// when every entry is wanted.
    fn entry_for(&self, role: &Role) -> Option<Arc<Entry>> {
        let mut entries = self.lock_entries();
        if let Some(entry) = entries.get(role) {
            return Some(Arc::clone(entry));
        }
        if entries.len() >= self.settings.max_roles && !make_room(&mut entries) {
            return None;
        }
        let entry = Arc::new(Entry::new(role.clone()));
        entries.insert(role.clone(), Arc::clone(&entry));
        Some(entry)
    }

    fn spawn_fetch(self: &Arc<Self>, entry: Arc<Entry>) {
        self.runtime.spawn(Arc::clone(self).fetch(entry));
    }

    /// Discards every cached credential and error after the base changed,
    /// and fetches the wanted roles again.
    fn flush(self: &Arc<Self>) {
        let mut start = Vec::new();
        for entry in self.lock_entries().values() {
            let mut st = entry.lock();
            st.creds = None;
            st.error = None;
            st.failures = 0;
            st.next_fetch = None;
            if st.wanted && !st.fetching {
                st.fetching = true;
                start.push(Arc::clone(entry));
            }
        }
        for entry in start {
            self.spawn_fetch(entry);
        }
        self.wake.notify_one();
    }

    /// Fetches now every role that has no credentials and is not fetching.
    fn retry_waiting(self: &Arc<Self>) {
        let mut start = Vec::new();
        for entry in self.lock_entries().values() {
            let mut st = entry.lock();
            if st.creds.is_none() && !st.fetching {
                st.fetching = true;
                st.next_fetch = None;
                start.push(Arc::clone(entry));
            }
        }
        for entry in start {
            self.spawn_fetch(entry);
        }
    }

    /// One fetch of `entry` (whose `fetching` flag the caller set).
    async fn fetch(self: Arc<Self>, entry: Arc<Entry>) {
        let (generation, profile) = {
            let base = self.read_base();
            (base.generation, base.profile.clone())
        };
        let session_name = session_name_of(&entry.role, &self.settings, profile.as_deref());
        let started = self.clock.now();
        let lane = if entry.lock().wanted {
            Lane::Wanted
        } else {
            Lane::OnDemand
        };
        let result = self.issue(&entry, &session_name, generation, lane).await;
        let now = self.clock.now();
        let arn = self.arn_for_log(&entry.role);
        let stale = self.read_base().generation != generation;
        {
            let mut st = entry.lock();
            st.fetching = false;
            if stale {
                // The base changed while STS answered: this answer belongs
                // to the old identity. Fetch again as the new one.
                st.next_fetch = Some(now.wall);
            } else {
                match &result {
                    Ok(issued) => self.store(&mut st, issued, now),
                    Err(error) => {
                        st.failures += 1;
                        st.error = Some(error.unavailable(&arn, now.wall));
                        let wait = retry_after(
                            st.failures,
                            error.is_transient(),
                            self.settings.error_ttl,
                            self.settings.max_backoff,
                            self.jitter(),
                        );
                        st.next_fetch = Some(now.wall + wait);
                    }
                }
            }
        }
        entry.fetched.send_modify(|n| *n += 1);
        self.wake.notify_one();
        let latency_ms = now.mono.saturating_sub(started.mono).as_millis() as u64;
        match (&result, stale) {
            (_, true) => {
                tracing::debug!(role = %arn, session = %session_name, "discarded an answer for a previous identity")
            }
            (Ok(issued), false) => tracing::info!(
                role = %arn,
                session = %session_name,
                access_key_suffix = %issued.keys.key_suffix(),
                expiration = %iso8601(issued.expiration),
                latency_ms,
                "STS issued credentials"
            ),
            (Err(error), false) => tracing::warn!(
                role = %arn,
                session = %session_name,
                error = %error,
                latency_ms,
                "STS could not issue credentials"
            ),
        }
    }

    fn store(&self, st: &mut EntryState, issued: &Issued, now: Now) {
        st.creds = Some(Credentials {
            keys: Arc::new(issued.keys.clone()),
            last_updated: now.wall,
            expiration: issued.expiration,
            account_id: issued.account_id.as_deref().map(Arc::from),
            rendered: Default::default(),
        });
        st.error = None;
        st.failures = 0;
        st.next_fetch = Some(refresh_at(
            now.wall,
            issued.expiration,
            self.settings.keep,
            self.jitter(),
        ));
    }

    fn arn_for_log(&self, role: &Role) -> String {
        let partition = &self.settings.default_partition;
        role.spec
            .arn(self.settings.default_account.as_deref(), partition)
            .unwrap_or_else(|_| role.spec.to_string())
    }

    /// Gets credentials for `role` from STS.
    async fn issue(
        &self,
        entry: &Entry,
        session_name: &str,
        generation: u64,
        lane: Lane,
    ) -> Result<Issued, FetchError> {
        let role = &entry.role;
        let (base, identity) = {
            let b = self.read_base();
            (b.creds.clone(), b.identity().clone())
        };
        let base = base.ok_or(FetchError::NoBase)?;
        match identity.mode {
            Mode::SessionToken => self.session(&base, &identity, generation).await,
            Mode::AssumeRole => {
                let arn = self.role_arn(role, &base, generation).await?;
                let caller = match identity.mfa {
                    Some(_) => BaseCreds::Keys(Arc::new(
                        self.session(&base, &identity, generation).await?.keys,
                    )),
                    None => base,
                };
                let request = self.assume_role_request(role, arn, session_name, &identity);
                self.budget.acquire(lane).await;
                if entry.abandoned.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(FetchError::Abandoned);
                }
                Ok(self
                    .sts
                    .assume_role(&caller, &identity.region, &request, None)
                    .await?)
            }
        }
    }

    fn assume_role_request(
        &self,
        role: &Role,
        role_arn: String,
        session_name: &str,
        identity: &Identity,
    ) -> AssumeRoleRequest {
        let s = &role.session;
        let source_identity = s.source_identity.clone().or_else(|| {
            self.settings
                .source_identity
                .then(|| session_name.to_owned())
        });
        let tags = if !s.tags.is_empty() || !self.settings.session_tags {
            s.tags.clone()
        } else {
            let mut tags = vec![("imds-agent:workload".to_owned(), session_name.to_owned())];
            if let Some(host) = session_name::sanitize(&self.settings.hostname) {
                tags.push(("imds-agent:host".to_owned(), host));
            }
            tags
        };
        AssumeRoleRequest {
            role_arn,
            session_name: session_name.to_owned(),
            duration: s.duration.unwrap_or(identity.duration),
            external_id: s
                .external_id
                .clone()
                .or_else(|| identity.external_id.clone()),
            source_identity,
            tags,
        }
    }

    /// The role's ARN; a role named without an account is in the configured
    /// account, else in the account of the agent's own credentials.
    async fn role_arn(
        &self,
        role: &Role,
        base: &BaseCreds,
        generation: u64,
    ) -> Result<String, FetchError> {
        let partition = &self.settings.default_partition;
        if role.spec.account_id().is_some() || self.settings.default_account.is_some() {
            return Ok(role
                .spec
                .arn(self.settings.default_account.as_deref(), partition)?);
        }
        let mut account = self.account.lock().await;
        if let Some((g, id)) = account.as_ref()
            && *g == generation
        {
            return Ok(role.spec.arn(Some(id), partition)?);
        }
        let region = self.read_base().identity().region.clone();
        // Every role waits for this one call: it goes first.
        self.budget.acquire(Lane::Wanted).await;
        let who = self.sts.get_caller_identity(base, &region).await?;
        tracing::info!(account = %who.account, arn = %who.arn, "the agent's own identity");
        *account = Some((generation, who.account.clone()));
        Ok(role.spec.arn(Some(&who.account), partition)?)
    }

    /// The shared session: the MFA session (`AssumeRole` mode) or the
    /// served session token (`SessionToken` mode). One call at a time:
    /// concurrent fetches wait for it and share its answer.
    async fn session(
        &self,
        base: &BaseCreds,
        identity: &Identity,
        generation: u64,
    ) -> Result<Issued, FetchError> {
        let mut cache = self.session.lock().await;
        let now = self.clock.now().wall;
        // Reuse a session while it outlives what it must cover: a served
        // session token must keep `keep` (it is refreshed like any
        // credentials); an MFA session only has to outlive the next call.
        let margin = match identity.mode {
            Mode::SessionToken => self.settings.keep + Duration::from_secs(300),
            Mode::AssumeRole => Duration::from_secs(300),
        };
        if cache.generation == generation
            && let Some(issued) = cache
                .issued
                .as_ref()
                .filter(|s| s.expiration > now + margin)
        {
            return Ok(issued.clone());
        }
        let mfa = match &identity.mfa {
            Some(settings) => Some(self.mfa(settings).await?),
            None => None,
        };
        let duration = match (identity.mode, &identity.mfa) {
            (Mode::AssumeRole, _) => identity.mfa_session,
            (Mode::SessionToken, _) => identity.duration,
        };
        // Every role waits for the shared session: it goes first.
        self.budget.acquire(Lane::Wanted).await;
        let issued = self
            .sts
            .get_session_token(base, &identity.region, duration, mfa.as_ref())
            .await?;
        tracing::info!(
            access_key_suffix = %issued.keys.key_suffix(),
            expiration = %iso8601(issued.expiration),
            mfa = mfa.is_some(),
            "STS issued a session token"
        );
        *cache = SessionCache {
            generation,
            issued: Some(issued.clone()),
        };
        Ok(issued)
    }

    /// An MFA code: from the TOTP secret (never the same step twice: AWS
    /// refuses a reused code), else the one a person handed in.
    async fn mfa(&self, settings: &MfaSettings) -> Result<Mfa, FetchError> {
        let code = match &settings.secret {
            Some(secret) => self.totp_code(secret).await,
            None => self
                .write_base()
                .mfa_code
                .take()
                .ok_or(FetchError::MfaRequired)?,
        };
        Ok(Mfa {
            serial: settings.serial.clone(),
            code,
        })
    }

    async fn totp_code(&self, secret: &TotpSecret) -> MfaCode {
        loop {
            let now = self.clock.now().wall;
            let step = TotpSecret::step(now);
            {
                let mut base = self.write_base();
                if base.last_totp_step != Some(step) {
                    base.last_totp_step = Some(step);
                    return secret.code_for_step(step);
                }
            }
            // This step's code was used: wait for the next one.
            let into_step = now
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
                % super::mfa::STEP_SECONDS;
            tokio::time::sleep(Duration::from_secs(super::mfa::STEP_SECONDS - into_step)).await;
        }
    }
}

#[cfg(test)]
mod tests;
