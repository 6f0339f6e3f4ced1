//! The IMDS over HTTP: an axum router with one handler that hands every
//! request to the protocol core, and the server that runs it.

mod conn;
mod convert;
pub mod limits;
mod seen;
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
pub use seen::{Seen, SeenWorkload};
pub use server::{Identify, ServeOptions, bind, serve};
pub use upstream::{Upstream, UpstreamError};

use crate::assign::RoleAssignment;
use crate::attribution::{Attribution, ConnInfo, Identified, Workload};
use crate::clock::Clock;
use crate::creds::CredentialSource;
use crate::imds::{Answer, Caller, Class, HeaderField, Imds};

/// Everything the handler needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The protocol.
    pub imds: Arc<Imds>,
    /// Who is asking.
    pub attribution: Arc<dyn Attribution>,
    /// Which role they get.
    pub roles: Arc<dyn RoleAssignment>,
    /// Where credentials come from (the IMDS answers from it; the handler
    /// tells it who uses a role first, and waits for a first fetch).
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
    /// The workloads seen recently.
    pub seen: Arc<Seen>,
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
    let identity = &*identity;
    resolve_exe(&identity.workload, &state.roles).await;
    let role = conn.role(state.roles.generation(), || {
        state.roles.role_for(&identity.workload)
    });
    let request = convert::imds_request(&parts.method, &parts.uri, &parts.headers);
    let caller = Caller {
        binding: &identity.binding,
        role: role.as_deref(),
    };
    let mut waited = false;
    if let Some(role) = &role
        && state
            .imds
            .asks_for_credentials(&request, &caller, state.clock.now())
    {
        // Only a role with nothing to serve yet waits (a workload's first
        // request), and for a bounded time, below SDKs' one-second
        // timeouts: that beats failing its first call. A fetch whose
        // answer was dropped (the agent's identity changed meanwhile) is
        // followed by the next one, within the same bound (and a few
        // tries: a churning cache must not turn one request into many
        // fetches).
        // The document waits longer when its fetch needs a person's MFA
        // code: the SDK waits as long as it was told to
        // (`mfa_prompt_wait_seconds`, documented with SDKs' timeouts).
        // Worked out only once there is something to wait for: a cached
        // role's request pays nothing for it.
        let mut deadline = None;
        for _ in 0..3 {
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                break;
            }
            let Some(fetch) = state.credentials.prepare(role, &identity.user) else {
                break;
            };
            let until = *deadline.get_or_insert_with(|| {
                let mut wait = state.first_fetch_wait;
                if state
                    .imds
                    .asks_for_document(&request, &caller, state.clock.now())
                {
                    wait = wait.max(state.credentials.person_wait());
                }
                tokio::time::Instant::now() + wait
            });
            waited = true;
            if tokio::time::timeout_at(until, fetch).await.is_err() {
                break;
            }
        }
    }
    let now = state.clock.now();
    let answer = state.imds.respond(&request, &caller, now);
    let class = answer.class();
    let close = convert::has_body(&parts.headers);
    let mut key_suffix = None;
    let out = match (answer, &state.upstream) {
        (Answer::Local(response), _) => {
            if let Some(hops) = response.hop_limit
                && let Err(e) = conn.set_hop_limit(hops)
            {
                tracing::warn!(error = %e, peer = %conn.info.peer, "could not set the hop limit");
            }
            key_suffix = response.key_suffix;
            convert::http_response(response, &state.last_modified, close)
        }
        (Answer::Forward(forwarded), Some(upstream)) => {
            upstream
                .respond(
                    &parts.method,
                    &forwarded.request,
                    forwarded.token_ttl,
                    close,
                )
                .await
        }
        // An Imds with an allowlist always comes with its upstream.
        (Answer::Forward(_), None) => convert::http_response(
            crate::imds::Response::not_found(class),
            &state.last_modified,
            close,
        ),
    };
    let status = out.status().as_u16();
    let latency = started.elapsed();
    let metrics = crate::metrics::global();
    metrics.request(class, status, latency);
    if class == Class::Credentials && status == 200 {
        metrics.credentials_served(if waited {
            crate::metrics::Served::AfterFirstFetch
        } else {
            crate::metrics::Served::Cached
        });
    }
    state.seen.record(
        &identity.binding,
        &identity.workload,
        role.as_deref(),
        now.wall,
    );
    let version = match request.token {
        HeaderField::Absent => "v1",
        _ => "v2",
    };
    log_request(&Logged {
        parts: &parts,
        identity,
        role: role.as_deref(),
        class,
        status,
        key_suffix: key_suffix.as_ref().map_or("", |k| k.as_str()),
        version,
        latency,
    });
    out
}

/// Reads the executable of the process behind `workload` on a blocking
/// thread, when a rule names executables (and, when a rule's pattern
/// matches it, checks it is the file the process connected with): rule
/// matching then finds both known, and no worker waits on /proc, the
/// executable helper or a file system.
async fn resolve_exe(workload: &Workload, roles: &Arc<dyn RoleAssignment>) {
    let Workload::Process(process) = workload else {
        return;
    };
    let Some(program) = process.program.as_ref() else {
        return;
    };
    if process.container.is_some() || !roles.needs_exe() {
        return;
    }
    // Read already, and checked if a rule may match it (rules may have
    // changed since the connection's first request).
    if let Some(path) = program.exe_if_read()
        && (program.exe_checked() || !roles.exe_rule_matches(&path))
    {
        return;
    }
    let (program, roles) = (program.clone(), Arc::clone(roles));
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(path) = program.exe()
            && roles.exe_rule_matches(path)
        {
            program.runs_what_connected();
        }
    })
    .await;
}

/// How long a first request may wait for attribution to catch up (a cgroup
/// created since the last walk of the cgroup tree).
const ATTRIBUTION_WAIT: Duration = Duration::from_millis(500);

/// What the server identifies accepted connections with: `attribution`.
pub fn identifier(attribution: Arc<dyn Attribution>) -> Identify {
    Arc::new(move |info: ConnInfo| {
        let attribution = Arc::clone(&attribution);
        Box::pin(async move { identify(&*attribution, &info).await })
    })
}

/// How many connections may wait for attribution at once. Each holds a
/// connection slot while it waits, uncounted in any workload's share (who
/// it is is what it waits for): a user could make cgroups and remove them
/// under its own sockets to keep every slot waiting. Past this, a
/// connection that would wait is `Unknown` at once.
static WAITING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(64);

/// The workload behind `info`, waiting (boundedly) when attribution asks to.
/// A workload that can't be told is `Unknown`: it gets no role.
async fn identify(attribution: &dyn Attribution, info: &ConnInfo) -> Workload {
    // Two waits at most, each followed by another look.
    for waits in 0..=2 {
        let ready = match attribution.identify(info) {
            Identified::Known(workload) => return workload,
            Identified::Retry(ready) if waits < 2 => ready,
            Identified::Retry(_) => break,
        };
        let Ok(_waiting) = WAITING.try_acquire() else {
            tracing::debug!(peer = %info.peer, "too many connections waiting to be identified: unknown");
            break;
        };
        let _ = tokio::time::timeout(ATTRIBUTION_WAIT, ready).await;
    }
    Workload::Unknown(info.peer.ip())
}

/// What a request's log line says.
struct Logged<'a> {
    parts: &'a http::request::Parts,
    identity: &'a Identity,
    role: Option<&'a crate::creds::Role>,
    class: Class,
    status: u16,
    key_suffix: &'a str,
    version: &'a str,
    latency: Duration,
}

/// One structured line per request: credentials requests at `info`, the
/// rest at `debug`. The fields are the journal's (`F_ROLE=…`, `F_UNIT=…`):
/// what a workload is, its role, what it got, never a secret.
fn log_request(l: &Logged<'_>) {
    let workload = &l.identity.workload;
    let (unit, cgroup, uid) = match workload {
        Workload::Process(p) => (
            p.facts.unit.as_deref().unwrap_or(""),
            &*p.cgroup,
            p.uid.to_string(),
        ),
        _ => ("", "", String::new()),
    };
    // The exact process, when the eBPF redirect recorded it.
    let program = match workload {
        Workload::Process(p) => p.program.as_ref(),
        _ => None,
    };
    let pid = program.map(|p| p.pid.to_string()).unwrap_or_default();
    // Only when a rule already read it: logging never reads /proc.
    let exe = program.and_then(|p| p.exe.if_read()).unwrap_or("");
    let container = workload.container().map_or("", |c| c.name.as_str());
    let role = l.role.map(|r| r.spec.to_string()).unwrap_or_default();
    let latency_us = u64::try_from(l.latency.as_micros()).unwrap_or(u64::MAX);
    if l.class == Class::Credentials {
        tracing::info!(
            workload = %workload,
            unit,
            cgroup,
            container,
            uid,
            pid,
            exe,
            role,
            status = l.status,
            access_key_suffix = l.key_suffix,
            imds_version = l.version,
            latency_us,
            path = l.parts.uri.path(),
            "credentials request"
        );
    } else {
        tracing::debug!(
            workload = %workload,
            unit,
            cgroup,
            container,
            uid,
            pid,
            exe,
            role,
            method = %l.parts.method,
            path = l.parts.uri.path(),
            status = l.status,
            class = l.class.as_str(),
            imds_version = l.version,
            latency_us,
            "request"
        );
    }
}
