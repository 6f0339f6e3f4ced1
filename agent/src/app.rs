//! Putting the parts together: from a checked `Config` to a running server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::HeaderValue;

use crate::assign::SameForAll;
use crate::attribution::ByPeerAddress;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, CredentialsConfig};
use crate::creds::{CredentialSource, StaticSource};
use crate::http::{AppState, ServeOptions, bind, router, serve};
use crate::imds::{Imds, TokenAuthority};
use crate::timefmt::http_date;

/// Builds the handler state for `config`, with a fresh token key.
pub fn state(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
    let credentials: Arc<dyn CredentialSource> = match &config.credentials {
        CredentialsConfig::Static { keys, lifetime } => {
            Arc::new(StaticSource::new(keys.clone(), *lifetime))
        }
    };
    let imds = Imds::new(
        &config.instance,
        config.settings.clone(),
        token_authority()?,
        credentials,
    );
    let last_modified = HeaderValue::from_str(&http_date(config.instance.last_modified))
        .context("formatting Last-Modified")?;
    Ok(AppState {
        imds: Arc::new(imds),
        attribution: Arc::new(ByPeerAddress),
        roles: Arc::new(SameForAll::new(config.default_role.clone())),
        clock,
        last_modified,
    })
}

/// A token authority with a key drawn from the OS's random source. A new
/// key at every start means a restart invalidates every token; clients
/// fetch a new one on the resulting 401.
fn token_authority() -> anyhow::Result<TokenAuthority> {
    use ring::rand::{SecureRandom, SystemRandom};
    let rng = SystemRandom::new();
    let mut key = [0u8; 32];
    let mut nonce = [0u8; 8];
    rng.fill(&mut key)
        .and_then(|()| rng.fill(&mut nonce))
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    Ok(TokenAuthority::new(key, u64::from_be_bytes(nonce)))
}

/// Binds every listen address of `config`, calls `on_listening` with the
/// bound addresses (port 0 resolved), then serves until SIGTERM or SIGINT.
pub fn run(config: Config, on_listening: impl FnOnce(&[SocketAddr])) -> anyhow::Result<()> {
    let listeners = config
        .listen
        .iter()
        .map(|&addr| bind(addr).with_context(|| format!("cannot listen on {addr}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bound = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the bound addresses")?;
    // The runtime is built only now, after binding: later, privileges are
    // dropped here, and that must happen before any other thread exists.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .thread_name("imds-worker")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let state = state(&config, Arc::new(SystemClock::new()))?;
    let options = ServeOptions {
        max_connections: config.max_connections,
        ..ServeOptions::default()
    };
    for addr in &bound {
        tracing::info!(%addr, http_tokens = config.settings.http_tokens.as_str(), hop_limit = config.settings.hop_limit, "listening");
    }
    on_listening(&bound);
    runtime.block_on(serve(listeners, router(state), options, shutdown_signal()))?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGTERM (systemd's stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
