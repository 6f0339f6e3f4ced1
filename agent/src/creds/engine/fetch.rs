//! One fetch of one role: the calls to STS it takes (the account, the
//! shared session, `AssumeRole`), and what its answer does to the entry.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::base::{Identity, MfaSettings, Mode};
use super::budget::Lane;
use super::entry::{Entry, EntryState, session_name_of};
use super::prompt::{CodeOutcome, MfaPrompt, Reply};
use super::schedule::{
    SDK_REFRESH_WINDOW, effective_keep, jitter_spread, refresh_at, refresh_slack, retry_after,
    retry_at,
};
use super::{Inner, SessionCache};
use crate::clock::Now;
use crate::creds::mfa::{MfaCode, TotpSecret};
use crate::creds::session_name;
use crate::creds::sts::{AssumeRoleRequest, BaseCreds, Issued, Mfa, StsError};
use crate::creds::{Credentials, Role, RoleError, Unavailable};
use crate::timefmt::iso8601;

/// Credentials that expire sooner than this after they arrive are not
/// served: the host's clock is wrong, or STS is.
const LEAST_LIFE_ON_ARRIVAL: Duration = Duration::from_secs(60);

/// Why the engine could not get credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum FetchError {
    #[error("the agent has no credentials of its own yet: post them with `imds-agent bootstrap`")]
    NoBase,
    #[error("an MFA code is needed: run `imds-agent mfa` or enter it on the /manage page")]
    MfaRequired,
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error(transparent)]
    Sts(#[from] StsError),
    #[error(
        "STS issued credentials expiring at {0}, less than a minute from now by this host's clock: is the clock right?"
    )]
    ExpiredOnArrival(String),
    #[error("the role left the cache before STS was asked")]
    Abandoned,
}

impl FetchError {
    fn is_transient(&self) -> bool {
        match self {
            FetchError::Sts(e) => e.is_transient(),
            FetchError::ExpiredOnArrival(_) => true,
            _ => false,
        }
    }

    /// The `Code` and `Message` served while a role has nothing better.
    /// The workload learns what to do, not how the agent reaches STS: the
    /// endpoint, the HTTP stack's errors and STS's wording (which names
    /// the agent's own identity) stay in the agent's log.
    fn unavailable(&self, arn: &str, at: SystemTime) -> Unavailable {
        let (code, message) = match self {
            FetchError::Sts(StsError::Throttled(_) | StsError::Unavailable(_))
            | FetchError::ExpiredOnArrival(_) => (
                "ServiceUnavailable",
                format!(
                    "STS could not issue credentials for {arn} just now; the agent retries (its log says why)"
                ),
            ),
            FetchError::Sts(StsError::Refused { code, .. }) => (
                "AssumeRoleUnauthorizedAccess",
                format!(
                    "STS refused credentials for {arn}: {code} (the agent's log has STS's message)"
                ),
            ),
            FetchError::Sts(_) => (
                "AssumeRoleUnauthorizedAccess",
                format!("STS could not issue credentials for {arn} (the agent's log says why)"),
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

/// What a fetch got: the credentials and when they were obtained (a shared
/// session token may be older than this fetch).
type Fetched = (Issued, SystemTime);

/// Who a fetch is for, as far as a person's MFA code goes: only a fetch a
/// request waits on may wait for one, and not once a wait ran out since it
/// was asked (its request gave up with that one).
#[derive(Debug, Clone, Copy)]
pub(super) struct Asker<'a> {
    /// Set while a request waits on the fetch.
    pub(super) waited: Option<&'a std::sync::atomic::AtomicBool>,
    /// When the fetch was asked for.
    pub(super) asked: tokio::time::Instant,
    /// The role fetched, as the person is shown it.
    pub(super) role: Option<&'a str>,
}

impl Asker<'_> {
    /// Nobody waits: a code is used if one was handed in, never waited for.
    pub(super) fn nobody() -> Asker<'static> {
        Asker {
            waited: None,
            asked: tokio::time::Instant::now(),
            role: None,
        }
    }

    fn waits(&self) -> bool {
        self.waited
            .is_some_and(|w| w.load(std::sync::atomic::Ordering::SeqCst))
    }
}

impl Inner {
    pub(super) fn spawn_fetch(self: &Arc<Self>, entry: Arc<Entry>) {
        self.runtime.spawn(Arc::clone(self).fetch(entry));
    }

    /// One fetch of `entry` (whose `fetching` flag the caller set).
    pub(super) async fn fetch(self: Arc<Self>, entry: Arc<Entry>) {
        let (generation, profile_generation, profile) = {
            let base = self.read_base();
            (
                base.generation,
                base.profile_generation,
                base.profile.clone(),
            )
        };
        let session_name = session_name_of(&entry.role, &self.settings, profile.as_deref());
        let arn_shown = entry.role.spec.to_string();
        let started = self.clock.now();
        let lane = {
            let st = entry.lock();
            if st.wanted {
                Lane::Wanted
            } else {
                Lane::OnDemand(st.owner.clone())
            }
        };
        let asker = Asker {
            waited: Some(&entry.waited),
            asked: tokio::time::Instant::now(),
            role: Some(&arn_shown),
        };
        let result = self
            .issue(&entry, &session_name, generation, &lane, asker)
            .await;
        let now = self.clock.now();
        let result = result.and_then(|(issued, obtained)| {
            if issued.expiration <= now.wall + LEAST_LIFE_ON_ARRIVAL {
                Err(FetchError::ExpiredOnArrival(iso8601(issued.expiration)))
            } else {
                Ok((issued, obtained))
            }
        });
        let arn = self.arn_for_log(&entry.role);
        let stale = {
            let mut st = entry.lock();
            st.spread = false;
            // Looked at under the entry's lock: a rotation or a cleared
            // session bumps the generation before it takes entries' locks,
            // so an answer for the old identity is never stored after it.
            let stale = self.read_base().generation != generation;
            st.fetching = false;
            entry
                .waited
                .store(false, std::sync::atomic::Ordering::SeqCst);
            if stale {
                // The base changed while STS answered: this answer belongs
                // to the old identity. Fetch again as the new one (what
                // the entry has is served until then).
                st.next_fetch = Some(now.wall);
            } else {
                match &result {
                    Ok(fetched) => self.store(&mut st, fetched, generation, &arn, now),
                    Err(error) => {
                        let generations = (generation, profile_generation);
                        self.failed(&mut st, error, generations, &arn, now);
                    }
                }
            }
            stale
        };
        entry.fetched.send_modify(|n| *n += 1);
        self.wake.notify_one();
        let latency_ms = now.mono.saturating_sub(started.mono).as_millis() as u64;
        match (&result, stale) {
            (_, true) => {
                tracing::debug!(role = %arn, session = %session_name, "discarded an answer for a previous identity")
            }
            (Ok((issued, _)), false) => tracing::info!(
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

    fn store(&self, st: &mut EntryState, fetched: &Fetched, generation: u64, arn: &str, now: Now) {
        let (issued, obtained) = fetched;
        let obtained = (*obtained).min(now.wall);
        st.creds = Some(Credentials {
            keys: Arc::new(issued.keys.clone()),
            last_updated: obtained,
            expiration: issued.expiration,
            account_id: issued.account_id.as_deref().map(Arc::from),
            rendered: Default::default(),
        });
        st.creds_generation = generation;
        st.error = None;
        st.error_detail = None;
        st.failures = 0;
        st.needs_code = false;
        let lifetime = issued
            .expiration
            .duration_since(obtained)
            .unwrap_or_default();
        let kept = effective_keep(self.settings.keep, lifetime);
        if kept < SDK_REFRESH_WINDOW && !st.warned_short {
            st.warned_short = true;
            tracing::warn!(
                role = %arn,
                lifetime_seconds = lifetime.as_secs(),
                kept_seconds = kept.as_secs(),
                "credentials that last under 30 minutes are served with under 15 minutes left: SDKs refresh them on every call (use duration_seconds of 1800 or more)"
            );
        }
        st.next_fetch = Some(refresh_at(
            obtained,
            issued.expiration,
            self.settings.keep,
            self.jitter(),
        ));
    }

    /// Records a failed fetch made under base generation `generation`,
    /// the active profile having taken over at `profile_generation`.
    fn failed(
        &self,
        st: &mut EntryState,
        error: &FetchError,
        (generation, profile_generation): (u64, u64),
        arn: &str,
        now: Now,
    ) {
        st.failures += 1;
        st.needs_code = *error == FetchError::MfaRequired;
        st.error = Some(error.unavailable(arn, now.wall));
        st.error_detail = Some(error.to_string());
        // What an earlier identity fetched is served until the new one has
        // replaced it, not on the new one's behalf: dropped when the new
        // identity is refused the role, and after a profile switch on any
        // failure (the old profile may be another account). New bootstrap
        // keys of the same identity that meet an outage keep serving it,
        // as any refresh does.
        let earlier = st.creds_generation != generation;
        let other_profile = st.creds_generation < profile_generation;
        if earlier && (!error.is_transient() || other_profile) {
            st.creds = None;
        }
        let wait = retry_after(
            st.failures,
            error.is_transient(),
            self.settings.error_ttl,
            self.settings.max_backoff,
            self.jitter(),
        );
        let valid_until = st.creds.as_ref().map(|c| c.expiration);
        st.next_fetch = Some(retry_at(now.wall, wait, valid_until));
    }

    pub(super) fn arn_for_log(&self, role: &Role) -> String {
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
        lane: &Lane,
        asker: Asker<'_>,
    ) -> Result<Fetched, FetchError> {
        let role = &entry.role;
        let (base, identity) = {
            let b = self.read_base();
            // Read with the identity: a code handed in under `generation`
            // is never sent with another profile's device.
            if b.generation != generation {
                return Err(FetchError::Abandoned);
            }
            (b.creds.clone(), b.identity().clone())
        };
        let base = base.ok_or(FetchError::NoBase)?;
        match identity.mode {
            Mode::SessionToken | Mode::Direct => {
                self.session(&base, &identity, generation, asker).await
            }
            Mode::AssumeRole => {
                let arn = self.role_arn(role, &base, generation).await?;
                let caller = match identity.mfa {
                    Some(_) => BaseCreds::Keys(Arc::new(
                        self.session(&base, &identity, generation, asker)
                            .await?
                            .0
                            .keys,
                    )),
                    None => base,
                };
                let request = self.assume_role_request(role, arn, session_name, &identity);
                // An entry dropped while it waited for its owner's turn
                // costs the budget nothing.
                let _turn = self
                    .budget
                    .acquire(lane, &entry.abandoned)
                    .await
                    .ok_or(FetchError::Abandoned)?;
                let _slot = self
                    .in_flight
                    .enter(&entry.waited, matches!(lane, Lane::Wanted))
                    .await;
                if entry.abandoned.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(FetchError::Abandoned);
                }
                let issued = self
                    .sts
                    .assume_role(&caller, &identity.region, &request, None)
                    .await?;
                Ok((issued, self.clock.now().wall))
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
    /// account, else in the account of the agent's own credentials. A name
    /// with `${aws:username}` takes the agent's own user name.
    async fn role_arn(
        &self,
        role: &Role,
        base: &BaseCreds,
        generation: u64,
    ) -> Result<String, FetchError> {
        let partition = &self.settings.default_partition;
        let configured =
            role.spec.account_id().is_some() || self.settings.default_account.is_some();
        if configured && !role.spec.names_user() {
            return Ok(role
                .spec
                .arn(self.settings.default_account.as_deref(), partition)?);
        }
        let (account, caller) = self.caller(base, generation).await?;
        let spec = role.spec.for_caller(&caller)?;
        let default_account = self.settings.default_account.as_deref().unwrap_or(&account);
        Ok(spec.arn(Some(default_account), partition)?)
    }

    /// The account and ARN of the agent's own credentials, asked once per
    /// generation.
    async fn caller(
        &self,
        base: &BaseCreds,
        generation: u64,
    ) -> Result<(String, String), FetchError> {
        let mut known = self.account.lock().await;
        if let Some((g, account, arn)) = known.as_ref()
            && *g == generation
        {
            return Ok((account.clone(), arn.clone()));
        }
        let region = self.read_base().identity().region.clone();
        // Every role waits for this one call: it goes first.
        let _turn = self.budget.acquire_wanted().await;
        let _slot = self.in_flight.enter(&self.everyone_waits, true).await;
        let who = self.sts.get_caller_identity(base, &region).await?;
        tracing::info!(account = %who.account, arn = %who.arn, "the agent's own identity");
        *known = Some((generation, who.account.clone(), who.arn.clone()));
        if let Some(name) = crate::creds::role::user_name(&who.arn) {
            let mut known = self.user_name.lock().unwrap_or_else(|e| e.into_inner());
            // A slower answer for an older identity does not overwrite.
            if known.as_ref().is_none_or(|(g, _)| *g <= generation) {
                *known = Some((generation, name.to_owned()));
            }
        }
        Ok((who.account, who.arn))
    }

    /// The shared session: the MFA session (`AssumeRole` mode) or the
    /// served session token (`SessionToken` mode). One call at a time:
    /// concurrent fetches wait for it and share its answer.
    async fn session(
        &self,
        base: &BaseCreds,
        identity: &Identity,
        generation: u64,
        asker: Asker<'_>,
    ) -> Result<Fetched, FetchError> {
        let mut cache = self.session.lock().await;
        let now = self.clock.now().wall;
        if cache.generation == generation
            && let Some(issued) = cache
                .issued
                .as_ref()
                .filter(|s| self.reusable(identity.mode, s, cache.obtained, now))
        {
            return Ok((issued.clone(), cache.obtained));
        }
        self.open_session(&mut cache, base, identity, generation, asker)
            .await
    }

    /// Opens the shared session (the caller holds its lock) and caches it.
    /// With a person's code to wait for, concurrent fetches wait behind
    /// this one's lock and share the session it opens; a code STS refuses
    /// is answered and another is waited for, until the wait runs out.
    async fn open_session(
        &self,
        cache: &mut SessionCache,
        base: &BaseCreds,
        identity: &Identity,
        generation: u64,
        asker: Asker<'_>,
    ) -> Result<Fetched, FetchError> {
        let duration = match identity.mode {
            Mode::AssumeRole => identity.mfa_session,
            Mode::SessionToken | Mode::Direct => identity.duration,
        };
        let deadline = tokio::time::Instant::now() + self.settings.mfa_prompt_wait;
        loop {
            let (mfa, mut reply) = match &identity.mfa {
                Some(settings) => {
                    let (mfa, reply) = self.mfa(settings, generation, asker, deadline).await?;
                    (Some(mfa), reply)
                }
                None => (None, Reply::default()),
            };
            // Every role waits for the shared session: it goes first.
            let turn = self.budget.acquire_wanted().await;
            let slot = self.in_flight.enter(&self.everyone_waits, true).await;
            let issued = match identity.mode {
                Mode::Direct => own_session(base).await,
                _ => {
                    self.sts
                        .get_session_token(base, &identity.region, duration, mfa.as_ref())
                        .await
                }
            };
            drop((slot, turn));
            let issued = match issued {
                Ok(issued) => issued,
                Err(error) => {
                    let refused = matches!(error, StsError::Refused { .. });
                    let persons = reply.is_a_persons();
                    reply.send(if refused {
                        CodeOutcome::Refused(error.to_string())
                    } else {
                        CodeOutcome::Failed(error.to_string())
                    });
                    // A request still waits: the prompt stays, saying why
                    // (whoever sent the code was told already).
                    if refused && persons && asker.waits() && tokio::time::Instant::now() < deadline
                    {
                        self.prompter.refused(&error.to_string());
                        tracing::warn!(%error, "STS refused the MFA code handed in; waiting for another");
                        continue;
                    }
                    return Err(error.into());
                }
            };
            let obtained = self.clock.now().wall;
            tracing::info!(
                access_key_suffix = %issued.keys.key_suffix(),
                expiration = %iso8601(issued.expiration),
                mfa = mfa.is_some(),
                "STS issued a session token"
            );
            reply.send(CodeOutcome::Opened {
                expiration: issued.expiration,
                access_key_suffix: issued.keys.key_suffix().to_owned(),
            });
            if mfa.is_some() {
                self.prompter.opened();
            }
            *cache = SessionCache {
                generation,
                issued: Some(issued.clone()),
                obtained,
            };
            return Ok((issued, obtained));
        }
    }

    /// Opens the session with the MFA code a person handed in, unless a
    /// fetch took the code first. In `session-token` mode every role is
    /// then served the new session (no STS call: they share it).
    pub(super) async fn use_code_now(self: Arc<Self>) {
        let (base, identity, generation) = {
            let b = self.read_base();
            (b.creds.clone(), b.identity().clone(), b.generation)
        };
        // With a TOTP secret the agent makes its own codes.
        let Some(base) = base.filter(|_| identity.mfa.as_ref().is_some_and(|m| m.secret.is_none()))
        else {
            if let Some(mut handed) = self.prompter.take(generation) {
                handed
                    .reply
                    .send(CodeOutcome::Failed(FetchError::NoBase.to_string()));
            }
            return;
        };
        let mut cache = self.session.lock().await;
        if !self.prompter.has_code(generation) || self.read_base().generation != generation {
            return;
        }
        match self
            .open_session(&mut cache, &base, &identity, generation, Asker::nobody())
            .await
        {
            Ok(_) => {
                drop(cache);
                if identity.mode == Mode::SessionToken {
                    self.refresh_all();
                }
            }
            Err(error) => tracing::warn!(%error, "the MFA code handed in did not open a session"),
        }
    }

    /// Whether a cached session can be used at `now`. A served session
    /// token is refreshed like any credentials: reused while it has more
    /// left than it is refreshed at (with jitter and a minute to spare),
    /// so every role shares it until then. An MFA session only has to
    /// outlive the next call.
    pub(super) fn reusable(
        &self,
        mode: Mode,
        issued: &Issued,
        obtained: SystemTime,
        now: SystemTime,
    ) -> bool {
        let margin = match mode {
            Mode::SessionToken | Mode::Direct => {
                let lifetime = issued
                    .expiration
                    .duration_since(obtained)
                    .unwrap_or_default();
                effective_keep(self.settings.keep, lifetime)
                    + refresh_slack(lifetime)
                    + jitter_spread(lifetime)
                    + Duration::from_secs(60)
            }
            Mode::AssumeRole => Duration::from_secs(300),
        };
        issued.expiration > now + margin
    }

    /// An MFA code: from the TOTP secret (never the same step twice: AWS
    /// refuses a reused code), else the one a person handed in, else one
    /// waited for until `deadline` when a request waits (the prompt).
    async fn mfa(
        &self,
        settings: &MfaSettings,
        generation: u64,
        asker: Asker<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<(Mfa, Reply), FetchError> {
        let mfa = |code| Mfa {
            serial: settings.serial.clone(),
            code,
        };
        if let Some(secret) = &settings.secret {
            return Ok((mfa(self.totp_code(secret).await), Reply::default()));
        }
        if let Some(handed) = self.prompter.take(generation) {
            return Ok((mfa(handed.code), handed.reply));
        }
        let asking = MfaPrompt {
            serial: Some(settings.serial.clone()),
            profile: self.read_base().profile.clone(),
            role: asker.role.map(str::to_owned),
            ..MfaPrompt::default()
        };
        if !asker.waits() || self.settings.mfa_prompt_wait.is_zero() {
            self.prompter.needed(asking);
            return Err(FetchError::MfaRequired);
        }
        tracing::info!(serial = %settings.serial, wait_seconds = self.settings.mfa_prompt_wait.as_secs(), "a request waits for an MFA code");
        match self
            .prompter
            .wait(generation, asker.asked, deadline, asking)
            .await
        {
            Some(handed) => Ok((mfa(handed.code), handed.reply)),
            None => Err(FetchError::MfaRequired),
        }
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
                % crate::creds::mfa::STEP_SECONDS;
            tokio::time::sleep(Duration::from_secs(
                crate::creds::mfa::STEP_SECONDS - into_step,
            ))
            .await;
        }
    }
}

/// How long the base's own session may take to come.
const OWN_SESSION_TIMEOUT: Duration = Duration::from_secs(30);

/// The base's own session, as its provider gives it (`mode = "direct"`).
async fn own_session(base: &BaseCreds) -> Result<Issued, StsError> {
    use aws_credential_types::provider::ProvideCredentials as _;
    let BaseCreds::Chain(provider) = base else {
        return Err(StsError::NoCredentials(
            "\"direct\" serves a provider's session, and the agent holds fixed keys".into(),
        ));
    };
    // The provider bounds its own calls; this bounds whatever it is, so
    // the shared session (and every role waiting on it) can't hang.
    let creds = tokio::time::timeout(OWN_SESSION_TIMEOUT, provider.provide_credentials())
        .await
        .map_err(|_| {
            StsError::Unavailable(format!(
                "the agent's own credentials took over {OWN_SESSION_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| {
            let text = crate::creds::source_chain(&e);
            match crate::creds::source_failure(&e) {
                Some(crate::creds::SourceFailure::Outage) => StsError::Unavailable(text),
                _ => StsError::NoCredentials(text),
            }
        })?;
    let expiration = creds.expiry().ok_or_else(|| {
        StsError::NoCredentials(
            "the agent's own credentials do not expire: nothing to serve".into(),
        )
    })?;
    Ok(Issued {
        keys: crate::creds::Keys {
            access_key_id: creds.access_key_id().to_owned(),
            secret_access_key: crate::creds::Secret::new(creds.secret_access_key()),
            session_token: crate::creds::Secret::new(creds.session_token().unwrap_or_default()),
        },
        expiration,
        account_id: creds.account_id().map(|a| a.as_str().to_owned()),
    })
}
