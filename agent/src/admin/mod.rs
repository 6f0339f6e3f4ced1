//! The admin interface: HTTP over a unix socket that only the agent's own
//! user may open (mode 0600), never on the IMDS address. What it serves:
//! status, bootstrap credentials (write-only), MFA codes, profiles and the
//! session. `client.rs` is the CLI's side.

pub mod client;
mod routes;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::app::Agent;
use crate::config::Config;

/// Where `run` puts the socket unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/imds-agent/admin.sock";

/// The running admin server; the socket is removed when this is dropped.
#[derive(Debug)]
pub struct AdminServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The socket path: the configured one, with `{port}` replaced by the first
/// listening port (the dev default puts one socket per dev agent).
pub fn socket_path(config: &Config, bound: &[SocketAddr]) -> PathBuf {
    let configured = config
        .admin_socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let port = bound.first().map_or(0, SocketAddr::port);
    PathBuf::from(
        configured
            .to_string_lossy()
            .replace("{port}", &port.to_string()),
    )
}

/// Binds the socket and serves the admin API on the current runtime.
pub fn start(config: &Config, bound: &[SocketAddr], agent: &Agent) -> anyhow::Result<AdminServer> {
    let path = socket_path(config, bound);
    let listener = bind(&path)?;
    let app = routes::router(routes::AdminState::new(config, bound, agent));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the admin socket stopped");
        }
    });
    tracing::info!(socket = %path.display(), "admin socket");
    Ok(AdminServer { path, task })
}

fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the admin socket's directory {}",
                dir.display()
            )
        })?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    if path.exists() {
        // A socket nobody answers on is left over from an agent that died;
        // one that answers belongs to a running agent.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another agent is serving the admin socket {}; stop it or set admin.socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale admin socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot create the admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict the admin socket {}", path.display()))?;
    Ok(listener)
}
