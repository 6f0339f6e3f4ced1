//! The HTTP server: binds listeners, accepts connections, serves each with
//! hyper's HTTP/1 implementation and the router, and drains on shutdown.
//!
//! Not `axum::serve`, because the server needs what it does not give: the
//! socket of each connection (for the hop limit of token responses), limits
//! on header size and header read time, a bound on open connections and a
//! share of them per workload (`limits.rs`), and the connection's identity,
//! worked out once it is accepted and carried from request to request.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::conn::Connection;
use super::limits::{Limits, Over};
use crate::attribution::{ConnInfo, Workload};

/// Works out who is behind an accepted connection.
pub type Identify =
    Arc<dyn Fn(ConnInfo) -> std::pin::Pin<Box<dyn Future<Output = Workload> + Send>> + Send + Sync>;

/// Limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Connections served at once. Further ones wait in the kernel's listen
    /// backlog until one closes.
    pub max_connections: usize,
    /// Of those, at most this many per workload: more are closed at once.
    pub per_workload: usize,
    /// And at most this many per owner (a uid, a container).
    pub per_owner: usize,
    /// A client that has not sent a complete request head this long after
    /// connecting (or after its previous response) is disconnected. SDKs
    /// send theirs at once; an idle connection only holds a slot.
    pub header_read_timeout: Duration,
    /// How long a shutdown waits for open requests to finish.
    pub drain_timeout: Duration,
    /// Connections may arrive through DNAT: read their original
    /// destination.
    pub original_dst: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            per_workload: 128,
            per_owner: 256,
            header_read_timeout: Duration::from_secs(3),
            drain_timeout: Duration::from_secs(5),
            original_dst: false,
        }
    }
}

/// The largest request head accepted (request line and headers). SDK
/// requests are a few hundred bytes; larger heads get a 431.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Listen backlog: room for connection bursts while all workers are busy.
const BACKLOG: i32 = 1024;

/// Binds a listening socket on `addr`. Done before the runtime starts (and,
/// on a real host, before privileges are dropped: port 80 needs them).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Serves `app` on `listeners` until `shutdown` completes, then stops
/// accepting, lets open requests finish (up to the drain timeout) and
/// returns.
pub async fn serve(
    listeners: Vec<std::net::TcpListener>,
    app: Router,
    identify: Identify,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES.max(8192))
        .keep_alive(true);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(options.max_connections));
    // Read once: who owns which subordinate uids (world-readable).
    let subuids = std::fs::read_to_string("/etc/subuid")
        .map(|text| super::limits::subordinate_uids(&text))
        .unwrap_or_default();
    let limits = Limits::new(options.per_workload, options.per_owner, subuids);
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, stop_rx) = watch::channel(());
    let mut accept_loops = JoinSet::new();
    for listener in listeners {
        let listener = TcpListener::from_std(listener)?;
        let local = listener.local_addr()?;
        let accept = AcceptLoop {
            original_dst: options.original_dst,
            local: (!local.ip().is_unspecified()).then_some(local),
            listener,
            app: app.clone(),
            identify: Arc::clone(&identify),
            limits: Arc::clone(&limits),
            builder: Arc::clone(&builder),
            permits: Arc::clone(&permits),
            graceful: Arc::clone(&graceful),
            stop: stop_rx.clone(),
        };
        accept_loops.spawn(accept.run());
    }
    drop(stop_rx);
    shutdown.await;
    tracing::info!("shutting down: no new connections");
    drop(stop_tx);
    while accept_loops.join_next().await.is_some() {}
    // Every accept loop has returned, and with it its handle on `graceful`.
    let Some(graceful) = Arc::into_inner(graceful) else {
        return Ok(());
    };
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms = options.drain_timeout.as_millis() as u64,
            "connections still open after the drain timeout; closing them"
        );
    }
    Ok(())
}

/// The address the client connected to before DNAT changed it
/// (`SO_ORIGINAL_DST`, from conntrack); `None` when it was not translated.
fn original_destination(stream: &tokio::net::TcpStream) -> Option<SocketAddr> {
    let addr = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::OriginalDst).ok()?;
    let ip = std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    Some(SocketAddr::from((ip, u16::from_be(addr.sin_port))))
}

struct AcceptLoop {
    /// Whether connections may have been DNAT'd to this listener (then the
    /// client's socket is found by the original destination).
    original_dst: bool,
    listener: TcpListener,
    /// The listener's address, unless it is a wildcard.
    local: Option<SocketAddr>,
    app: Router,
    identify: Identify,
    limits: Arc<Limits>,
    builder: Arc<http1::Builder>,
    permits: Arc<Semaphore>,
    graceful: Arc<GracefulShutdown>,
    stop: watch::Receiver<()>,
}

impl AcceptLoop {
    async fn run(mut self) {
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&self.permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                _ = self.stop.changed() => return,
            };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = self.stop.changed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or memory: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // A listener bound to one address knows the local end of every
            // connection; only a wildcard one needs to ask the kernel.
            let local = match self.local {
                Some(local) => local,
                None => match stream.local_addr() {
                    Ok(local) => local,
                    Err(_) => continue,
                },
            };
            // Answers are one small write; don't let Nagle hold them back.
            let _ = stream.set_nodelay(true);
            let target = if self.original_dst {
                original_destination(&stream).unwrap_or(local)
            } else {
                local
            };
            let conn = Arc::new(Connection::new(
                ConnInfo {
                    peer,
                    local,
                    target,
                },
                Some(stream.as_raw_fd()),
            ));
            let app = self.app.clone();
            let identify = Arc::clone(&self.identify);
            let limits = Arc::clone(&self.limits);
            let builder = Arc::clone(&self.builder);
            let watcher = self.graceful.watcher();
            tokio::spawn(async move {
                let identity = conn.set_identity(identify(conn.info).await);
                let slot = match limits.admit(&identity.workload) {
                    Ok(slot) => slot,
                    Err(over) => {
                        let whose = match over {
                            Over::Workload => "its workload's",
                            Over::Owner => "its owner's",
                        };
                        tracing::debug!(%peer, workload = %identity.workload, "connection closed: {whose} share of connections is open");
                        crate::metrics::global().connection_refused();
                        return;
                    }
                };
                let service =
                    hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                        req.extensions_mut().insert(Arc::clone(&conn));
                        app.clone().oneshot(req.map(Body::new))
                    });
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop((slot, permit));
            });
        }
    }
}
