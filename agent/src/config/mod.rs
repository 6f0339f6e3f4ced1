//! The agent's configuration: one TOML file (`file.rs` lists the keys),
//! checked as a whole before anything starts (`validate.rs`), with defaults
//! derived from the host (`host.rs`). Every error names the file, the key
//! and what is wrong.

mod error;
mod file;
mod host;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use error::{ConfigError, Origin};
pub use host::HostFacts;

use crate::creds::{Keys, Role};
use crate::imds::{HttpTokens, InstanceData, Settings};

/// The configuration `imds-agent dev` runs with when given no file.
pub const DEV_CONFIG: &str = include_str!("dev.toml");

/// The default location of the config file.
pub const DEFAULT_PATH: &str = "/etc/imds-agent/config.toml";

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
    /// Threads serving requests.
    pub worker_threads: usize,
    /// The metadata values.
    pub instance: InstanceData,
    /// Where credentials come from.
    pub credentials: CredentialsConfig,
    /// The role every caller gets, if any.
    pub default_role: Option<Role>,
    /// The `tracing` filter.
    pub log_level: String,
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
        let origin = Origin::File(path.to_owned());
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            origin: origin.clone(),
            source,
        })?;
        Self::parse(&text, origin, overrides, host, env)
    }
}

#[cfg(test)]
mod tests;
