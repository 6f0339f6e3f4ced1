//! Putting the parts together: from a checked `Config` to a running server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::HeaderValue;

use crate::assign::{DefaultRole, RoleAssignment};
use crate::attribution::ByPeerAddress;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, CredentialsConfig, StsBase, StsConfig};
use crate::creds::engine::{self, BaseConfig, Engine};
use crate::creds::sts::{AwsSts, default_chain, endpoint_from_env};
use crate::creds::{CredentialSource, StaticSource, session_name};
use crate::http::{AppState, ServeOptions, bind, router, serve};
use crate::imds::{Imds, TokenAuthority};
use crate::timefmt::http_date;

/// The running parts of an agent.
#[derive(Debug, Clone)]
pub struct Agent {
    /// What the IMDS handler uses.
    pub state: AppState,
    /// The STS engine, with `source = "sts"`.
    pub engine: Option<Engine>,
    /// Which role workloads get.
    pub roles: Arc<dyn RoleAssignment>,
}

/// Builds the agent for `config`, with a fresh token key, and starts the
/// credentials engine's prefetch and scheduler. Must run inside the tokio
/// runtime.
pub fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Agent> {
    let (credentials, engine, first_fetch_wait): (Arc<dyn CredentialSource>, _, _) =
        match &config.credentials {
            CredentialsConfig::Static { keys, lifetime } => (
                Arc::new(StaticSource::new(
                    keys.clone(),
                    *lifetime,
                    Some(config.instance.account_id.clone()),
                )),
                None,
                Duration::ZERO,
            ),
            CredentialsConfig::Sts(sts) => {
                let engine = sts_engine(config, sts, Arc::clone(&clock))?;
                (Arc::new(engine.clone()), Some(engine), sts.first_fetch_wait)
            }
        };
    let roles: Arc<dyn RoleAssignment> = Arc::new(DefaultRole::new(
        config.default_role.clone(),
        engine.clone(),
    ));
    if let Some(engine) = &engine {
        engine.set_wanted(roles.roles());
        tokio::spawn(engine.clone().run());
    }
    let imds = Imds::new(
        &config.instance,
        config.settings.clone(),
        token_authority()?,
        Arc::clone(&credentials),
    );
    let last_modified = HeaderValue::from_str(&http_date(config.instance.last_modified))
        .context("formatting Last-Modified")?;
    let state = AppState {
        imds: Arc::new(imds),
        attribution: Arc::new(ByPeerAddress),
        roles: Arc::clone(&roles),
        credentials,
        first_fetch_wait,
        clock,
        last_modified,
    };
    Ok(Agent {
        state,
        engine,
        roles,
    })
}

fn sts_engine(config: &Config, sts: &StsConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Engine> {
    let env = |name: &str| std::env::var(name).ok();
    let endpoint = sts.endpoint.clone().or_else(|| endpoint_from_env(&env));
    if let Some(endpoint) = &endpoint {
        tracing::info!(%endpoint, "STS endpoint");
    }
    let base = match &sts.base {
        StsBase::Chain { instance_profile } => BaseConfig::Chain {
            provider: default_chain(&sts.identity.region, *instance_profile),
            identity: sts.identity.clone(),
        },
        StsBase::Bootstrap => BaseConfig::Bootstrap {
            identity: sts.identity.clone(),
        },
        StsBase::Profiles { profiles, active } => BaseConfig::Profiles {
            profiles: profiles.clone(),
            active: active.clone(),
        },
    };
    let settings = engine::Settings {
        keep: sts.keep,
        error_ttl: sts.error_ttl,
        max_backoff: Duration::from_secs(60),
        rate: sts.rate,
        burst: sts.burst,
        max_roles: sts.max_roles,
        idle_ttl: Duration::from_secs(600),
        default_account: config.configured_account.clone(),
        default_partition: config.instance.partition.clone(),
        default_session_name: session_name::sanitize(&format!("imds-agent-{}", config.hostname))
            .unwrap_or_else(|| "imds-agent".to_owned()),
        source_identity: sts.source_identity,
        session_tags: sts.session_tags,
        hostname: config.hostname.clone(),
        jitter_seed: random_u64()?,
    };
    Ok(Engine::new(
        Arc::new(AwsSts::new(endpoint)),
        clock,
        base,
        settings,
    ))
}

fn random_u64() -> anyhow::Result<u64> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// A token authority with a key drawn from the OS's random source. A new
/// key at every start means a restart invalidates every token; clients
/// fetch a new one on the resulting 401.
fn token_authority() -> anyhow::Result<TokenAuthority> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    Ok(TokenAuthority::new(key, random_u64()?))
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
    let served = runtime.block_on(async {
        let agent = build(&config, Arc::new(SystemClock::new()))?;
        let admin = crate::admin::start(&config, &bound, &agent)?;
        let options = ServeOptions {
            max_connections: config.max_connections,
            ..ServeOptions::default()
        };
        for addr in &bound {
            tracing::info!(
                %addr,
                http_tokens = config.settings.http_tokens.as_str(),
                hop_limit = config.settings.hop_limit,
                "listening"
            );
        }
        on_listening(&bound);
        let served = serve(listeners, router(agent.state), options, shutdown_signal()).await;
        drop(admin);
        served.map_err(anyhow::Error::from)
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    served?;
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
