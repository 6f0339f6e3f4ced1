//! The IMDS over HTTP: an axum router with one handler that hands every
//! request to the protocol core, and the server that runs it.

mod conn;
mod convert;
mod server;
mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use http::HeaderValue;

pub use conn::{Connection, Identity};
pub use server::{ServeOptions, bind, serve};
pub use upstream::{Upstream, UpstreamError};

use crate::assign::RoleAssignment;
use crate::attribution::{Attribution, ConnInfo, Identified, Workload};
use crate::clock::Clock;
use crate::creds::CredentialSource;
use crate::imds::{Caller, Class, HeaderField, Imds};

/// Everything the handler needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The protocol.
    pub imds: Arc<Imds>,
    /// Who is asking.
    pub attribution: Arc<dyn Attribution>,
    /// Which role they get.
    pub roles: Arc<dyn RoleAssignment>,
    /// Where credentials come from (the IMDS answers from it too; the
    /// handler only asks it whether a first fetch is under way).
    pub credentials: Arc<dyn CredentialSource>,
    /// How long a workload's very first credentials request may wait for
    /// its role's first fetch.
    pub first_fetch_wait: Duration,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// `Last-Modified` of metadata answers.
    pub last_modified: HeaderValue,
    /// Proxy mode: the real IMDS.
    pub upstream: Option<Arc<Upstream>>,
}

/// The IMDS router. Requests must carry a `Arc<Connection>` extension; the
/// server adds it.
pub fn router(state: AppState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(
    State(state): State<AppState>,
    Extension(conn): Extension<Arc<Connection>>,
    req: Request,
) -> http::Response<Body> {
    let started = Instant::now();
    let (parts, _body) = req.into_parts();
    let identity = match conn.identity() {
        Some(identity) => identity,
        None => conn.set_identity(identify(&*state.attribution, &conn.info).await),
    };
    let role = state.roles.role_for(&identity.workload);
    if let Some(role) = &role
        && crate::imds::reads_credentials(parts.uri.path())
        && let Some(first_fetch) = state.credentials.first_fetch(role)
    {
        // Only a role that has never had credentials gets here: a bounded
        // wait (below every SDK's timeout) beats failing a workload's first
        // call.
        let _ = tokio::time::timeout(state.first_fetch_wait, first_fetch).await;
    }
    let request = convert::imds_request(&parts.method, &parts.uri, &parts.headers);
    let caller = Caller {
        binding: &identity.binding,
        role: role.as_deref(),
    };
    let response = state.imds.respond(&request, &caller, state.clock.now());
    if let Some(hops) = response.hop_limit
        && let Err(e) = conn.set_hop_limit(hops)
    {
        tracing::warn!(error = %e, peer = %conn.info.peer, "could not set the hop limit");
    }
    let version = match request.token {
        HeaderField::Absent => "v1",
        _ => "v2",
    };
    log_request(
        &parts,
        identity,
        role.as_deref(),
        &response,
        version,
        started,
    );
    let close = convert::has_body(&parts.headers);
    if let Some(forward) = &response.forward {
        if let Some(upstream) = &state.upstream {
            return upstream
                .respond(&parts.method, forward, response.token_ttl, close)
                .await;
        }
        // An Imds with an allowlist always comes with its upstream.
        return convert::http_response(
            crate::imds::Response::not_found(response.class),
            &state.last_modified,
            close,
        );
    }
    convert::http_response(response, &state.last_modified, close)
}

/// How long a first request may wait for attribution to catch up (a cgroup
/// created since the last walk of the cgroup tree).
const ATTRIBUTION_WAIT: Duration = Duration::from_millis(500);

/// The workload behind `info`, waiting (boundedly) when attribution asks to.
/// A workload that can't be told is `Unknown`: it gets no role.
async fn identify(attribution: &dyn Attribution, info: &ConnInfo) -> Workload {
    for _ in 0..2 {
        match attribution.identify(info) {
            Identified::Known(workload) => return workload,
            Identified::Retry(ready) => {
                let _ = tokio::time::timeout(ATTRIBUTION_WAIT, ready).await;
            }
        }
    }
    Workload::Unknown(info.peer.ip())
}

fn log_request(
    parts: &http::request::Parts,
    identity: &Identity,
    role: Option<&crate::creds::Role>,
    response: &crate::imds::Response,
    version: &str,
    started: Instant,
) {
    let latency_us = started.elapsed().as_micros() as u64;
    let role = role.map(|r| r.spec.to_string()).unwrap_or_default();
    let key = response.key_suffix.as_ref().map_or("", |k| k.as_str());
    if response.class == Class::Credentials {
        tracing::info!(
            workload = %identity.workload,
            role = %role,
            status = response.status.as_u16(),
            access_key_suffix = key,
            imds_version = version,
            latency_us,
            path = parts.uri.path(),
            "credentials request"
        );
    } else {
        tracing::debug!(
            workload = %identity.workload,
            role = %role,
            method = %parts.method,
            path = parts.uri.path(),
            status = response.status.as_u16(),
            class = response.class.as_str(),
            imds_version = version,
            latency_us,
            "request"
        );
    }
}
