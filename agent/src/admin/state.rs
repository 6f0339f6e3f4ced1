//! What the admin routes, the probes, the metrics and the `/manage` page
//! serve from: the running agent's parts and its fixed facts.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::assign::watch::{RulesStatus, SharedStatus};
use crate::assign::{Assignments, RoleAssignment};
use crate::config::{Config, CredentialsConfig};
use crate::creds::engine::Engine;
use crate::http::Seen;

use super::Backend;

#[derive(Debug, Clone)]
pub(super) struct AdminState {
    pub(super) engine: Option<Engine>,
    pub(super) roles: Arc<dyn RoleAssignment>,
    pub(super) assignments: Arc<Assignments>,
    pub(super) rules: SharedStatus,
    pub(super) seen: Arc<Seen>,
    pub(super) reloader: Option<Arc<crate::reload::Reloader>>,
    pub(super) listen: Vec<SocketAddr>,
    pub(super) http_tokens: &'static str,
    pub(super) host_mode: &'static str,
    pub(super) source: &'static str,
    /// The `/manage` page's address with its secret, when it is served.
    pub(super) manage_url: Option<String>,
}

impl AdminState {
    pub(super) fn new(
        config: &Config,
        bound: &[SocketAddr],
        backend: Backend,
        manage_url: Option<String>,
    ) -> Self {
        Self {
            engine: backend.engine,
            roles: backend.roles,
            assignments: backend.assignments,
            rules: backend.rules_status,
            seen: backend.seen,
            reloader: backend.reloader,
            manage_url,
            listen: bound.to_vec(),
            http_tokens: config.settings.http_tokens.as_str(),
            host_mode: config.host.mode.as_str(),
            source: match config.credentials {
                CredentialsConfig::Static { .. } => "static",
                CredentialsConfig::Sts(_) => "sts",
            },
        }
    }

    pub(super) fn rules_status(&self) -> RulesStatus {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
