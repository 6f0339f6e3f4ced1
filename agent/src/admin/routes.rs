//! The admin API's routes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::app::Agent;
use crate::assign::RoleAssignment;
use crate::config::{Config, CredentialsConfig};
use crate::creds::engine::{BaseError, Engine, Status};
use crate::creds::mfa::MfaCode;
use crate::creds::{Keys, Secret};

#[derive(Debug, Clone)]
pub(super) struct AdminState {
    engine: Option<Engine>,
    roles: Arc<dyn RoleAssignment>,
    listen: Vec<SocketAddr>,
    http_tokens: &'static str,
    source: &'static str,
}

impl AdminState {
    pub(super) fn new(config: &Config, bound: &[SocketAddr], agent: &Agent) -> Self {
        Self {
            engine: agent.engine.clone(),
            roles: Arc::clone(&agent.roles),
            listen: bound.to_vec(),
            http_tokens: config.settings.http_tokens.as_str(),
            source: match config.credentials {
                CredentialsConfig::Static { .. } => "static",
                CredentialsConfig::Sts(_) => "sts",
            },
        }
    }

    fn engine(&self) -> Result<&Engine, ApiError> {
        self.engine.as_ref().ok_or(ApiError(
            StatusCode::CONFLICT,
            "the agent serves fixed keys (credentials.source = \"static\"); there is no STS session".to_owned(),
        ))
    }
}

pub(super) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/bootstrap/creds", post(bootstrap))
        .route("/mfa", post(mfa))
        .route("/profiles", get(profiles))
        .route("/profiles/active", put(use_profile))
        .route("/session", axum::routing::delete(clear_session))
        .route("/refresh", post(refresh))
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
    ready: bool,
    version: &'static str,
    listen: Vec<String>,
    http_tokens: &'static str,
    credentials_source: &'static str,
    roles_assigned: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sts: Option<Status>,
}

async fn status(State(state): State<AdminState>) -> Json<StatusBody> {
    let sts = match &state.engine {
        Some(engine) => Some(engine.status().await),
        None => None,
    };
    Json(StatusBody {
        ready: sts.as_ref().is_none_or(|s| s.ready),
        version: env!("CARGO_PKG_VERSION"),
        listen: state.listen.iter().map(ToString::to_string).collect(),
        http_tokens: state.http_tokens,
        credentials_source: state.source,
        roles_assigned: state
            .roles
            .wanted()
            .iter()
            .map(|r| r.spec.to_string())
            .collect(),
        sts,
    })
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
    let engine = state.engine()?;
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

async fn mfa(
    State(state): State<AdminState>,
    body: Result<Json<MfaBody>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let engine = state.engine()?;
    let Json(body) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"code\": \"123456\"}}: {}", e.body_text()),
        )
    })?;
    let code =
        MfaCode::parse(&body.code).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    engine
        .mfa_code(code)
        .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Serialize)]
struct ProfilesBody {
    profiles: Vec<String>,
    active: Option<String>,
}

async fn profiles(State(state): State<AdminState>) -> Result<Json<ProfilesBody>, ApiError> {
    let (profiles, active) = state.engine()?.profiles();
    Ok(Json(ProfilesBody { profiles, active }))
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
    let engine = state.engine()?;
    let Json(body) = body.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"name\": \"PROFILE\"}}: {}", e.body_text()),
        )
    })?;
    // The new profile may give workloads another role: that is what gets
    // fetched.
    engine
        .use_profile(&body.name, || state.roles.wanted())
        .map_err(|e| match e {
            BaseError::UnknownProfile(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
            _ => ApiError(StatusCode::CONFLICT, e.to_string()),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

async fn refresh(State(state): State<AdminState>) -> Result<StatusCode, ApiError> {
    state.engine()?.refresh_all();
    Ok(StatusCode::ACCEPTED)
}

async fn clear_session(State(state): State<AdminState>) -> Result<StatusCode, ApiError> {
    state.engine()?.clear_session().await;
    Ok(StatusCode::NO_CONTENT)
}
