//! What the engine reports: per role, per profile, and as a whole, for the
//! admin socket. Never a secret.

use std::sync::Arc;

use super::Engine;
use super::entry::Entry;
use crate::timefmt::iso8601;

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
    /// When the cached credentials expire (valid or not), in seconds
    /// since the epoch.
    pub expires_at: Option<u64>,
    /// The last access key id's last four characters.
    pub access_key_suffix: Option<String>,
    /// The last error, if the last fetch failed.
    pub error: Option<String>,
    /// A workload that is still there uses it (it is kept and refreshed
    /// for as long as that workload lives).
    pub in_use: bool,
    /// A fetch is under way.
    pub fetching: bool,
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
    /// When the MFA session (or the served session token) expires.
    pub mfa_session_expiration: Option<String>,
    /// Its access key id's last four characters.
    pub mfa_session_key_suffix: Option<String>,
    /// What a person is asked for (an MFA code), if anything.
    pub mfa_prompt: super::MfaPrompt,
    /// The Roles Anywhere certificate, with `base = "roles-anywhere"`.
    pub certificate: Option<crate::creds::roles_anywhere::provider::CertificateStatus>,
    /// Every cached role.
    pub roles: Vec<RoleStatus>,
}

/// How long `status` waits for the shared session's lock.
const SESSION_LOOK: std::time::Duration = std::time::Duration::from_millis(200);

impl Engine {
    /// What profile `name` is, without its secrets: `None` if there is no
    /// such profile.
    pub fn profile(&self, name: &str) -> Option<ProfileInfo> {
        let base = self.inner.read_base();
        let profile = base.base.profiles()?.get(name)?;
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
        match base.base.profiles() {
            Some(profiles) => (profiles.keys().cloned().collect(), base.profile.clone()),
            None => (Vec::new(), None),
        }
    }

    /// Whether every wanted role has valid credentials (what `status`
    /// reports as `ready`), without the rest of the status. A role whose
    /// first fetch waits for the prefetch spread counts as ready: no
    /// workload needs it yet, and a request fetches it at once.
    pub fn is_ready(&self) -> bool {
        let now = self.inner.clock.now().wall;
        self.inner
            .lock_entries()
            .values()
            .all(|e| !counts_against_readiness(&e.lock(), now))
    }

    /// Why the agent is not ready, one sentence each (empty: ready). Ready
    /// is: the agent has credentials of its own, its certificate (Roles
    /// Anywhere) gives it sessions, and every wanted role has valid
    /// credentials. For `/readyz`.
    pub async fn unready(&self) -> Vec<String> {
        let now = self.inner.clock.now().wall;
        let mut reasons = Vec::new();
        let certificate = {
            let b = self.inner.read_base();
            if b.creds.is_none() {
                reasons.push(format!(
                    "the agent has no credentials of its own yet ({})",
                    b.describe()
                ));
            }
            b.base.roles_anywhere().cloned()
        };
        if let Some(provider) = certificate {
            let status = provider.status(now).await;
            if status.expires_in_seconds == Some(0) {
                reasons.push(format!(
                    "the certificate {} has expired",
                    status.certificate
                ));
            } else if let Some(error) = status.error {
                reasons.push(format!("Roles Anywhere gives no session: {error}"));
            }
        }
        let settings = &self.inner.settings;
        let profile = self.inner.read_base().profile.clone();
        let entries: Vec<Arc<Entry>> = self.inner.lock_entries().values().cloned().collect();
        let mut roles: Vec<String> = entries
            .iter()
            .filter(|e| counts_against_readiness(&e.lock(), now))
            .map(|e| e.status(settings, profile.as_deref(), now))
            .filter(|r| !r.valid)
            .map(|r| match r.error {
                Some(error) => format!("role {} has no valid credentials: {error}", r.role),
                None => format!("role {} has no valid credentials yet", r.role),
            })
            .collect();
        roles.sort();
        reasons.extend(roles);
        reasons
    }

    /// The engine's state, for the admin socket.
    pub async fn status(&self) -> Status {
        let now = self.inner.clock.now().wall;
        let (base, profile, mode, mfa_serial, generation, certificate) = {
            let b = self.inner.read_base();
            let identity = b.identity();
            let certificate = b.base.roles_anywhere().cloned();
            (
                b.describe(),
                b.profile.clone(),
                identity.mode.as_str().to_owned(),
                identity.mfa.as_ref().map(|m| m.serial.clone()),
                b.generation,
                certificate,
            )
        };
        let certificate = match certificate {
            Some(provider) => Some(provider.status(now).await),
            None => None,
        };
        // The session's lock is held across its STS call, and while a
        // request waits for a person's code: status does not wait that out.
        let session = tokio::time::timeout(SESSION_LOOK, self.inner.session.lock()).await;
        let (mfa_session_expiration, mfa_session_key_suffix) = session
            .ok()
            .and_then(|session| {
                session
                    .issued
                    .as_ref()
                    .filter(|_| session.generation == generation)
                    .map(|s| (iso8601(s.expiration), s.keys.key_suffix().to_owned()))
            })
            .unzip();
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
            mfa_session_key_suffix,
            mfa_prompt: self.inner.prompter.current(),
            certificate,
            roles,
        }
    }
}

/// A wanted role without valid credentials, not just waiting for its
/// spread first fetch.
fn counts_against_readiness(st: &super::entry::EntryState, now: std::time::SystemTime) -> bool {
    let valid = st.creds.as_ref().is_some_and(|c| c.expiration > now);
    let spreading = st.spread && st.creds.is_none() && st.error.is_none();
    st.wanted && !valid && !spreading
}
