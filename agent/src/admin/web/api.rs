//! The `/manage` JSON API, in aws-mock-metadata's shape, for the scripts
//! written against it: `GET /manage/profiles`, `GET /manage/profiles/NAME`,
//! `GET|POST|DELETE /manage/session`. Errors are `{"error": {"message"}}`.
//!
//! Unlike aws-mock-metadata, a session is shown by its access key id's
//! suffix and expiry, never its secret key or token: the README says why.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::WebState;
use super::form;
use crate::admin::actions::{self, ActionError};
use crate::creds::engine::{BaseError, Engine, ProfileInfo, Status};
use crate::creds::mfa::MfaCode;

/// An error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": { "message": message.into() } })),
    )
        .into_response()
}

/// The answer when the agent serves fixed keys.
fn no_session() -> Response {
    error(StatusCode::CONFLICT, ActionError::NoSession.to_string())
}

/// One profile in aws-mock-metadata's fields (and a few of ours).
fn profile_json(info: &ProfileInfo, status: &Status) -> Value {
    let mut profile = json!({
        "name": info.name,
        "accessKeySuffix": info.access_key_suffix,
        "region": info.region,
        "mode": info.mode,
        "tokenDuration": info.duration_seconds,
    });
    if let Some(role) = &info.role {
        profile["roleArn"] = json!(role);
    }
    if let Some(serial) = &info.mfa_serial {
        profile["mfaSerial"] = json!(serial);
    }
    if info.active {
        profile["active"] = json!(true);
        if let Some(session) = session_json(status) {
            profile["session"] = session;
        }
    }
    profile
}

/// The open session, if one is.
fn session_json(status: &Status) -> Option<Value> {
    let expiration = status.mfa_session_expiration.as_ref()?;
    Some(json!({
        "accessKeySuffix": status.mfa_session_key_suffix,
        "expiration": expiration,
    }))
}

/// What `GET /manage/session` answers.
async fn session_body(engine: &Engine) -> Value {
    let status = engine.status().await;
    let profile = status
        .profile
        .as_deref()
        .and_then(|name| engine.profile(name))
        .map(|info| profile_json(&info, &status));
    let mut body = json!({
        "profile": profile,
        "mfaSerial": status.mfa_serial,
        "mfaPrompt": status.mfa_prompt,
    });
    if let Some(session) = session_json(&status) {
        body["session"] = session;
    }
    body
}

pub(super) async fn profiles(State(state): State<WebState>) -> Response {
    let Some(engine) = state.admin.engine.as_ref() else {
        return no_session();
    };
    let status = engine.status().await;
    let (names, _) = engine.profiles();
    let list: Vec<Value> = names
        .iter()
        .filter_map(|name| engine.profile(name))
        .map(|info| profile_json(&info, &status))
        .collect();
    Json(json!({ "profiles": list })).into_response()
}

pub(super) async fn profile(State(state): State<WebState>, Path(name): Path<String>) -> Response {
    let Some(engine) = state.admin.engine.as_ref() else {
        return no_session();
    };
    let Some(info) = engine.profile(&name) else {
        return error(StatusCode::NOT_FOUND, "profile does not exist");
    };
    let status = engine.status().await;
    Json(json!({ "profile": profile_json(&info, &status) })).into_response()
}

pub(super) async fn session(State(state): State<WebState>) -> Response {
    match state.admin.engine.as_ref() {
        Some(engine) => Json(session_body(engine).await).into_response(),
        None => no_session(),
    }
}

pub(super) async fn clear_session(State(state): State<WebState>) -> Response {
    let Some(engine) = state.admin.engine.as_ref() else {
        return no_session();
    };
    engine.clear_session().await;
    tracing::info!("session cleared from the /manage page");
    Json(session_body(engine).await).into_response()
}

/// What `POST /manage/session` was sent.
#[derive(Debug, Default, PartialEq, Eq)]
struct StartRequest {
    token: Option<String>,
    profile: Option<String>,
}

/// The fields of a form or a JSON object; `session` is taken as the
/// profile's name too (the issue's and some scripts' spelling).
fn start_request(headers: &HeaderMap, body: &[u8]) -> Result<StartRequest, String> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let fields: Vec<(String, String)> = if json {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let Value::Object(object) = value else {
            return Err("the body is not a JSON object".into());
        };
        object
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                Value::Number(n) => Some((k, n.to_string())),
                _ => None,
            })
            .collect()
    } else {
        let text = std::str::from_utf8(body).map_err(|_| "the form is not UTF-8".to_owned())?;
        form::pairs(text)
    };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    Ok(StartRequest {
        token: get("token"),
        profile: get("profile").or_else(|| get("session")),
    })
}

/// `POST /manage/session`: switch to `profile` and/or open the session
/// with `token`. 400 for neither, a malformed code or an unknown profile;
/// 403 when STS refuses the code; 200 with the session.
pub(super) async fn start_session(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(engine) = state.admin.engine.as_ref() else {
        return no_session();
    };
    let request = match start_request(&headers, &body) {
        Ok(request) => request,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    if request == StartRequest::default() {
        return error(StatusCode::BAD_REQUEST, "token and/or profile is required");
    }
    // Checked before anything changes: a bad code must not switch profile.
    let code = match request.token.as_deref().map(MfaCode::parse).transpose() {
        Ok(code) => code,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if let Some(name) = request.profile {
        if engine.profile(&name).is_none() {
            return error(StatusCode::BAD_REQUEST, "profile does not exist");
        }
        if let Err(e) = actions::switch_profile(&state.admin, name).await {
            return action_error(e);
        }
    }
    if let Some(code) = code
        && let Err(e) = actions::hand_in_code(&state.admin, code).await
    {
        return action_error(e);
    }
    Json(session_body(engine).await).into_response()
}

/// An action's error as this API answers it.
fn action_error(e: ActionError) -> Response {
    let status = match &e {
        ActionError::Base(BaseError::UnknownProfile(_) | BaseError::NoMfa) => {
            StatusCode::BAD_REQUEST
        }
        ActionError::CodeRefused(_) => StatusCode::FORBIDDEN,
        ActionError::CodeFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
        ActionError::NoSession | ActionError::Base(_) => StatusCode::CONFLICT,
    };
    error(status, e.to_string())
}

pub(super) async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such page")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(content_type: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        h
    }

    #[test]
    fn a_start_is_read_from_a_form_or_json() {
        let form = typed("application/x-www-form-urlencoded");
        assert_eq!(
            start_request(&form, b"token=123456&session=other").unwrap(),
            StartRequest {
                token: Some("123456".into()),
                profile: Some("other".into())
            }
        );
        let json = typed("application/json");
        assert_eq!(
            start_request(&json, br#"{"token": 123456, "profile": "dev"}"#).unwrap(),
            StartRequest {
                token: Some("123456".into()),
                profile: Some("dev".into())
            }
        );
        assert!(start_request(&json, b"[1]").is_err());
        assert!(start_request(&json, b"{").is_err());
        assert_eq!(
            start_request(&form, b"token=").unwrap(),
            StartRequest::default()
        );
    }
}
