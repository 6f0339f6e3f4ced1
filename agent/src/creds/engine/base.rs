//! The agent's own credentials, which every STS call is made with: the
//! standard chain, keys posted to the admin socket (bootstrap), or one of
//! the configured profiles, switchable at run time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;

use crate::creds::mfa::{MfaCode, TotpSecret};
use crate::creds::sts::BaseCreds;
use crate::creds::{Keys, Role};

/// What STS is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `AssumeRole` of each workload's role.
    AssumeRole,
    /// `GetSessionToken` of the agent's own identity, served to every
    /// workload that has a role (a developer's machine).
    SessionToken,
    /// The agent's own session as it is (Roles Anywhere's), served to
    /// every workload that has a role: a host with one role.
    Direct,
}

impl Mode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::AssumeRole => "assume-role",
            Mode::SessionToken => "session-token",
            Mode::Direct => "direct",
        }
    }
}

/// An MFA device and where its codes come from.
#[derive(Debug, Clone)]
pub struct MfaSettings {
    /// The device's serial number or ARN.
    pub serial: String,
    /// A stored TOTP secret; without it a person hands codes in.
    pub secret: Option<TotpSecret>,
}

/// The settings that a profile may set and the engine defaults otherwise.
#[derive(Debug, Clone)]
pub struct Identity {
    /// STS's region.
    pub region: String,
    /// `AssumeRole` or `GetSessionToken`.
    pub mode: Mode,
    /// Session duration when the assignment names none.
    pub duration: Duration,
    /// `ExternalId` when the assignment names none.
    pub external_id: Option<String>,
    /// MFA, if the identity needs it.
    pub mfa: Option<MfaSettings>,
    /// How long an MFA session lasts (`GetSessionToken` with MFA, used as
    /// the base of every `AssumeRole` so that a code is needed once per
    /// session, not once per role).
    pub mfa_session: Duration,
}

/// A named profile: its own keys and settings, and optionally the role its
/// workloads get while it is active.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The keys.
    pub keys: Keys,
    /// Its settings.
    pub identity: Identity,
    /// The role every workload gets while this profile is active (replaces
    /// the default role).
    pub role: Option<Arc<Role>>,
}

/// Where the agent's own credentials come from.
#[derive(Debug, Clone)]
pub enum BaseConfig {
    /// The standard chain.
    Chain {
        /// The resolved provider.
        provider: SharedCredentialsProvider,
        /// Settings.
        identity: Identity,
    },
    /// IAM Roles Anywhere: sessions from the host's certificate.
    RolesAnywhere {
        /// The provider.
        provider: crate::creds::roles_anywhere::provider::RolesAnywhere,
        /// Settings.
        identity: Identity,
        /// The certificate's file, for status and logs.
        certificate: String,
    },
    /// Keys posted to the admin socket; none until then.
    Bootstrap {
        /// Settings.
        identity: Identity,
    },
    /// Named profiles, one active.
    Profiles {
        /// All of them.
        profiles: BTreeMap<String, Profile>,
        /// The one active at start.
        active: String,
    },
}

/// The base as it is now.
#[derive(Debug, Clone)]
pub(crate) struct BaseState {
    pub(crate) config: BaseConfig,
    /// The credentials, when known.
    pub(crate) creds: Option<BaseCreds>,
    /// The active profile (profiles only).
    pub(crate) profile: Option<String>,
    /// Bumped whenever the base changes: everything cached under an older
    /// generation is discarded.
    pub(crate) generation: u64,
    /// The generation the active profile (and so perhaps the account)
    /// took over at: credentials from before it are another identity's,
    /// never served on its behalf once it fails to replace them.
    pub(crate) profile_generation: u64,
    /// A code a person handed in and no call has used yet.
    pub(crate) mfa_code: Option<MfaCode>,
    /// The TOTP step whose code was last used: AWS refuses a code twice.
    pub(crate) last_totp_step: Option<u64>,
}

impl BaseState {
    pub(crate) fn new(config: BaseConfig) -> Self {
        let (creds, profile) = match &config {
            BaseConfig::Chain { provider, .. } => (Some(BaseCreds::Chain(provider.clone())), None),
            BaseConfig::RolesAnywhere { provider, .. } => (
                Some(BaseCreds::Chain(SharedCredentialsProvider::new(
                    provider.clone(),
                ))),
                None,
            ),
            BaseConfig::Bootstrap { .. } => (None, None),
            BaseConfig::Profiles { profiles, active } => (
                profiles
                    .get(active)
                    .map(|p| BaseCreds::Keys(Arc::new(p.keys.clone()))),
                Some(active.clone()),
            ),
        };
        Self {
            config,
            creds,
            profile,
            generation: 1,
            profile_generation: 1,
            mfa_code: None,
            last_totp_step: None,
        }
    }

    /// The settings in force.
    pub(crate) fn identity(&self) -> &Identity {
        match &self.config {
            BaseConfig::Chain { identity, .. }
            | BaseConfig::RolesAnywhere { identity, .. }
            | BaseConfig::Bootstrap { identity } => identity,
            BaseConfig::Profiles { profiles, active } => {
                let name = self.profile.as_ref().unwrap_or(active);
                // Safe: `profile` only ever names a configured profile, and
                // the config checks that `active` does.
                &profiles
                    .get(name)
                    .or_else(|| profiles.values().next())
                    .expect("profiles are never empty")
                    .identity
            }
        }
    }

    /// The active profile's role, if it sets one.
    pub(crate) fn profile_role(&self) -> Option<&Arc<Role>> {
        match (&self.config, &self.profile) {
            (BaseConfig::Profiles { profiles, .. }, Some(name)) => {
                profiles.get(name)?.role.as_ref()
            }
            _ => None,
        }
    }

    /// How the base is described in status and logs.
    pub(crate) fn describe(&self) -> String {
        match (&self.config, &self.creds) {
            (BaseConfig::Chain { .. }, _) => "the standard credential chain".to_owned(),
            (BaseConfig::RolesAnywhere { certificate, .. }, _) => {
                format!("IAM Roles Anywhere ({certificate})")
            }
            (BaseConfig::Bootstrap { .. }, None) => {
                "bootstrap (waiting for credentials)".to_owned()
            }
            (BaseConfig::Bootstrap { .. }, Some(creds)) => format!("bootstrap ({creds:?})"),
            (BaseConfig::Profiles { .. }, _) => {
                format!("profile {}", self.profile.as_deref().unwrap_or("?"))
            }
        }
    }
}
