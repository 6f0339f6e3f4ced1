//! `GET /metrics`: the process-wide counters, and gauges of the agent's
//! state read when the metrics are.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::IntoResponse;

use super::probes;
use super::state::AdminState;
use crate::creds::engine::RoleStatus;
use crate::metrics;

/// Prometheus' text format: the counters, then gauges of the state, then
/// the process's own.
pub(super) async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    let mut out = String::new();
    metrics::global().render(&mut out);
    metrics::render_build_info(&mut out);
    let status = match &state.engine {
        Some(engine) => Some(engine.status().await),
        None => None,
    };
    metrics::help(
        &mut out,
        "imds_ready",
        "gauge",
        "1 when the agent is ready (what GET /readyz answers 200 to).",
    );
    let ready = probes::readiness(&state).await.is_empty();
    let _ = writeln!(out, "imds_ready {}", u8::from(ready));
    let rules = state.rules_status();
    metrics::help(&mut out, "imds_role_rules", "gauge", "Role rules in force.");
    let _ = writeln!(out, "imds_role_rules {}", rules.rules);
    metrics::help(
        &mut out,
        "imds_role_rules_refused",
        "gauge",
        "1 when the last change to the rule files was refused.",
    );
    let _ = writeln!(
        out,
        "imds_role_rules_refused {}",
        u8::from(rules.refused.is_some())
    );
    metrics::help(
        &mut out,
        "imds_workloads_seen",
        "gauge",
        "Workloads seen recently.",
    );
    let _ = writeln!(out, "imds_workloads_seen {}", state.seen.len());
    if let Some(left) = status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .and_then(|c| c.expires_in_seconds)
    {
        metrics::help(
            &mut out,
            "imds_certificate_expiry_seconds",
            "gauge",
            "Seconds until the Roles Anywhere certificate expires (alert well before 0).",
        );
        let _ = writeln!(out, "imds_certificate_expiry_seconds {left}");
    }
    if let Some(certificate) = status.as_ref().and_then(|s| s.certificate.as_ref()) {
        metrics::help(
            &mut out,
            "imds_certificate_reload_failed",
            "gauge",
            "1 while the Roles Anywhere files as they are now can't be used (the last good certificate stays in force).",
        );
        let failed = u8::from(certificate.reload_error.is_some());
        let _ = writeln!(out, "imds_certificate_reload_failed {failed}");
        metrics::help(
            &mut out,
            "imds_certificate_session_failed",
            "gauge",
            "1 while Roles Anywhere gives the agent no session (the status says why).",
        );
        let failed = u8::from(certificate.error.is_some());
        let _ = writeln!(out, "imds_certificate_session_failed {failed}");
    }
    if let Some(status) = &status {
        per_role(
            &mut out,
            "imds_credentials_remaining_seconds",
            "Seconds the cached credentials of each role have left.",
            &status.roles,
            |r| r.remaining_seconds,
        );
        per_role(
            &mut out,
            "imds_credentials_expiry_timestamp_seconds",
            "When the cached credentials of each role expire, in seconds since the epoch (alert on it minus time()).",
            &status.roles,
            |r| r.expires_at,
        );
    }
    metrics::process::render(&mut out);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

/// Gauge `name` of each role and session: `value`, where it has one.
fn per_role(
    out: &mut String,
    name: &str,
    text: &str,
    roles: &[RoleStatus],
    value: impl Fn(&RoleStatus) -> Option<u64>,
) {
    metrics::help(out, name, "gauge", text);
    for ((role, session), v) in soonest(roles, value) {
        let _ = writeln!(
            out,
            "{name}{{role=\"{}\",session=\"{}\"}} {v}",
            metrics::label(role),
            metrics::label(session)
        );
    }
}

/// `value` of each role and session name, the smallest where two entries
/// share both (their external id, duration or tags differ): one series per
/// label set, as the format requires, and the one to worry about first.
fn soonest(
    roles: &[RoleStatus],
    value: impl Fn(&RoleStatus) -> Option<u64>,
) -> std::collections::BTreeMap<(&str, &str), u64> {
    let mut out = std::collections::BTreeMap::new();
    for role in roles {
        if let Some(v) = value(role) {
            out.entry((role.role.as_str(), role.session_name.as_str()))
                .and_modify(|known: &mut u64| *known = (*known).min(v))
                .or_insert(v);
        }
    }
    out
}
