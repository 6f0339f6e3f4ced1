//! The `/manage` page: the agent's own session in a browser, for the
//! developer whose laptop it runs on. Served on loopback only (the config
//! refuses any other address) by `dev` and with `admin.web_listen`, never
//! on an IMDS address. `guard.rs` decides who may use it, `page.rs` is the
//! HTML, `api.rs` the JSON API scripts written for aws-mock-metadata call.

mod api;
mod form;
mod guard;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post};

use self::guard::Guard;
use super::state::AdminState;

/// Bodies the page takes: a form or a small JSON object.
const BODY_LIMIT: usize = 16 * 1024;

/// Binds the page's address (in the privileged phase, like every listener).
pub(super) fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot serve the /manage page on {addr} (admin.web_listen)"))?;
    listener
        .set_nonblocking(true)
        .context("configuring the /manage listener")?;
    Ok(listener)
}

/// The bound page and this start's secret.
#[derive(Debug)]
pub(super) struct Page {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    guard: Arc<Guard>,
}

impl Page {
    pub(super) fn new(listener: std::net::TcpListener) -> anyhow::Result<Self> {
        let addr = listener
            .local_addr()
            .context("reading the /manage address")?;
        Ok(Self {
            listener,
            addr,
            guard: Arc::new(Guard::new(addr, new_secret()?)),
        })
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's address with the secret.
    pub(super) fn url(&self) -> String {
        format!("http://{}/manage?k={}", self.addr, self.guard.secret())
    }

    /// Serves the page on the current runtime.
    pub(super) fn serve(self, state: AdminState) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let listener =
            tokio::net::TcpListener::from_std(self.listener).context("serving the /manage page")?;
        let web = WebState {
            admin: state,
            secret: Arc::from(self.guard.secret()),
        };
        let app = Router::new()
            .route("/manage", get(page::show))
            .route("/manage/ui/code", post(page::code))
            .route("/manage/ui/clear", post(page::clear))
            .route("/manage/ui/profile", post(page::profile))
            .route("/manage/ui/refresh", post(page::refresh))
            .route("/manage/profiles", get(api::profiles))
            .route("/manage/profiles/{name}", get(api::profile))
            .route(
                "/manage/session",
                get(api::session)
                    .post(api::start_session)
                    .delete(api::clear_session),
            )
            .fallback(api::not_found)
            .with_state(web)
            .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&self.guard),
                guard::check,
            ));
        let listener = super::limit::Limited::new(listener);
        Ok(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the /manage page stopped");
            }
        }))
    }
}

/// What the page's handlers share.
#[derive(Debug, Clone)]
struct WebState {
    admin: AdminState,
    /// For the links and forms of the page (which already had it).
    secret: Arc<str>,
}

/// 32 random bytes, in hex.
fn new_secret() -> anyhow::Result<String> {
    use ring::rand::{SecureRandom as _, SystemRandom};
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness for the /manage page's secret"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
