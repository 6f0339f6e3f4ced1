//! `GET /healthz` and `GET /readyz`, for load balancers, Kubernetes probes
//! and service monitors: on the admin socket and on the metrics listener.
//!
//! Alive is "the process answers": a stuck runtime answers nothing. Ready
//! is what the agent promises its workloads: rules in force as written,
//! credentials of its own, and valid credentials for every role a workload
//! will ask for. A not-ready answer says why, one line per reason.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::state::AdminState;

const TEXT: (axum::http::HeaderName, &str) = (
    axum::http::header::CONTENT_TYPE,
    "text/plain; charset=utf-8",
);

/// Always 200 while the agent serves.
pub(super) async fn healthz() -> impl IntoResponse {
    ([TEXT], "ok\n")
}

/// 200 when ready; 503 without the reasons otherwise: the metrics
/// listener may face the network and every workload, and the reasons name
/// roles, sessions (units, containers), rule files and STS's errors.
pub(super) async fn readyz_brief(State(state): State<AdminState>) -> impl IntoResponse {
    if readiness(&state).await.is_empty() {
        (StatusCode::OK, [TEXT], "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, [TEXT], "not ready\n")
    }
}

/// 200 when ready; 503 with the reasons otherwise (the admin socket).
pub(super) async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let reasons = readiness(&state).await;
    if reasons.is_empty() {
        return (StatusCode::OK, [TEXT], "ready\n".to_owned());
    }
    let mut body = String::from("not ready:\n");
    for reason in &reasons {
        body.push_str("- ");
        body.push_str(reason);
        body.push('\n');
    }
    (StatusCode::SERVICE_UNAVAILABLE, [TEXT], body)
}

/// Why the agent is not ready (empty: it is).
pub(super) async fn readiness(state: &AdminState) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(refused) = state.rules_status().refused {
        reasons.push(format!(
            "the last change to the role rules was refused (the previous rules stay in force): {refused}"
        ));
    }
    if let Some(engine) = &state.engine {
        reasons.extend(engine.unready().await);
    }
    reasons
}
