//! The credentials engine: temporary credentials from STS, cached per role
//! and session parameters, fetched ahead of need and refreshed ahead of
//! expiry, so that no request waits on STS (but a workload's very first)
//! and an STS outage does not take workloads down.
//!
//! - One entry per `Role` (role and session parameters). An entry has at
//!   most one fetch in flight, so any number of simultaneous first requests
//!   make one STS call.
//! - Every role an assignment names for a known workload is fetched as
//!   soon as it is named (`set_wanted`). Any other role is fetched by its
//!   first request (`prepare`), which waits for that fetch.
//! - Every entry is refreshed at a jittered point before it expires, for as
//!   long as an assignment names it or a workload that used it lives (its
//!   cgroup or container, `set_liveness`): SDKs come back only when their
//!   copy nears expiry, so "unused for a while" says nothing.
//! - A failed fetch keeps the credentials the entry still has (they are
//!   served while valid), records the error (served to workloads that have
//!   nothing else) and is retried later: refusals after `error_ttl`,
//!   transient failures with exponential backoff, and never later than
//!   halfway to the expiry of what is still served. All STS calls share one
//!   rate budget; a user's own workloads take turns in it.
//! - A new identity (bootstrap, profile switch) refetches everything and
//!   serves what is cached until then; clearing the session drops it all.
//!
//! The request path (`prepare`, `lookup`) only reads memory and spawns.
//! STS calls happen in tasks the engine spawns: for first requests, for
//! prefetches, and from its scheduler (`run`), which never waits for them.

mod base;
mod budget;
mod carry;
mod entry;
mod fetch;
mod in_flight;
mod prompt;
mod rotation;
mod schedule;
mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

pub use base::{BaseConfig, BaseError, Identity, MfaSettings, Mode, Profile};
pub use carry::{CarryError, TakenBack};
pub use prompt::{CodeOutcome, MfaPrompt};
pub use schedule::{SDK_REFRESH_WINDOW, effective_keep};
pub use status::{ProfileInfo, RoleStatus, Status};

use self::base::BaseState;
use self::budget::Budget;
use self::entry::{Entry, make_room};
use self::in_flight::{InFlight, MAX_IN_FLIGHT};
use self::prompt::Prompter;
use self::schedule::Jitter;
use super::source::Changed;
use super::sts::{Issued, Sts};
use super::{CredentialSource, Holder, Lookup, Role, Unavailable, User};
use crate::clock::Clock;

/// The engine's tunables.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Credentials are replaced this long before they expire (at most half
    /// their lifetime), so served credentials keep at least this long.
    pub keep: Duration,
    /// How long a refusal (access denied) is served before STS is asked
    /// again (sooner when the credentials still served expire sooner).
    pub error_ttl: Duration,
    /// The longest wait between retries of a transient failure.
    pub max_backoff: Duration,
    /// STS calls a second, on average.
    pub rate: f64,
    /// STS calls at once.
    pub burst: u32,
    /// Roles cached at most.
    pub max_roles: usize,
    /// An entry no assignment names and no live workload holds is dropped
    /// after this long unused.
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
    /// How long a fetch a request waits on may wait for a person's MFA
    /// code (no TOTP secret); zero: it fails at once.
    pub mfa_prompt_wait: Duration,
    /// The first fetch of a role no workload needs yet (`set_wanted_by_need`'s
    /// `foreseen`) waits a random part of this: hosts started together
    /// spread their calls over it instead of calling STS at once.
    pub prefetch_spread: Duration,
}

/// Whether a holder (a cgroup, a container) still exists.
pub type Liveness = Arc<dyn Fn(&Holder) -> bool + Send + Sync>;

/// How often holders' lives are looked at (the scheduler runs after every
/// fetch; cgroups and containers are known from walks and events anyway).
const HOLDER_CHECK_EVERY: Duration = Duration::from_secs(5);

/// The MFA session or the session-token credentials, shared by all roles.
#[derive(Debug)]
struct SessionCache {
    generation: u64,
    issued: Option<Issued>,
    /// When `issued` arrived.
    obtained: SystemTime,
}

impl Default for SessionCache {
    fn default() -> Self {
        Self {
            generation: 0,
            issued: None,
            obtained: SystemTime::UNIX_EPOCH,
        }
    }
}

struct Inner {
    sts: Arc<dyn Sts>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    base: RwLock<BaseState>,
    /// Single flight for the shared session: held across its STS call.
    session: tokio::sync::Mutex<SessionCache>,
    /// The base's account and ARN, discovered once per generation.
    account: tokio::sync::Mutex<Option<(u64, String, String)>>,
    /// The base's IAM user name, once known (for `${aws:username}`), and
    /// its generation: read on the request path, so not behind `account`.
    user_name: Mutex<Option<(u64, String)>>,
    entries: Mutex<HashMap<Role, Arc<Entry>>>,
    budget: Budget,
    in_flight: InFlight,
    jitter: Mutex<Jitter>,
    wake: Notify,
    runtime: tokio::runtime::Handle,
    /// Tells whether holders live; unset, holders count as unchecked.
    liveness: OnceLock<Liveness>,
    /// When holders were last looked at (monotonic).
    holders_checked: Mutex<Option<Duration>>,
    /// The shared calls (the account, the session): every fetch waits on
    /// them.
    everyone_waits: Arc<std::sync::atomic::AtomicBool>,
    /// A person's MFA code, and what they are asked.
    prompter: Prompter,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("settings", &self.settings)
            .field("entries", &self.lock_entries().len())
            .finish_non_exhaustive()
    }
}

/// The engine. Cheap to clone; every clone is the same engine.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
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
                user_name: Mutex::default(),
                entries: Mutex::default(),
                budget,
                in_flight: InFlight::new(MAX_IN_FLIGHT),
                jitter: Mutex::new(jitter),
                wake: Notify::new(),
                runtime: tokio::runtime::Handle::current(),
                settings,
                liveness: OnceLock::new(),
                holders_checked: Mutex::new(None),
                everyone_waits: Arc::new(std::sync::atomic::AtomicBool::new(true)),
                prompter: Prompter::default(),
            }),
        }
    }

    /// Tells the engine how to know whether a workload that used a role is
    /// still there: its entry is kept and refreshed while one lives. Set
    /// once; later calls are ignored.
    pub fn set_liveness(&self, liveness: Liveness) {
        let _ = self.inner.liveness.set(liveness);
    }

    /// Runs the scheduler forever: starts what is due, sleeps until the
    /// next thing is due (at most 30 s, so a stepped wall clock is noticed)
    /// or a fetch ends. It never waits for a fetch: a slow STS, or a long
    /// queue for the budget, delays only the calls in it.
    pub async fn run(self) {
        loop {
            let (next, _started) = self.start_due();
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

    /// What the scheduler does once, waiting for the fetches it started
    /// (tests): returns when the next fetch is due.
    pub async fn run_due(&self) -> SystemTime {
        let (next, started) = self.start_due();
        for fetch in started {
            let _ = fetch.await;
        }
        next
    }

    /// Starts every fetch whose refresh or retry is due, drops the entries
    /// nothing keeps (`EntryState::keeps`), and says when the next fetch is
    /// due.
    fn start_due(&self) -> (SystemTime, Vec<tokio::task::JoinHandle<()>>) {
        let now = self.inner.clock.now();
        let idle_ttl = self.inner.settings.idle_ttl;
        let mut next = now.wall + Duration::from_secs(30);
        let entries: Vec<Arc<Entry>> = self.inner.lock_entries().values().cloned().collect();
        if self.inner.holders_due(now.mono) {
            for entry in &entries {
                self.inner.check_holders(entry);
            }
        }
        let mut due = Vec::new();
        let mut gone = Vec::new();
        for entry in entries {
            let mut st = entry.lock();
            if !st.keeps(now.mono, idle_ttl) {
                drop(st);
                gone.push(entry);
                continue;
            }
            match st.next_fetch {
                // A fetch under way sets its next time when it ends.
                _ if st.fetching => {}
                Some(at) if at <= now.wall => {
                    st.fetching = true;
                    st.next_fetch = None;
                    drop(st);
                    due.push(entry);
                }
                Some(at) => next = next.min(at),
                None => {}
            }
        }
        if !gone.is_empty() {
            let mut map = self.inner.lock_entries();
            for entry in gone {
                // Still the same entry, and still unkept (a request may
                // have used it since).
                let same = map.get(&entry.role).is_some_and(|e| Arc::ptr_eq(e, &entry));
                if same && !entry.lock().keeps(now.mono, idle_ttl) {
                    map.remove(&entry.role);
                    entry
                        .abandoned
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    tracing::debug!(role = %entry.role.spec, session = ?entry.role.session.session_name, "credentials nobody uses any more: dropped");
                }
            }
        }
        let started = due
            .into_iter()
            .map(|entry| {
                self.inner
                    .runtime
                    .spawn(Arc::clone(&self.inner).fetch(entry))
            })
            .collect();
        (next, started)
    }

    /// Makes `roles` the roles to keep fresh ahead of need, each fetched
    /// now if it is not cached (`set_wanted_by_need` with every role live).
    pub fn set_wanted(&self, roles: impl IntoIterator<Item = Role>) {
        self.set_wanted_by_need(roles, std::iter::empty());
    }

    /// Makes `live` (roles of workloads that exist) and `foreseen` (roles
    /// an assignment names for workloads that may come) the roles to keep
    /// fresh ahead of need. One not cached is fetched: now if live; if only
    /// foreseen, after a random part of `prefetch_spread` (a request for it
    /// fetches it at once). Live ones go first when there are more than the
    /// cache takes. Any other role stays cached while workloads use it;
    /// `retain` drops roles at once.
    pub fn set_wanted_by_need(
        &self,
        live: impl IntoIterator<Item = Role>,
        foreseen: impl IntoIterator<Item = Role>,
    ) {
        // Half the cache at most: room stays for workloads no assignment
        // foresaw, however many cgroups a glob matches.
        let cap = (self.inner.settings.max_roles / 2).max(1);
        let mut wanted = std::collections::HashSet::new();
        let mut needed = std::collections::HashSet::new();
        let mut dropped = 0usize;
        let live = live.into_iter().map(|role| (role, true));
        let foreseen = foreseen.into_iter().map(|role| (role, false));
        for (role, is_live) in live.chain(foreseen) {
            if wanted.len() < cap {
                if is_live {
                    needed.insert(role.clone());
                }
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
        let mut spread = false;
        let now = self.inner.clock.now();
        let window = self.inner.settings.prefetch_spread;
        {
            let mut entries = self.inner.lock_entries();
            for (role, entry) in entries.iter() {
                if !wanted.contains(role) {
                    entry.lock().wanted = false;
                }
            }
            for role in wanted {
                let is_live = needed.contains(&role);
                let entry = entries
                    .entry(role.clone())
                    .or_insert_with(|| Arc::new(Entry::new(role, now.mono)));
                let mut st = entry.lock();
                st.wanted = true;
                // Never fetched, and not waiting for a retry.
                let first =
                    st.creds.is_none() && !st.fetching && (st.next_fetch.is_none() || st.spread);
                if first && (is_live || window.is_zero()) {
                    // Needed now (or no spread): fetched now, even if its
                    // spread fetch was set for later.
                    st.fetching = true;
                    st.next_fetch = None;
                    st.spread = false;
                    start.push(Arc::clone(entry));
                } else if first && st.next_fetch.is_none() {
                    st.next_fetch = Some(now.wall + window.mul_f64(self.inner.jitter()));
                    st.spread = true;
                    spread = true;
                }
            }
            // The wanted ones take room from the others, never beyond
            // the bound.
            while entries.len() > self.inner.settings.max_roles && make_room(&mut entries) {}
        }
        for entry in start {
            self.inner.spawn_fetch(entry);
        }
        if spread {
            // The scheduler learns of the new times.
            self.inner.wake.notify_one();
        }
    }

    /// Drops at once, credentials and all, every role for which `keep` is
    /// false: an assignment that was removed stops being served now, not
    /// when its credentials expire.
    pub fn retain(&self, keep: impl Fn(&Role) -> bool) {
        let mut dropped = Vec::new();
        self.inner.lock_entries().retain(|role, entry| {
            let kept = keep(role);
            if !kept {
                // A fetch still waiting for the budget gives up.
                entry
                    .abandoned
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                dropped.push((role.spec.to_string(), role.session.session_name.clone()));
            }
            kept
        });
        for (role, session_name) in dropped {
            tracing::info!(%role, ?session_name, "role no longer assigned: credentials dropped");
        }
    }
}

impl CredentialSource for Engine {
    fn lookup(&self, role: &Role, now: SystemTime) -> Lookup {
        // Entries are made by `prepare`, which knows who asks (their owner
        // takes turns for the fetch): a request whose entry went meanwhile
        // (a full cache) is told to come back.
        let (entry, full) = {
            let entries = self.inner.lock_entries();
            let full = entries.len() >= self.inner.settings.max_roles;
            (entries.get(role).cloned(), full)
        };
        let Some(entry) = entry else {
            return Lookup::Unavailable(if full {
                self.inner.cache_full(role, now)
            } else {
                being_fetched(role, now)
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
            st.next_fetch = None;
        }
        drop(st);
        if start {
            self.inner.spawn_fetch(Arc::clone(&entry));
        }
        Lookup::Unavailable(being_fetched(role, now))
    }

    fn prepare(&self, role: &Role, user: &User) -> Option<Changed> {
        let now = self.inner.clock.now();
        let entry = self.inner.entry_for(role, now.mono)?;
        let checkable = self.inner.liveness.get().is_some();
        let mut st = entry.lock();
        st.last_used = now.mono;
        st.note(user, checkable);
        // A role that failed for want of a person's code asks again: a
        // new request is a new chance for them to type it.
        let asks_again = st.needs_code && !self.inner.settings.mfa_prompt_wait.is_zero();
        if st.creds.as_ref().is_some_and(|c| c.expiration > now.wall)
            || (st.error.is_some() && !asks_again)
        {
            return None;
        }
        let start = !st.fetching;
        if start {
            st.fetching = true;
            st.next_fetch = None;
        }
        // Subscribed before the lock is let go: the fetch reports its end
        // only after it took the lock to store its answer.
        let mut fetched = entry.fetched.subscribe();
        // Its STS call goes before those nobody waits on.
        entry
            .waited
            .store(true, std::sync::atomic::Ordering::SeqCst);
        drop(st);
        if start {
            self.inner.spawn_fetch(entry);
        }
        Some(Box::pin(async move {
            let _ = fetched.changed().await;
        }))
    }

    fn served_name<'a>(&self, role: &'a Role) -> std::borrow::Cow<'a, str> {
        if !role.spec.names_user() {
            return std::borrow::Cow::Borrowed(&role.name);
        }
        // The last name known, even from before a profile switch: the
        // listing does not flip back to the template meanwhile.
        let known = self
            .inner
            .user_name
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match known.as_ref() {
            Some((_, user)) => std::borrow::Cow::Owned(role.spec.name_for(user)),
            None => std::borrow::Cow::Borrowed(&role.name),
        }
    }

    fn person_wait(&self) -> Duration {
        let wait = self.inner.settings.mfa_prompt_wait;
        let (needs_person, mode, generation) = {
            let base = self.inner.read_base();
            let identity = base.identity();
            let needs = identity.mfa.as_ref().is_some_and(|m| m.secret.is_none());
            (needs, identity.mode, base.generation)
        };
        if wait.is_zero() || !needs_person {
            return Duration::ZERO;
        }
        // A session open (and good for the next call) needs nobody; one
        // being opened (its lock is held: perhaps by a fetch waiting for
        // the code) may.
        let Ok(cache) = self.inner.session.try_lock() else {
            return wait;
        };
        let now = self.inner.clock.now().wall;
        let open = cache.generation == generation
            && cache
                .issued
                .as_ref()
                .is_some_and(|s| self.inner.reusable(mode, s, cache.obtained, now));
        if open { Duration::ZERO } else { wait }
    }
}

/// What a request for credentials still being fetched is answered.
fn being_fetched(role: &Role, now: SystemTime) -> Unavailable {
    Unavailable {
        code: "ServiceUnavailable".into(),
        message: format!(
            "credentials for {} are being fetched; retry shortly",
            role.spec
        ),
        last_updated: now,
    }
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

    /// The entry for `role`, created (its first fetch started by the
    /// caller) if missing. A full cache makes room (`make_room`); `None`
    /// when every entry is wanted.
    fn entry_for(&self, role: &Role, now: Duration) -> Option<Arc<Entry>> {
        let mut entries = self.lock_entries();
        if let Some(entry) = entries.get(role) {
            return Some(Arc::clone(entry));
        }
        if entries.len() >= self.settings.max_roles && !make_room(&mut entries) {
            return None;
        }
        let entry = Arc::new(Entry::new(role.clone(), now));
        entries.insert(role.clone(), Arc::clone(&entry));
        Some(entry)
    }

    fn cache_full(&self, role: &Role, now: SystemTime) -> Unavailable {
        Unavailable {
            code: "ServiceUnavailable".into(),
            message: format!(
                "the agent caches at most {} roles, all assigned; {} is not one of them",
                self.settings.max_roles, role.spec
            ),
            last_updated: now,
        }
    }

    /// Whether holders are due for a look at monotonic time `now`.
    fn holders_due(&self, now: Duration) -> bool {
        let mut last = self
            .holders_checked
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| now.saturating_sub(at) < HOLDER_CHECK_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Forgets the holders of `entry` that are gone. The liveness check
    /// runs without the entry's lock (it reads the cgroup index and the
    /// container registry).
    fn check_holders(&self, entry: &Entry) {
        let Some(alive) = self.liveness.get() else {
            return;
        };
        let holders = entry.lock().holders.clone();
        let dead: Vec<Holder> = holders.into_iter().filter(|h| !alive(h)).collect();
        let mut st = entry.lock();
        st.holders.retain(|h| !dead.contains(h));
        st.live = !st.holders.is_empty();
    }
}

#[cfg(test)]
mod tests;
