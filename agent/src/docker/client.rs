//! The Docker Engine API over its unix socket: JSON GETs and the event
//! stream. Unversioned paths, so any daemon since API 1.24 answers in its
//! own version (Debian's 20.10 caps at 1.41).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

/// A Docker API failure.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The socket could not be reached.
    #[error("cannot reach Docker at {0}")]
    Connect(PathBuf, #[source] std::io::Error),
    /// HTTP failed.
    #[error("Docker API request {0} failed")]
    Http(String, #[source] hyper::Error),
    /// Docker answered an error.
    #[error("Docker answered {status} to {path}: {body}")]
    Status {
        /// The path asked.
        path: String,
        /// The status.
        status: u16,
        /// Docker's message.
        body: String,
    },
    /// The answer was not what the API documents.
    #[error("Docker's answer to {0} could not be read")]
    Body(String, #[source] serde_json::Error),
    /// An answer too large to be a container.
    #[error("Docker's answer to {0} is over 4 MiB")]
    TooLarge(String),
    /// Docker did not answer in time.
    #[error("Docker did not answer {0} within {REQUEST_TIMEOUT:?}")]
    Timeout(String),
}

/// How long one API call may take (the event stream's head included, not
/// its events): a daemon that hangs must not stall the watcher for good.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The client.
#[derive(Debug, Clone)]
pub struct DockerClient {
    socket: PathBuf,
}

const MAX_BODY: usize = 4 << 20;

impl DockerClient {
    /// A client of the daemon at `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    async fn get(&self, path: &str) -> Result<hyper::Response<Incoming>, DockerError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.get_head(path))
            .await
            .map_err(|_| DockerError::Timeout(path.to_owned()))?
    }

    async fn get_head(&self, path: &str) -> Result<hyper::Response<Incoming>, DockerError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| DockerError::Connect(self.socket.clone(), e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| DockerError::Http(path.to_owned(), e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = http::Request::get(path)
            .header(http::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|_| DockerError::TooLarge(path.to_owned()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| DockerError::Http(path.to_owned(), e))?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = collect(response.into_body(), path)
                .await
                .unwrap_or_default();
            return Err(DockerError::Status {
                path: path.to_owned(),
                status,
                body: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        Ok(response)
    }

    /// GETs `path` and parses the JSON answer.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, DockerError> {
        let response = self.get(path).await?;
        let body = tokio::time::timeout(REQUEST_TIMEOUT, collect(response.into_body(), path))
            .await
            .map_err(|_| DockerError::Timeout(path.to_owned()))??;
        serde_json::from_slice(&body).map_err(|e| DockerError::Body(path.to_owned(), e))
    }

    /// The event stream (`GET /events`) for containers and networks.
    pub async fn events(&self) -> Result<Events, DockerError> {
        let filters = r#"{"type":["container","network"]}"#;
        let path = format!("/events?filters={}", urlencode(filters));
        let response = self.get(&path).await?;
        Ok(Events {
            body: response.into_body(),
            buf: Vec::new(),
        })
    }
}

async fn collect(body: Incoming, path: &str) -> Result<Bytes, DockerError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| DockerError::TooLarge(path.to_owned()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Docker's events, one JSON object a line.
#[derive(Debug)]
pub struct Events {
    body: Incoming,
    buf: Vec<u8>,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Event {
    /// `container` or `network`.
    #[serde(rename = "Type", default)]
    pub kind: String,
    /// `start`, `die`, `connect`, …
    #[serde(rename = "Action", default)]
    pub action: String,
    /// What it is about.
    #[serde(rename = "Actor", default)]
    pub actor: Actor,
}

/// The object of an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Actor {
    /// The container's or network's id.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Extra attributes (`container` on network events).
    #[serde(rename = "Attributes", default)]
    pub attributes: std::collections::HashMap<String, String>,
}

impl Events {
    /// The next event; `None` when the stream ends.
    pub async fn next(&mut self) -> Result<Option<Event>, DockerError> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|e| DockerError::Body("/events".to_owned(), e));
            }
            if self.buf.len() > MAX_BODY {
                return Err(DockerError::TooLarge("/events".to_owned()));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(DockerError::Http("/events".to_owned(), e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse() {
        let line = r#"{"status":"start","id":"abc","from":"x","Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{"name":"web"}},"scope":"local","time":1,"timeNano":1}"#;
        let event: Event = serde_json::from_str(line).unwrap();
        assert_eq!(event.kind, "container");
        assert_eq!(event.action, "start");
        assert_eq!(event.actor.id, "abc");
        let network = r#"{"Type":"network","Action":"connect","Actor":{"ID":"n1","Attributes":{"container":"abc","name":"bridge","type":"bridge"}}}"#;
        let event: Event = serde_json::from_str(network).unwrap();
        assert_eq!(event.actor.attributes["container"], "abc");
        assert_eq!(urlencode(r#"{"a":["b"]}"#), "%7B%22a%22%3A%5B%22b%22%5D%7D");
    }
}
