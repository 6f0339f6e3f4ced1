//! A bounded TCP listener, for the `/manage` page and the metrics: their
//! ports are open to every local user (the metrics' perhaps to the
//! network), so connections are few (`MAX_CONNECTIONS`), one that sends
//! nothing for `IDLE` is closed, and none lasts beyond `LIFETIME`. Idle
//! connections can then hold that listener's own slots for a while, never
//! the agent's file descriptors or the IMDS.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 32;

/// A connection with no byte read or written for this long is closed
/// (longer than an answer to a code takes, 25 s, or a session cleared
/// behind an STS call).
const IDLE: Duration = Duration::from_secs(60);

/// A connection lasts at most this long, however it trickles: a browser
/// opens another.
const LIFETIME: Duration = Duration::from_secs(300);

/// The bounded listener.
#[derive(Debug)]
pub(super) struct Limited {
    listener: TcpListener,
    permits: Arc<Semaphore>,
}

impl Limited {
    pub(super) fn new(listener: TcpListener) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

impl axum::serve::Listener for Limited {
    type Io = Bounded;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
                // Never closed; wait rather than spin if it were.
                std::future::pending::<()>().await;
                continue;
            };
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    let idle = Box::pin(tokio::time::sleep(IDLE));
                    let lifetime = Box::pin(tokio::time::sleep(LIFETIME));
                    return (
                        Bounded {
                            stream,
                            _permit: permit,
                            idle,
                            lifetime,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a bounded listener (the /manage page or the metrics): accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// One connection: its slot, and the time it may stay idle.
#[derive(Debug)]
pub(super) struct Bounded {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Pin<Box<tokio::time::Sleep>>,
    lifetime: Pin<Box<tokio::time::Sleep>>,
}

impl Bounded {
    fn active(&mut self) {
        self.idle.as_mut().reset(tokio::time::Instant::now() + IDLE);
    }

    /// What a read or write that `polled` answers: progress re-arms the
    /// idle timer; waiting past a timer is an error that closes the
    /// connection.
    fn after<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.active();
                Poll::Ready(result)
            }
            Poll::Pending if self.timed_out(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        // Both polled: each registers its waker.
        let idle = self.idle.as_mut().poll(cx).is_ready();
        let old = self.lifetime.as_mut().poll(cx).is_ready();
        idle || old
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "idle connection closed")
}

impl AsyncRead for Bounded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.after(cx, polled)
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.after(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
