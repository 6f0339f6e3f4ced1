//! The admin API's routes.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::assign::watch::RulesStatus;
use crate::creds::engine::{BaseError, Engine, ProfileInfo, Status};
use crate::creds::mfa::MfaCode;
use crate::creds::{Keys, Secret};
use crate::http::SeenWorkload;
use crate::reload::Outcome;

use super::actions::{self, ActionError};
use super::peer::Trusted;
use super::state::AdminState;
use super::{gauges, probes};

/// The STS engine, or why there is none.
fn engine_of(state: &AdminState) -> Result<&Engine, ApiError> {
    state.engine.as_ref().ok_or(ApiError(
        StatusCode::CONFLICT,
        "the agent serves fixed keys (credentials.source = \"static\"); there is no STS session"
            .to_owned(),
    ))
}

pub(super) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(gauges::metrics_text))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/workloads", get(workloads))
        .route("/assignments", get(assignments))
        .route("/bootstrap/creds", post(bootstrap))
        .route("/mfa", post(mfa))
        .route("/manage-url", get(manage_url))
        .route("/profiles", get(profiles))
        .route("/profiles/active", put(use_profile))
        .route("/profiles/{name}", get(profile))
        .route("/session", get(session).post(mfa).delete(clear_session))
        .route("/refresh", post(refresh))
        .route("/config", post(reload_config))
        .with_state(state)
}

/// The metrics and the probes alone, for the optional TCP listener:
/// nothing else of the admin API is reachable there.
pub(super) fn metrics_router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(gauges::metrics_text))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz_brief))
        .with_state(state)
}

/// An error answer: a status and a sentence.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

#[derive(Debug, Serialize)]
struct StatusBody {
    /// What `GET /readyz` says: rules in force as written, credentials of
    /// the agent's own, valid credentials for every wanted role.
    ready: bool,
    /// Why not, one sentence each.
    not_ready: Vec<String>,
    version: &'static str,
    listen: Vec<String>,
    host_mode: &'static str,
    http_tokens: &'static str,
    credentials_source: &'static str,
    /// Valid credentials are cached for every wanted role (static keys
    /// always are).
    credentials_valid: bool,
    /// The last STS call reached STS (`null`: no call yet, or static keys).
    sts_reachable: Option<bool>,
    /// The rule files.
    rules: RulesStatus,
    roles_assigned: Vec<String>,
    workloads_seen: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    sts: Option<Status>,
}

async fn status(State(state): State<AdminState>) -> Json<StatusBody> {
    let sts = match &state.engine {
        Some(engine) => Some(engine.status().await),
        None => None,
    };
    let rules = state.rules_status();
    // What is prefetched comes from the cgroup tree (and the uids of
    // processes a rule's uid asks about): not on a worker.
    let roles = Arc::clone(&state.roles);
    let roles_assigned = tokio::task::spawn_blocking(move || {
        roles
            .wanted()
            .iter()
            .map(|r| r.spec.to_string())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let credentials_valid = sts.as_ref().is_none_or(|s| s.ready);
    let not_ready = probes::readiness(&state).await;
    Json(StatusBody {
        ready: not_ready.is_empty(),
        not_ready,
        version: env!("CARGO_PKG_VERSION"),
        listen: state.listen.iter().map(ToString::to_string).collect(),
        host_mode: state.host_mode,
        http_tokens: state.http_tokens,
        credentials_source: state.source,
        credentials_valid,
        sts_reachable: sts.as_ref().and_then(|s| s.sts_reachable),
        rules,
        roles_assigned,
        workloads_seen: state.seen.len(),
        sts,
    })
}

/// The workloads seen recently, most recent first.
async fn workloads(State(state): State<AdminState>) -> Json<Vec<SeenWorkload>> {
    Json(state.seen.list())
}

#[derive(Debug, Serialize)]
struct RuleBody {
    origin: String,
    conditions: Vec<String>,
    role: String,
    external_id: bool,
    session_name: Option<String>,
    duration_seconds: Option<u64>,
}

#[derive(Debug, Serialize)]
struct AssignmentsBody {
    /// Most specific first: the order in which they are tried.
    rules: Vec<RuleBody>,
    default: Option<String>,
    container_default: Option<String>,
    profile_role: Option<String>,
}

/// The rules in force and the defaults. An external id is a shared secret
/// of sorts: only whether one is set is shown.
async fn assignments(State(state): State<AdminState>) -> Json<AssignmentsBody> {
    let rules = state.assignments.rules();
    let defaults = state.assignments.defaults();
    Json(AssignmentsBody {
        rules: rules
            .rules()
            .iter()
            .map(|r| RuleBody {
                origin: r.origin.clone(),
                conditions: r.conditions(),
                role: r.role.spec.to_string(),
                external_id: r.role.session.external_id.is_some(),
                session_name: r.role.session.session_name.clone(),
                duration_seconds: r.role.session.duration.map(|d| d.as_secs()),
            })
            .collect(),
        default: defaults.default.as_ref().map(|r| r.spec.to_string()),
        container_default: defaults
            .container_default
            .as_ref()
            .map(|r| r.spec.to_string()),
        profile_role: state
            .engine
            .as_ref()
            .and_then(Engine::profile_role)
            .map(|r| r.spec.to_string()),
    })
}

/// Puts a config in force (`imds-agent reload`, the unit's ExecReload):
/// the body is the file's text. What can change without a restart does;
/// the answer names the keys that did and those that need a restart. The
/// role rules are read again either way, as at a SIGHUP.
///
/// Root's and the agent's user's only (`ExecReload=+` runs `imds-agent
/// reload` as root): a config names files the agent reads with its own
/// rights (`user_data_file`) and the data every workload is served, which
/// `admin.group`'s members, let in to read status and type MFA codes, must
/// not choose.
async fn reload_config(
    _trusted: Trusted,
    State(state): State<AdminState>,
    body: String,
) -> Result<Json<Outcome>, ApiError> {
    let reloader = state.reloader.clone().ok_or(ApiError(
        StatusCode::CONFLICT,
        "this agent takes no config reload".to_owned(),
    ))?;
    // Checking a config may read the files it names (certificates).
    let checking = Arc::clone(&reloader);
    let applied = tokio::task::spawn_blocking(move || checking.apply(&body))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // Read again either way, and answered once they were.
    let rules = reloader.reload_rules().await;
    let mut outcome = applied.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    outcome.rules = rules;
    Ok(Json(outcome))
}

/// The bootstrap body, in IMDS's own field names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapBody {
    #[serde(rename = "AccessKeyId")]
    access_key_id: String,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: String,
    #[serde(rename = "Token", default)]
    token: Option<String>,
}

/// Takes the agent's own credentials. Write-only: no route reads them back.
async fn bootstrap(
    State(state): State<AdminState>,
    body: Result<Json<BootstrapBody>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let engine = engine_of(&state)?;
    let Json(body) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "expected {{\"AccessKeyId\", \"SecretAccessKey\", \"Token\" (optional)}}: {}",
                e.body_text()
            ),
        )
    })?;
    let id_ok = (16..=128).contains(&body.access_key_id.len())
        && body
            .access_key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric());
    if !id_ok || body.secret_access_key.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "AccessKeyId must be 16 to 128 letters and digits, and SecretAccessKey not empty"
                .to_owned(),
        ));
    }
    engine
        .bootstrap(Keys {
            access_key_id: body.access_key_id,
            secret_access_key: Secret::new(body.secret_access_key),
            session_token: Secret::new(body.token.unwrap_or_default()),
        })
        .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MfaBody {
    code: String,
}

/// Takes an MFA code and answers once it opened the session (200), or STS
/// refused it (403: type another).
async fn mfa(
    State(state): State<AdminState>,
    body: Result<Json<MfaBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<actions::Opened>, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"code\": \"123456\"}}: {}", e.body_text()),
        )
    })?;
    let code =
        MfaCode::parse(&body.code).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    actions::hand_in_code(&state, code)
        .await
        .map(Json)
        .map_err(action_error)
}

/// An action's error as the admin socket answers it.
fn action_error(e: ActionError) -> ApiError {
    let status = match &e {
        ActionError::NoSession => StatusCode::CONFLICT,
        ActionError::Base(BaseError::UnknownProfile(_)) => StatusCode::NOT_FOUND,
        ActionError::Base(_) => StatusCode::CONFLICT,
        ActionError::CodeRefused(_) => StatusCode::FORBIDDEN,
        ActionError::CodeFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError(status, e.to_string())
}

/// The `/manage` page's address, secret included: the socket's users are
/// the agent's own.
async fn manage_url(State(state): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    match &state.manage_url {
        Some(url) => Ok(Json(serde_json::json!({ "url": url }))),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            "the agent serves no /manage page (set admin.web_listen, or run `imds-agent dev`)"
                .to_owned(),
        )),
    }
}

#[derive(Debug, Serialize)]
struct ProfilesBody {
    profiles: Vec<String>,
    active: Option<String>,
}

async fn profiles(State(state): State<AdminState>) -> Result<Json<ProfilesBody>, ApiError> {
    let (profiles, active) = engine_of(&state)?.profiles();
    Ok(Json(ProfilesBody { profiles, active }))
}

/// One profile, without its secret key.
async fn profile(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<ProfileInfo>, ApiError> {
    let engine = engine_of(&state)?;
    engine.profile(&name).map(Json).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            BaseError::UnknownProfile(name).to_string(),
        )
    })
}

#[derive(Debug, Serialize)]
struct SessionBody {
    base: String,
    profile: Option<String>,
    mode: String,
    mfa_serial: Option<String>,
    /// When the MFA session (or session token) expires; `null`: none open.
    mfa_session_expiration: Option<String>,
}

/// The agent's own session: where its credentials come from and, with MFA,
/// until when its session lasts.
async fn session(State(state): State<AdminState>) -> Result<Json<SessionBody>, ApiError> {
    let status = engine_of(&state)?.status().await;
    Ok(Json(SessionBody {
        base: status.base,
        profile: status.profile,
        mode: status.mode,
        mfa_serial: status.mfa_serial,
        mfa_session_expiration: status.mfa_session_expiration,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UseProfileBody {
    name: String,
}

async fn use_profile(
    State(state): State<AdminState>,
    body: Result<Json<UseProfileBody>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    engine_of(&state)?;
    let Json(body) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"name\": \"PROFILE\"}}: {}", e.body_text()),
        )
    })?;
    actions::switch_profile(&state, body.name)
        .await
        .map_err(action_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn refresh(State(state): State<AdminState>) -> Result<StatusCode, ApiError> {
    engine_of(&state)?.refresh_all();
    Ok(StatusCode::ACCEPTED)
}

async fn clear_session(State(state): State<AdminState>) -> Result<StatusCode, ApiError> {
    engine_of(&state)?.clear_session().await;
    Ok(StatusCode::NO_CONTENT)
}
