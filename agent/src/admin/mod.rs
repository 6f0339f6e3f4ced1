//! The admin interface: HTTP over a unix socket that only root, the agent's
//! own user and (with `admin.group`) that group's members may open, never
//! on the IMDS address. What it serves: status, metrics, the workloads seen
//! and the assignments, bootstrap credentials (write-only), MFA codes,
//! profiles and the session. `client.rs` is the CLI's side. Metrics alone
//! may also be served over TCP (`admin.metrics_listen`), and the `/manage`
//! page on loopback (`web/`, `admin.web_listen` and `dev`).

mod actions;
pub mod client;
mod gauges;
mod limit;
mod peer;
mod probes;
mod routes;
mod state;
mod web;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use crate::assign::watch::SharedStatus;
use crate::assign::{Assignments, RoleAssignment};
use crate::config::Config;
use crate::creds::engine::Engine;
use crate::http::Seen;

/// What the admin routes and the `/manage` page serve from: the parts of
/// the running agent they read and change. The app fills it in; the admin
/// side knows nothing else of the app.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The STS engine, with `source = "sts"`.
    pub engine: Option<Engine>,
    /// Which role workloads get.
    pub roles: Arc<dyn RoleAssignment>,
    /// The same, with the rules it holds.
    pub assignments: Arc<Assignments>,
    /// The state of the rule files.
    pub rules_status: SharedStatus,
    /// The workloads seen recently.
    pub seen: Arc<Seen>,
    /// Puts a reloaded config in force (`POST /config`).
    pub reloader: Option<Arc<crate::reload::Reloader>>,
}

/// Where `run` puts the socket unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/imds-agent/admin.sock";

/// The running admin server; the socket is removed when this is dropped.
#[derive(Debug)]
pub struct AdminServer {
    path: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    manage_url: Option<String>,
}

impl AdminServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `/manage` page's address, its secret included, when it is
    /// served.
    pub fn manage_url(&self) -> Option<&str> {
        self.manage_url.as_deref()
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
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

/// The bound admin socket, not yet served. Bound in the privileged phase
/// (its directory under /run is root's) and then handed to the agent's
/// user.
#[derive(Debug)]
pub struct AdminSocket {
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
    created_dir: bool,
    group: Option<u32>,
    metrics: Option<std::net::TcpListener>,
    web: Option<std::net::TcpListener>,
}

impl AdminSocket {
    /// Binds the socket for `config`: mode 0600, or 0660 with
    /// `admin.group`; and the metrics listener, if configured.
    pub fn bind(config: &Config, bound: &[SocketAddr]) -> anyhow::Result<Self> {
        let path = socket_path(config, bound);
        let group = config.admin_group.as_deref().map(group_id).transpose()?;
        let (listener, created_dir) = bind(&path, group)?;
        let metrics = match config.metrics_listen {
            Some(addr) => {
                let listener = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("cannot serve metrics on {addr}"))?;
                listener
                    .set_nonblocking(true)
                    .context("configuring the metrics listener")?;
                Some(listener)
            }
            None => None,
        };
        let web = config.web_listen.map(web::bind).transpose()?;
        Ok(Self {
            path,
            listener,
            created_dir,
            group,
            metrics,
            web,
        })
    }

    /// Makes the socket (and the directory, if the agent made it) the
    /// user's, so the agent can still remove it at a stop once it serves as
    /// that user. With `admin.group` the group stays that group.
    pub fn give_to(&self, uid: u32, gid: u32) -> anyhow::Result<()> {
        let (uid, gid) = (Some(uid), Some(self.group.unwrap_or(gid)));
        std::os::unix::fs::chown(&self.path, uid, gid)
            .with_context(|| format!("cannot hand {} to the agent's user", self.path.display()))?;
        if self.created_dir
            && let Some(dir) = self.path.parent()
        {
            std::os::unix::fs::chown(dir, uid, gid)
                .with_context(|| format!("cannot hand {} to the agent's user", dir.display()))?;
        }
        Ok(())
    }

    /// Serves the admin API (and the metrics listener and the `/manage`
    /// page) on the current runtime.
    pub fn serve(
        self,
        config: &Config,
        bound: &[SocketAddr],
        backend: Backend,
    ) -> anyhow::Result<AdminServer> {
        self.listener
            .set_nonblocking(true)
            .context("configuring the admin socket")?;
        let listener = tokio::net::UnixListener::from_std(self.listener)
            .context("serving the admin socket")?;
        // Served after the privilege drop: the agent's own uid is its user.
        let listener = peer::Guarded {
            listener,
            allowed: peer::Allowed {
                uid: nix::unistd::geteuid().as_raw(),
                group: self.group,
            },
        };
        let web = self.web.map(web::Page::new).transpose()?;
        let manage_url = web.as_ref().map(web::Page::url);
        let state = state::AdminState::new(config, bound, backend, manage_url.clone());
        let app = routes::router(state.clone());
        let mut tasks = Vec::new();
        if let Some(page) = web {
            tracing::info!(addr = %page.addr(), "the /manage page (its address with the secret: imds-agent manage)");
            tasks.push(page.serve(state.clone())?);
        }
        tasks.push(tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<peer::PeerUid>();
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the admin socket stopped");
            }
        }));
        tracing::info!(socket = %self.path.display(), "admin socket");
        if let Some(metrics) = self.metrics {
            let addr = metrics
                .local_addr()
                .context("reading the metrics address")?;
            let listener = tokio::net::TcpListener::from_std(metrics)
                .context("serving the metrics listener")?;
            let app = routes::metrics_router(state);
            let listener = limit::Limited::new(listener);
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            }));
            tracing::info!(%addr, "metrics");
        }
        Ok(AdminServer {
            path: self.path,
            tasks,
            manage_url,
        })
    }
}

fn group_id(name: &str) -> anyhow::Result<u32> {
    match nix::unistd::Group::from_name(name).ok().flatten() {
        Some(group) => Ok(group.gid.as_raw()),
        None => name
            .parse()
            .map_err(|_| anyhow::anyhow!("no group {name:?} (admin.group)")),
    }
}

/// Binds `path`, for the agent's user and `group`'s members only; also
/// says whether its directory had to be made.
fn bind(
    path: &Path,
    group: Option<u32>,
) -> anyhow::Result<(std::os::unix::net::UnixListener, bool)> {
    let mut created_dir = false;
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        created_dir = true;
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the admin socket's directory {}",
                dir.display()
            )
        })?;
        // The group may pass through, not list.
        let mode = if group.is_some() { 0o710 } else { 0o700 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
        if group.is_some() {
            std::os::unix::fs::chown(dir, None, group)
                .with_context(|| format!("cannot give {} to admin.group", dir.display()))?;
        }
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
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot create the admin socket {}", path.display()))?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot restrict the admin socket {}", path.display()))?;
    if group.is_some() {
        std::os::unix::fs::chown(path, None, group).with_context(|| {
            format!(
                "cannot give the admin socket {} to admin.group (is the agent a member?)",
                path.display()
            )
        })?;
    }
    Ok((listener, created_dir))
}
