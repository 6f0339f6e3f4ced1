//! Proxy mode's client of the real IMDS: GETs what the protocol decided to
//! forward, with an IMDSv2 token of the agent's own, and passes the status,
//! headers and body back. The agent's own connections are exempt from the
//! DNAT redirect (its uid), so they reach EC2's IMDS.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;

use crate::imds::headers::{TOKEN, TOKEN_TTL_SECONDS};
use crate::imds::{Forward, upstream::trim_listing};

/// The token the agent asks for upstream: EC2's longest.
const TOKEN_TTL: u32 = 21_600;
/// A token is replaced this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// The largest answer passed through (user data is at most 16 KiB).
const MAX_BODY: usize = 1 << 20;

/// Why the real IMDS could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection, or no answer in time.
    #[error("the real IMDS at {0} did not answer: {1}")]
    Unreachable(SocketAddr, String),
    /// Its token endpoint refused.
    #[error("the real IMDS refused a token: {0}")]
    Token(StatusCode),
}

/// The client.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    timeout: Duration,
    token: tokio::sync::Mutex<Option<(HeaderValue, Instant)>>,
}

/// What the real IMDS answered.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Upstream {
    /// A client of the IMDS at `addr`, giving up on a request after
    /// `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Self {
            addr,
            timeout,
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// The real IMDS's answer to `forward`, ready to send. `token_ttl` is
    /// what the client's own token has left (the agent's header, not the
    /// upstream's).
    pub async fn respond(
        &self,
        method: &Method,
        forward: &Forward,
        token_ttl: Option<u32>,
        close: bool,
    ) -> http::Response<Body> {
        let method = if method == Method::HEAD {
            Method::HEAD
        } else {
            Method::GET
        };
        let answer = self.get(&method, &forward.path).await;
        crate::metrics::global().forwarded(answer.is_ok());
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(error = %e, path = %forward.path, "proxy: no answer from the real IMDS");
                let mut out = http::Response::new(Body::from(
                    "The instance metadata service did not answer.\n",
                ));
                *out.status_mut() = StatusCode::BAD_GATEWAY;
                out.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                return out;
            }
        };
        let body = match &forward.keep {
            Some(keep) if answer.status == StatusCode::OK => {
                trim_listing(&answer.body, keep, &forward.extra)
            }
            _ => answer.body,
        };
        let mut out = http::Response::new(Body::from(body));
        *out.status_mut() = answer.status;
        let headers = out.headers_mut();
        for name in [
            header::SERVER,
            header::CONTENT_TYPE,
            header::LAST_MODIFIED,
            header::ETAG,
            header::ACCEPT_RANGES,
        ] {
            if let Some(value) = answer.headers.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        if let Some(ttl) = token_ttl {
            headers.insert(TOKEN_TTL_SECONDS, HeaderValue::from(ttl));
        }
        if close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        out
    }

    /// GETs (or HEADs) `path` with a token, getting a new token once if the
    /// one held is refused.
    async fn get(&self, method: &Method, path: &str) -> Result<Answer, UpstreamError> {
        let token = self.token(false).await?;
        let answer = self.send(method.clone(), path, Some(&token), None).await?;
        if answer.status != StatusCode::UNAUTHORIZED {
            return Ok(answer);
        }
        let token = self.token(true).await?;
        self.send(method.clone(), path, Some(&token), None).await
    }

    /// The agent's upstream token, fetched anew when it is about to expire
    /// or `renew` says the held one was refused.
    async fn token(&self, renew: bool) -> Result<HeaderValue, UpstreamError> {
        let mut held = self.token.lock().await;
        if !renew
            && let Some((token, expires)) = &*held
            && Instant::now() + TOKEN_MARGIN < *expires
        {
            return Ok(token.clone());
        }
        let asked = Instant::now();
        let answer = self
            .send(Method::PUT, "/latest/api/token", None, Some(TOKEN_TTL))
            .await?;
        if answer.status != StatusCode::OK {
            return Err(UpstreamError::Token(answer.status));
        }
        let token = HeaderValue::from_maybe_shared(answer.body)
            .map_err(|_| UpstreamError::Token(StatusCode::BAD_GATEWAY))?;
        *held = Some((token.clone(), asked + Duration::from_secs(TOKEN_TTL.into())));
        Ok(token)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&HeaderValue>,
        ttl: Option<u32>,
    ) -> Result<Answer, UpstreamError> {
        let unreachable =
            |e: &dyn std::fmt::Display| UpstreamError::Unreachable(self.addr, e.to_string());
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| unreachable(&e))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| unreachable(&e))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let mut request = http::Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, "169.254.169.254");
            if let Some(token) = token {
                request = request.header(TOKEN, token.clone());
            }
            if let Some(ttl) = ttl {
                request = request.header(TOKEN_TTL_SECONDS, ttl);
            }
            let request = request
                .body(Empty::<Bytes>::new())
                .map_err(|e| unreachable(&e))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| unreachable(&e))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| unreachable(&e))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| unreachable(&"timed out"))?
    }
}
