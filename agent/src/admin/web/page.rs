//! The page itself: plain HTML rendered here, forms that post back and
//! are answered with a redirect to the page (no script, nothing fetched
//! from elsewhere). While a code is needed the page reloads itself every
//! few seconds, so a prompt shows without a click.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::StatusCode;

use super::WebState;
use super::form;
use crate::admin::actions::{self, ActionError};
use crate::creds::engine::Status;
use crate::creds::mfa::MfaCode;

/// What a form did, named in the redirect back (fixed words only: the
/// page never shows text a link brought).
fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "opened" => "The MFA session is open.",
        "refused" => "STS refused that code: type the current one.",
        "failed" => "The code could not be used (the agent's log says why).",
        "bad-code" => "An MFA code is exactly six digits.",
        "cleared" => "The session was cleared: the next request needs a new code.",
        "switched" => "Profile switched.",
        "no-profile" => "There is no such profile.",
        "refreshing" => "Every role is being refreshed.",
        "fixed-keys" => "The agent serves fixed keys: there is no session to manage.",
        _ => return None,
    })
}

/// `text` safe in HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}\
.notice{background:#eef6ee;border:1px solid #9c9;padding:.5rem 1rem}\
.prompt{background:#fff4e0;border:1px solid #e0a040;padding:.5rem 1rem}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}\
dt{font-weight:600}form{display:inline-block;margin:.25rem 1rem .25rem 0}";

/// `GET /manage`.
pub(super) async fn show(State(state): State<WebState>, RawQuery(query): RawQuery) -> Response {
    let done = query.as_deref().and_then(|q| form::field(q, "done"));
    let Some(engine) = &state.admin.engine else {
        return Html(render_fixed(&state.secret)).into_response();
    };
    let status = engine.status().await;
    let (profiles, _) = engine.profiles();
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for seen in state.admin.seen.list() {
        if let Some(role) = seen.role {
            users.entry(role).or_default().push(seen.workload);
        }
    }
    let view = View {
        secret: &state.secret,
        status: &status,
        profiles: &profiles,
        users: &users,
        notice: done.as_deref().and_then(notice),
    };
    Html(view.render()).into_response()
}

/// What the page shows.
struct View<'a> {
    secret: &'a str,
    status: &'a Status,
    profiles: &'a [String],
    users: &'a BTreeMap<String, Vec<String>>,
    notice: Option<&'static str>,
}

impl View<'_> {
    fn render(&self) -> String {
        let s = self.status;
        let k = form::encode(self.secret);
        let prompt = &s.mfa_prompt;
        let mut out = String::new();
        let _ = write!(
            out,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>imds-agent</title>{}<style>{STYLE}</style></head><body><h1>imds-agent</h1>",
            if prompt.needed || prompt.waiting {
                "<meta http-equiv=\"refresh\" content=\"3\">"
            } else {
                ""
            }
        );
        if let Some(notice) = self.notice {
            let _ = write!(out, "<p class=\"notice\" id=\"notice\">{notice}</p>");
        }
        if prompt.waiting || prompt.needed {
            let _ = write!(
                out,
                "<p class=\"prompt\" id=\"prompt\">{} an MFA code from {}{}.</p>",
                if prompt.waiting {
                    "A request is waiting for"
                } else {
                    "The session needs"
                },
                escape(prompt.serial.as_deref().unwrap_or("your MFA device")),
                prompt
                    .role
                    .as_deref()
                    .map(|r| format!(" (for role {})", escape(r)))
                    .unwrap_or_default()
            );
        }
        if let Some(why) = &prompt.refused {
            let _ = write!(
                out,
                "<p class=\"prompt\" id=\"refused\">The last code was refused: {}</p>",
                escape(why)
            );
        }
        out.push_str("<h2>Session</h2><dl>");
        let row = |out: &mut String, name: &str, id: &str, value: &str| {
            let _ = write!(out, "<dt>{name}</dt><dd id=\"{id}\">{}</dd>", escape(value));
        };
        row(&mut out, "Credentials", "base", &s.base);
        row(&mut out, "Mode", "mode", &s.mode);
        if let Some(serial) = &s.mfa_serial {
            row(&mut out, "MFA device", "mfa-serial", serial);
        }
        let session = match (&s.mfa_session_key_suffix, &s.mfa_session_expiration) {
            (Some(suffix), Some(expiration)) => {
                format!("access key …{suffix}, expires {expiration}")
            }
            _ => "none open".to_owned(),
        };
        row(&mut out, "Session", "session", &session);
        out.push_str("</dl>");
        if s.mfa_serial.is_some() {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/manage/ui/code?k={k}\"><label>MFA code <input id=\"token\" name=\"token\" inputmode=\"numeric\" autocomplete=\"one-time-code\" pattern=\"[0-9]{{6}}\" maxlength=\"6\" required autofocus></label> <button id=\"submit-code\">Open session</button></form>"
            );
        }
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/manage/ui/clear?k={k}\"><button id=\"clear\">Clear session</button></form>"
        );
        if !self.profiles.is_empty() {
            out.push_str("<h2>Profile</h2><dl>");
            let active = s.profile.as_deref().unwrap_or("");
            row(&mut out, "Active", "profile", active);
            out.push_str("</dl>");
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/manage/ui/profile?k={k}\"><select id=\"profile-choice\" name=\"profile\">"
            );
            for name in self.profiles {
                let _ = write!(
                    out,
                    "<option{}>{}</option>",
                    if name == active { " selected" } else { "" },
                    escape(name)
                );
            }
            out.push_str("</select> <button id=\"switch\">Switch profile</button></form>");
        }
        out.push_str("<h2>Roles served</h2><table id=\"roles\"><tr><th>Role</th><th>Session name</th><th>Credentials</th><th>Used by</th></tr>");
        for role in &s.roles {
            let creds = match (&role.access_key_suffix, &role.expiration, role.valid) {
                (Some(suffix), Some(expiration), true) => {
                    format!("…{suffix}, expires {expiration}")
                }
                _ if role.fetching => "being fetched…".to_owned(),
                _ => role.error.clone().unwrap_or_else(|| "none yet".to_owned()),
            };
            let users = self
                .users
                .get(&role.role)
                .map(|u| u.join(", "))
                .unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&role.role),
                escape(&role.session_name),
                escape(&creds),
                escape(&users)
            );
        }
        let _ = write!(
            out,
            "</table><form method=\"post\" action=\"/manage/ui/refresh?k={k}\"><button id=\"refresh\">Refresh credentials</button></form> <a id=\"reload\" href=\"/manage?k={k}\">Reload</a></body></html>"
        );
        out
    }
}

fn render_fixed(secret: &str) -> String {
    let k = form::encode(secret);
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>imds-agent</title><style>{STYLE}</style></head><body><h1>imds-agent</h1><p id=\"notice\">{}</p><a id=\"reload\" href=\"/manage?k={k}\">Reload</a></body></html>",
        notice("fixed-keys").unwrap_or_default()
    )
}

/// Back to the page, saying what was done.
fn back(state: &WebState, done: &str) -> Response {
    Redirect::to(&format!(
        "/manage?k={}&done={done}",
        form::encode(&state.secret)
    ))
    .into_response()
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    form::field(std::str::from_utf8(body).ok()?, name)
}

/// The page's answer to an action's error.
fn failed(state: &WebState, e: &ActionError) -> Response {
    let done = match e {
        ActionError::NoSession => "fixed-keys",
        ActionError::CodeRefused(_) => "refused",
        ActionError::Base(crate::creds::engine::BaseError::UnknownProfile(_)) => "no-profile",
        ActionError::Base(_) | ActionError::CodeFailed(_) => "failed",
    };
    back(state, done)
}

/// `POST /manage/ui/code`: `token=123456`.
pub(super) async fn code(State(state): State<WebState>, body: Bytes) -> Response {
    let Some(code) = form_field(&body, "token").and_then(|c| MfaCode::parse(c.trim()).ok()) else {
        return back(&state, "bad-code");
    };
    match actions::hand_in_code(&state.admin, code).await {
        Ok(_) => back(&state, "opened"),
        Err(e) => failed(&state, &e),
    }
}

/// `POST /manage/ui/clear`.
pub(super) async fn clear(State(state): State<WebState>) -> Response {
    let Some(engine) = &state.admin.engine else {
        return back(&state, "fixed-keys");
    };
    engine.clear_session().await;
    tracing::info!("session cleared from the /manage page");
    back(&state, "cleared")
}

/// `POST /manage/ui/profile`: `profile=NAME`.
pub(super) async fn profile(State(state): State<WebState>, body: Bytes) -> Response {
    let Some(name) = form_field(&body, "profile") else {
        return (StatusCode::BAD_REQUEST, "profile is required").into_response();
    };
    match actions::switch_profile(&state.admin, name).await {
        Ok(()) => back(&state, "switched"),
        Err(e) => failed(&state, &e),
    }
}

/// `POST /manage/ui/refresh`.
pub(super) async fn refresh(State(state): State<WebState>) -> Response {
    let Some(engine) = &state.admin.engine else {
        return back(&state, "fixed-keys");
    };
    engine.refresh_all();
    back(&state, "refreshing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn only_known_notices_show() {
        assert!(notice("opened").is_some());
        assert!(notice("<b>hi</b>").is_none());
    }
}
