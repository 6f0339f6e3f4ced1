//! The agent's configuration: one TOML file (`file.rs` lists the keys),
//! checked as a whole before anything starts (`validate.rs`), with defaults
//! derived from the host (`host.rs`). Every error names the file, the key
//! and what is wrong.

mod credentials;
mod error;
mod file;
mod host;
mod network;
mod roles_anywhere;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use error::Source;
pub use error::{ConfigError, Origin};
pub use file::LogTarget;
pub use host::HostFacts;
pub use network::{
    AttributionConfig, DEFAULT_ROLES_DIR, DEFAULT_USER, DockerConfig, EbpfConfig, HostConfig,
    HostMode, IMDS_V4, IMDS_V6, PrivilegesConfig, ProxyConfig, RolesConfig,
};

use crate::creds::Keys;
use crate::creds::engine::{Identity, Profile};
use crate::imds::{HttpTokens, InstanceData, Settings};

/// The configuration `imds-agent dev` runs with when given no file.
pub const DEV_CONFIG: &str = include_str!("dev.toml");

/// The default location of the config file.
pub const DEFAULT_PATH: &str = "/etc/imds-agent/config.toml";

/// Whether a config file's text sets anything: false for one that is only
/// comments and blank lines (the package's sample as installed, or an empty
/// table). Text that is not valid TOML counts as settings: whoever reads it
/// next reports what is wrong with it.
pub fn holds_settings(text: &str) -> bool {
    text.parse::<toml::Table>()
        .map_or(true, |table| !table.is_empty())
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from.
    pub origin: Origin,
    /// Addresses to serve on.
    pub listen: Vec<SocketAddr>,
    /// Token mode and hop limit.
    pub settings: Settings,
    /// Connections served at once.
    pub max_connections: usize,
    /// Of those, at most this many per workload.
    pub max_connections_per_workload: usize,
    /// Threads serving requests.
    pub worker_threads: usize,
    /// The metadata values.
    pub instance: InstanceData,
    /// Where credentials come from.
    pub credentials: CredentialsConfig,
    /// Which workload gets which role.
    pub roles: RolesConfig,
    /// How the agent takes over 169.254.169.254.
    pub host: HostConfig,
    /// Proxy mode: the real IMDS and what is forwarded to it.
    pub proxy: Option<ProxyConfig>,
    /// How workloads are told apart.
    pub attribution: AttributionConfig,
    /// Whom the agent becomes once set up.
    pub privileges: PrivilegesConfig,
    /// `instance.account_id` when the file sets it: the account of roles
    /// named without one. Otherwise the STS engine asks STS whose its own
    /// credentials are.
    pub configured_account: Option<String>,
    /// The `tracing` filter.
    pub log_level: String,
    /// Where logs go.
    pub log_target: LogTarget,
    /// The admin socket, when the file sets one.
    pub admin_socket: Option<PathBuf>,
    /// A group whose members may use the admin socket.
    pub admin_group: Option<String>,
    /// Where `GET /metrics` is also served over TCP.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the `/manage` page is served (loopback only); `dev` serves it
    /// on a free loopback port when this is unset.
    pub web_listen: Option<SocketAddr>,
    /// `dev`: tell the person at the desk when an MFA code is needed (a
    /// desktop notification, a prompt in the terminal). Never from a file.
    pub desktop: bool,
    /// The host's name (session tags, default session names).
    pub hostname: String,
    /// Whether the file itself holds secrets (keys, a TOTP secret), so it
    /// must not be readable by other users.
    pub holds_secrets: bool,
}

impl Config {
    /// A warning if the file holds secrets and other users can read it.
    /// A warning when fixed keys would be served to workloads told apart
    /// (`rules` role rules, a host mode, container roles): every role gets
    /// the same keys, so the roles only look different.
    pub fn shared_keys_warning(&self, rules: usize) -> Option<String> {
        let CredentialsConfig::Static { .. } = &self.credentials else {
            return None;
        };
        let apart =
            rules > 0 || self.host.mode != HostMode::Off || self.attribution.docker.is_some();
        apart.then(|| {
            "credentials.source = \"static\" serves the same keys under every role name: with role rules, a host mode or container roles, workloads told apart still get one another's credentials; use source = \"sts\" to give each its own".to_owned()
        })
    }

    /// A warning when sessions are configured shorter than 30 minutes:
    /// credentials are replaced at half their life at the latest, so they
    /// are served with under 15 minutes left, which SDKs take for
    /// "expiring" (botocore refreshes on every call, Java v1 refetches).
    pub fn short_sessions_warning(&self) -> Option<String> {
        let CredentialsConfig::Sts(sts) = &self.credentials else {
            return None;
        };
        let least = 2 * crate::creds::engine::SDK_REFRESH_WINDOW;
        let mut short = Vec::new();
        if sts.identity.duration < least {
            short.push(format!(
                "credentials.duration_seconds = {}",
                sts.identity.duration.as_secs()
            ));
        }
        if let StsBase::Profiles { profiles, .. } = &sts.base {
            for (name, profile) in profiles {
                if profile.identity.duration < least
                    && profile.identity.duration != sts.identity.duration
                {
                    short.push(format!(
                        "profiles.{name}.duration_seconds = {}",
                        profile.identity.duration.as_secs()
                    ));
                }
            }
        }
        (!short.is_empty()).then(|| {
            format!(
                "{}: sessions under 1800 seconds are served with under 15 minutes left, which SDKs treat as expiring (botocore refreshes on every call); use 1800 or more",
                short.join(", ")
            )
        })
    }

    /// A warning when the config holds secrets others can read.
    pub fn permission_warning(&self) -> Option<String> {
        use std::os::unix::fs::PermissionsExt as _;
        let Origin::File(path) = &self.origin else {
            return None;
        };
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (self.holds_secrets && mode & 0o077 != 0).then(|| {
            format!(
                "{} holds secrets but other users can read it (mode {:o}); run: chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            )
        })
    }
}

/// Where credentials come from, checked.
#[derive(Debug, Clone)]
pub enum CredentialsConfig {
    /// Fixed keys, served with a rolling expiry of `lifetime`.
    Static {
        /// The keys.
        keys: Keys,
        /// The lifetime they claim.
        lifetime: Duration,
    },
    /// Temporary credentials from STS.
    Sts(Box<StsConfig>),
}

/// `source = "sts"`, checked.
#[derive(Debug, Clone)]
pub struct StsConfig {
    /// Where the agent's own credentials come from.
    pub base: StsBase,
    /// Region, mode, duration, external id and MFA, unless a profile sets
    /// its own.
    pub identity: Identity,
    /// An STS endpoint URL that replaces the regional one.
    pub endpoint: Option<String>,
    /// Credentials are replaced this long before they expire.
    pub keep: Duration,
    /// How long a refusal is served before STS is asked again.
    pub error_ttl: Duration,
    /// STS calls a second, on average.
    pub rate: f64,
    /// STS calls at once.
    pub burst: u32,
    /// Roles cached at most.
    pub max_roles: usize,
    /// Set `SourceIdentity` to the session name.
    pub source_identity: bool,
    /// Tag sessions with the host and workload.
    pub session_tags: bool,
    /// How long a workload's very first request may wait for its role's
    /// first fetch.
    pub first_fetch_wait: Duration,
    /// How long credentials no assignment names and no live workload holds
    /// are kept unused.
    pub idle_ttl: Duration,
    /// How long a credentials request may wait for a person to hand in an
    /// MFA code (no TOTP secret stored); zero: it does not wait.
    pub mfa_prompt_wait: Duration,
    /// The first fetch of a role no workload needs yet waits a random part
    /// of this, so hosts started together do not call STS together.
    pub prefetch_spread: Duration,
}

/// Where the agent's own credentials come from.
#[derive(Debug, Clone)]
pub enum StsBase {
    /// The standard chain; the EC2 instance profile only if
    /// `instance_profile`.
    Chain {
        /// Let the chain end with the real IMDS.
        instance_profile: bool,
    },
    /// Posted to the admin socket.
    Bootstrap,
    /// IAM Roles Anywhere.
    RolesAnywhere(Box<crate::creds::roles_anywhere::provider::Settings>),
    /// Named profiles.
    Profiles {
        /// All of them.
        profiles: BTreeMap<String, Profile>,
        /// The one active at start.
        active: String,
    },
}

/// Settings given on the command line; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<Vec<SocketAddr>>,
    /// `--http-tokens`.
    pub http_tokens: Option<HttpTokens>,
    /// `--hop-limit`.
    pub hop_limit: Option<u8>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `dev --credentials-from-env`: take the keys from the environment,
    /// whatever the file says.
    pub credentials_from_env: bool,
    /// `--admin-socket`.
    pub admin_socket: Option<PathBuf>,
    /// `--host-mode`.
    pub host_mode: Option<HostMode>,
}

/// Reads environment variables; a parameter so tests control it.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(
        path: &Path,
        overrides: &Overrides,
        host: &HostFacts,
        env: Env<'_>,
    ) -> Result<Config, ConfigError> {
        Self::load_with_text(path, overrides, host, env).map(|(config, _)| config)
    }

    /// As `load`, and the file's text (what a reload compares with).
    pub fn load_with_text(
        path: &Path,
        overrides: &Overrides,
        host: &HostFacts,
        env: Env<'_>,
    ) -> Result<(Config, String), ConfigError> {
        let origin = Origin::File(path.to_owned());
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            origin: origin.clone(),
            source,
        })?;
        Self::parse(&text, origin, overrides, host, env).map(|config| (config, text))
    }
}

#[cfg(test)]
mod tests;
