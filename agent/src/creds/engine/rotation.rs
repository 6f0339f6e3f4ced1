//! Changes to the agent's own identity while it runs: bootstrap keys
//! posted, a profile switched to, an MFA code handed in, a session
//! cleared, every role refreshed. Each bumps the base's generation (so
//! nothing fetched as the old identity is stored after it) and fetches
//! the cached roles again.

use std::sync::Arc;

use super::base::BaseError;
use super::entry::EntryState;
use super::prompt::{CodeOutcome, HandedCode, MfaPrompt, Reply};
use super::{Engine, Inner, SessionCache};
use crate::creds::mfa::MfaCode;
use crate::creds::{Keys, Role};

impl Engine {
    /// Changes whenever the agent's own identity does (bootstrap, profile
    /// switch, session cleared).
    pub fn base_generation(&self) -> u64 {
        self.inner.read_base().generation
    }

    /// The role the active profile gives every workload, if it names one.
    pub fn profile_role(&self) -> Option<Arc<Role>> {
        self.inner.read_base().profile_role().cloned()
    }

    /// Replaces the agent's own credentials with `keys` (bootstrap). Every
    /// cached role is fetched again with the new keys, and what is cached
    /// is served until then.
    pub fn bootstrap(&self, keys: Keys) -> Result<(), BaseError> {
        let suffix = keys.key_suffix().to_owned();
        let generation = {
            let mut base = self.inner.write_base();
            base.creds = Some(base.base.accept_keys(keys)?);
            base.generation += 1;
            base.generation
        };
        self.inner.prompter.discard(generation);
        tracing::info!(access_key_suffix = %suffix, "bootstrap credentials received");
        self.inner.rotate();
        Ok(())
    }

    /// Switches to profile `name`. Roles no assignment names any more
    /// (`assigned`, asked once the switch is made: the profile's own role
    /// may change) are dropped at once; every other cached role is fetched
    /// again as the new profile and served as cached until then (unless the
    /// new profile is refused it). `wanted` gives the roles to prefetch as
    /// the new profile.
    pub fn use_profile(
        &self,
        name: &str,
        assigned: impl Fn(&Role) -> bool,
        wanted: impl FnOnce() -> Vec<Role>,
    ) -> Result<(), BaseError> {
        let generation = {
            let mut base = self.inner.write_base();
            base.creds = Some(base.base.switch_to(name)?);
            base.profile = Some(name.to_owned());
            base.generation += 1;
            base.profile_generation = base.generation;
            base.generation
        };
        self.inner.prompter.discard(generation);
        tracing::info!(profile = name, "switched profile");
        self.retain(assigned);
        self.inner.rotate();
        self.set_wanted(wanted());
        Ok(())
    }

    /// Takes an MFA code a person handed in and uses it at once: a fetch
    /// waiting for it (a request waits) takes it; otherwise the session is
    /// opened with it now (one call), and every role whose last fetch
    /// failed, or that has nothing, is fetched again with it. The receiver
    /// says what became of it.
    pub fn submit_code(
        &self,
        code: MfaCode,
    ) -> Result<tokio::sync::oneshot::Receiver<CodeOutcome>, BaseError> {
        let generation = {
            let base = self.inner.read_base();
            match &base.identity().mfa {
                None => return Err(BaseError::NoMfa),
                // The agent makes its own codes: one typed in would be
                // silently ignored.
                Some(mfa) if mfa.secret.is_some() => return Err(BaseError::StoredSecret),
                Some(_) => {}
            }
            base.generation
        };
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let handed = HandedCode {
            code,
            generation,
            reply: Reply::to(reply),
        };
        tracing::info!("MFA code received");
        // A fetch waiting for it opens the session with it; if none is,
        // or the one waiting gives up before taking it, `use_code_now`
        // does (once the session's lock is free, if the code is still
        // there). Roles that failed for want of it are fetched again.
        self.inner.prompter.hand(handed);
        self.inner.retry_failed();
        // Whatever did not take the code (every role still had valid
        // credentials) opens the session with it now: a code kept for
        // later would be stale when the session runs out.
        self.inner
            .runtime
            .spawn(Arc::clone(&self.inner).use_code_now());
        Ok(outcome)
    }

    /// `submit_code`, without waiting to hear what became of the code.
    pub fn mfa_code(&self, code: MfaCode) -> Result<(), BaseError> {
        self.submit_code(code).map(drop)
    }

    /// What the person is asked now.
    pub fn mfa_prompt(&self) -> MfaPrompt {
        self.inner.prompter.current()
    }

    /// Follows what the person is asked (notifiers, the page).
    pub fn watch_mfa_prompt(&self) -> tokio::sync::watch::Receiver<MfaPrompt> {
        self.inner.prompter.watch()
    }

    /// Refreshes every cached role now, keeping what is cached until the new
    /// credentials arrive (or serving it on if STS fails).
    pub fn refresh_all(&self) {
        self.inner.refresh_all();
    }

    /// Discards the MFA session or session token, and every credential
    /// fetched with it: the next fetch opens a new session (a person logs
    /// out; nothing of the old session is served).
    pub async fn clear_session(&self) {
        let generation = {
            let mut base = self.inner.write_base();
            // A provider's cached session goes too (a revoked one would
            // otherwise be used until it expires).
            if let Some(renewed) = base.base.renewed() {
                base.creds = Some(renewed);
            }
            base.generation += 1;
            base.generation
        };
        // Dropped before the session's lock is waited for (a session call
        // may hold it for seconds, a wait for a person's code longer: it
        // ends now): the new generation already keeps a call under way
        // from storing what it gets.
        self.inner.prompter.discard(generation);
        self.inner.flush();
        let mut session = self.inner.session.lock().await;
        // A fetch flush started may have opened the new session already.
        if session.generation < generation {
            *session = SessionCache::default();
        }
    }
}

impl Inner {
    /// After the base changed (bootstrap, profile switch): every entry is
    /// fetched again as the new identity, and serves what it has until
    /// then. Errors were the old identity's: they are forgotten (a request
    /// with nothing to serve waits for the new fetch).
    pub(super) fn rotate(self: &Arc<Self>) {
        // A fetch under way notices the change when it ends and fetches
        // again.
        self.refetch(|st| {
            st.forget_errors();
            true
        });
    }

    /// Discards every cached credential and error (the session they came
    /// from is gone), and fetches the wanted roles again.
    pub(super) fn flush(self: &Arc<Self>) {
        self.refetch(|st| {
            st.creds = None;
            st.forget_errors();
            st.wanted
        });
    }

    /// Fetches now every role that has nothing to serve or whose last fetch
    /// failed, and is not fetching.
    pub(super) fn retry_failed(self: &Arc<Self>) {
        self.refetch(|st| st.creds.is_none() || st.error.is_some());
    }

    /// Applies `change` to every entry, under its lock, and starts a fetch
    /// now of each for which it says so and that is not fetching already.
    fn refetch(self: &Arc<Self>, change: impl Fn(&mut EntryState) -> bool) {
        let mut start = Vec::new();
        for entry in self.lock_entries().values() {
            let mut st = entry.lock();
            if change(&mut st) && !st.fetching {
                st.fetching = true;
                st.next_fetch = None;
                start.push(Arc::clone(entry));
            }
        }
        for entry in start {
            self.spawn_fetch(entry);
        }
        self.wake.notify_one();
    }

    /// Makes every entry's refresh due now (what is cached is served until
    /// the new credentials arrive); a fetch under way is not repeated.
    pub(super) fn refresh_all(&self) {
        let now = self.clock.now().wall;
        for entry in self.lock_entries().values() {
            let mut st = entry.lock();
            if !st.fetching {
                st.next_fetch = Some(now);
            }
        }
        self.wake.notify_one();
    }
}
