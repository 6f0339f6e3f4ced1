//! What every request to the `/manage` page must show before it is
//! served: the page's own `Host` (a DNS-rebinding page's requests carry
//! their own name), the per-start secret (another local user, or any web
//! page, can reach a loopback port but does not know it), and, for a state
//! change, no foreign `Origin` or cross-site fetch. Every answer, refusals
//! included, carries headers that keep the page out of frames, referrers
//! and scripts.
//!
//! The secret travels in the URL (`?k=`) or an `Authorization: Bearer`
//! header, never in a cookie: cookies for 127.0.0.1 are sent to every port
//! of it, so any local user's server on another port would receive one.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

/// The page's identity for one start of the agent.
#[derive(Debug)]
pub(super) struct Guard {
    secret: String,
    /// `Host` values the page answers to.
    hosts: Vec<String>,
    /// `Origin` values a state change may come from.
    origins: Vec<String>,
}

impl Guard {
    /// A guard for the page at `addr` with `secret`.
    pub(super) fn new(addr: std::net::SocketAddr, secret: String) -> Self {
        let port = addr.port();
        let mut hosts = vec![addr.to_string()];
        if addr.ip().is_loopback() {
            hosts.push(format!("localhost:{port}"));
        }
        let origins = hosts.iter().map(|h| format!("http://{h}")).collect();
        Self {
            secret,
            hosts,
            origins,
        }
    }

    pub(super) fn secret(&self) -> &str {
        &self.secret
    }

    /// Why `parts` may not be served, if it may not.
    fn refusal(&self, method: &Method, uri: &http::Uri, headers: &HeaderMap) -> Option<Refusal> {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if !host.is_some_and(|h| self.hosts.iter().any(|ours| ours == h)) {
            return Some(Refusal::Host);
        }
        let changes = !matches!(*method, Method::GET | Method::HEAD);
        if changes {
            // A browser says where a request comes from: `Sec-Fetch-Site`
            // (no page can set it) and `Origin`. Under the page's own
            // `Referrer-Policy: no-referrer`, Chromium sends its forms'
            // `Origin` as "null", which a sandboxed or data: page sends
            // too: "null" passes only with `Sec-Fetch-Site: same-origin`.
            // A script (curl) sends neither and is judged by its secret.
            let site = headers.get("sec-fetch-site").and_then(|s| s.to_str().ok());
            if site.is_some_and(|s| s != "same-origin" && s != "none") {
                return Some(Refusal::Origin);
            }
            if let Some(origin) = headers.get(header::ORIGIN) {
                let origin = origin.to_str().unwrap_or("");
                let ours = self.origins.iter().any(|x| x == origin)
                    || (origin == "null" && site == Some("same-origin"));
                if !ours {
                    return Some(Refusal::Origin);
                }
            }
        }
        if !self.shown_secret(uri, headers) {
            return Some(Refusal::Secret);
        }
        None
    }

    fn shown_secret(&self, uri: &http::Uri, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let query = uri.query().and_then(|q| super::form::field(q, "k"));
        [bearer.map(str::to_owned), query]
            .iter()
            .flatten()
            .any(|shown| same(shown.as_bytes(), self.secret.as_bytes()))
    }
}

/// Compares in time that depends on the length only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Clone, Copy)]
enum Refusal {
    Host,
    Origin,
    Secret,
}

impl Refusal {
    fn answer(self) -> Response {
        let (status, message) = match self {
            Refusal::Host => (
                StatusCode::MISDIRECTED_REQUEST,
                "this page answers only to its own address",
            ),
            Refusal::Origin => (
                StatusCode::FORBIDDEN,
                "changes are taken only from the page itself",
            ),
            Refusal::Secret => (
                StatusCode::FORBIDDEN,
                "open the address `imds-agent manage` prints: it carries this start's secret",
            ),
        };
        let body = serde_json::json!({ "error": { "message": message } });
        (status, axum::Json(body)).into_response()
    }
}

/// The middleware: refuses what the guard refuses, and stamps the headers
/// on every answer.
pub(super) async fn check(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response<Body> {
    let refusal = guard.refusal(request.method(), request.uri(), request.headers());
    let mut response = match refusal {
        Some(refusal) => {
            tracing::warn!(
                method = %request.method(),
                path = request.uri().path(),
                why = ?refusal,
                "refused a request to the /manage page"
            );
            refusal.answer()
        }
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new("127.0.0.1:8123".parse().unwrap(), "s3cret".into())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn refused(method: Method, uri: &str, pairs: &[(&'static str, &'static str)]) -> bool {
        guard()
            .refusal(&method, &uri.parse().unwrap(), &headers(pairs))
            .is_some()
    }

    #[test]
    fn the_page_answers_its_own_host_with_the_secret_only() {
        assert!(!refused(
            Method::GET,
            "/manage?k=s3cret",
            &[("host", "127.0.0.1:8123")]
        ));
        assert!(!refused(
            Method::GET,
            "/manage?k=s3cret",
            &[("host", "localhost:8123")]
        ));
        assert!(refused(
            Method::GET,
            "/manage?k=s3cret",
            &[("host", "evil.example:8123")]
        ));
        assert!(refused(Method::GET, "/manage?k=s3cret", &[]));
        assert!(refused(
            Method::GET,
            "/manage?k=s3cre",
            &[("host", "127.0.0.1:8123")]
        ));
        assert!(refused(
            Method::GET,
            "/manage",
            &[("host", "127.0.0.1:8123")]
        ));
        let bearer = [
            ("host", "127.0.0.1:8123"),
            ("authorization", "Bearer s3cret"),
        ];
        assert!(!refused(Method::DELETE, "/manage/session", &bearer));
    }

    #[test]
    fn a_change_from_another_origin_is_refused_even_with_the_secret() {
        let from = |origin| {
            refused(
                Method::POST,
                "/manage/session?k=s3cret",
                &[("host", "127.0.0.1:8123"), ("origin", origin)],
            )
        };
        assert!(!from("http://127.0.0.1:8123"));
        assert!(from("http://127.0.0.1:8124"));
        assert!(from("null"));
        let null_from_our_form = [
            ("host", "127.0.0.1:8123"),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert!(!refused(
            Method::POST,
            "/manage/ui/code?k=s3cret",
            &null_from_our_form
        ));
        assert!(from("https://evil.example"));
        assert!(refused(
            Method::POST,
            "/manage/session?k=s3cret",
            &[("host", "127.0.0.1:8123"), ("sec-fetch-site", "cross-site")]
        ));
    }
}
