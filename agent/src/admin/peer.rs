//! Who may talk to the admin socket: root, the agent's own user, and
//! members of `admin.group`, checked on every connection by the peer's
//! credentials (`SO_PEERCRED`, `SO_PEERGROUPS`), not only by the socket
//! file's mode: a mode an operator loosened, or a directory someone else
//! can enter, must not open the agent to every user.

use std::io;

use tokio::net::{UnixListener, UnixStream};

/// Who is let in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Allowed {
    /// The agent's own uid.
    pub(super) uid: u32,
    /// `admin.group`, if set.
    pub(super) group: Option<u32>,
}

impl Allowed {
    /// Whether a peer with `uid`, primary `gid` and supplementary
    /// `groups` may use the socket.
    pub(super) fn admits(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        uid == 0
            || uid == self.uid
            || self
                .group
                .is_some_and(|group| gid == group || groups.contains(&group))
    }
}

/// The uid of the peer a connection came from (`SO_PEERCRED`: whoever
/// connected). A peer whose credentials cannot be read counts as nobody's:
/// the checks fail closed.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerUid(pub(super) u32);

/// A request from root or the agent's own user, which can read the agent's
/// memory and config anyway: the routes `admin.group`'s members may not
/// use take it. As an extractor of the request's head it refuses before
/// the body is read.
#[derive(Debug)]
pub(super) struct Trusted;

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Trusted {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let uid = parts
            .extensions
            .get::<axum::extract::ConnectInfo<PeerUid>>()
            .map_or(u32::MAX, |info| info.0.0);
        if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
            return Ok(Trusted);
        }
        tracing::warn!(
            uid,
            path = %parts.uri.path(),
            "admin socket: refused a request only root or the agent's user may make"
        );
        let why = "only root or the agent's user may do this (a config reload: systemctl reload imds-agent, or imds-agent reload as root)";
        Err((
            axum::http::StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({ "error": why })),
        )
            .into_response())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Guarded>> for PeerUid {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Guarded>) -> Self {
        PeerUid(stream.io().peer_cred().map_or(u32::MAX, |c| c.uid()))
    }
}

/// The admin socket's listener: hands on only the connections of peers
/// `allowed` admits, and closes the others at once.
#[derive(Debug)]
pub(super) struct Guarded {
    /// The socket.
    pub(super) listener: UnixListener,
    /// Who may use it.
    pub(super) allowed: Allowed,
}

impl Guarded {
    fn admits(&self, stream: &UnixStream) -> bool {
        let Ok(cred) = stream.peer_cred() else {
            return false;
        };
        let groups = crate::sys::socket::peer_groups(stream).unwrap_or_default();
        self.allowed.admits(cred.uid(), cred.gid(), &groups)
    }
}

impl axum::serve::Listener for Guarded {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) if self.admits(&stream) => return (stream, addr),
                Ok((stream, _)) => {
                    let who = stream.peer_cred().ok().map(|c| (c.uid(), c.pid()));
                    tracing::warn!(peer = ?who, "admin socket: refused a connection from a user that is not root, the agent's user or in admin.group");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_the_agents_user_and_the_group_only() {
        let allowed = Allowed {
            uid: 998,
            group: Some(500),
        };
        assert!(allowed.admits(0, 0, &[]));
        assert!(allowed.admits(998, 998, &[]));
        assert!(allowed.admits(1000, 500, &[]), "primary group");
        assert!(
            allowed.admits(1000, 1000, &[27, 500]),
            "supplementary group"
        );
        assert!(!allowed.admits(1000, 1000, &[27]));
        assert!(!allowed.admits(65534, 65534, &[]), "nobody is nobody");
        let no_group = Allowed {
            uid: 998,
            group: None,
        };
        assert!(!no_group.admits(1000, 500, &[500]));
    }
}
