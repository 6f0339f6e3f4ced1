//! The agent's own credentials, which every STS call is made with. Each
//! kind of base is a module behind [`Base`]: the standard chain
//! (`chain`), keys posted to the admin socket (`bootstrap`), named
//! profiles switchable at run time (`profiles`), and IAM Roles Anywhere
//! sessions from the host's certificate (`roles_anywhere`). `state` is
//! what the engine keeps of the one in force.

mod bootstrap;
mod chain;
mod profiles;
mod roles_anywhere;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;

use crate::creds::mfa::TotpSecret;
use crate::creds::roles_anywhere::provider::RolesAnywhere;
use crate::creds::sts::BaseCreds;
use crate::creds::{Keys, Role};

pub(crate) use state::BaseState;

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
    /// The agent makes its own codes from a stored TOTP secret.
    #[error(
        "the agent makes its own MFA codes (credentials.mfa_secret is set): a code typed in is not used"
    )]
    StoredSecret,
}

/// One kind of base: where its credentials come from and what may change
/// them while the agent runs.
pub(crate) trait Base: std::fmt::Debug + Send + Sync {
    /// The credentials at start (`None`: none until some are posted).
    fn initial(&self) -> Option<BaseCreds>;

    /// The settings in force while `profile` is active.
    fn identity(&self, profile: Option<&str>) -> &Identity;

    /// How status and logs name it, holding `creds`.
    fn describe(&self, creds: Option<&BaseCreds>, profile: Option<&str>) -> String;

    /// Credentials from the same source that share no cache with those
    /// held now (the next call asks the source again), if it caches.
    fn renewed(&self) -> Option<BaseCreds> {
        None
    }

    /// The profile active at start.
    fn initial_profile(&self) -> Option<String> {
        None
    }

    /// Takes keys posted to the admin socket (bootstrap only).
    fn accept_keys(&self, _keys: Keys) -> Result<BaseCreds, BaseError> {
        Err(BaseError::NotBootstrap)
    }

    /// The credentials of profile `name`, to switch to (profiles only).
    fn switch_to(&self, _name: &str) -> Result<BaseCreds, BaseError> {
        Err(BaseError::NotProfiles)
    }

    /// The named profiles (profiles only).
    fn profiles(&self) -> Option<&BTreeMap<String, Profile>> {
        None
    }

    /// The Roles Anywhere provider, whose certificate `status` shows.
    fn roles_anywhere(&self) -> Option<&RolesAnywhere> {
        None
    }

    /// Everything of the base with `profile` active that decides what STS
    /// gives: credentials cached under another fingerprint are not what it
    /// would fetch (`carry`). Secrets may be in it: only its digest is kept.
    /// `None`: nothing it caches can be vouched for at the next start.
    fn fingerprint(&self, profile: Option<&str>) -> Option<String>;
}

/// Where the agent's own credentials come from, as configured.
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
        provider: RolesAnywhere,
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

impl BaseConfig {
    /// The base it configures.
    pub(crate) fn into_base(self) -> Arc<dyn Base> {
        match self {
            BaseConfig::Chain { provider, identity } => {
                Arc::new(chain::Chain { provider, identity })
            }
            BaseConfig::RolesAnywhere {
                provider,
                identity,
                certificate,
            } => Arc::new(roles_anywhere::FromCertificate {
                provider,
                identity,
                certificate,
            }),
            BaseConfig::Bootstrap { identity } => Arc::new(bootstrap::Bootstrap { identity }),
            BaseConfig::Profiles { profiles, active } => {
                Arc::new(profiles::Profiles::new(profiles, active))
            }
        }
    }
}
