//! The load generator: N connections on one thread, each sending one
//! request at a time (keep-alive) or one request per connection
//! (`Connection: close`), for a fixed time, recording every latency.
//!
//! One thread on purpose: the machine has two cores and the server under
//! test needs them; the generator's share is then the same for every
//! target, which is what makes the ratios between targets meaningful.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One measurement.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) addr: SocketAddr,
    /// The request, without the final blank line: `Connection: close` is
    /// added in close mode.
    pub(crate) request_head: String,
    pub(crate) connections: usize,
    pub(crate) keep_alive: bool,
    /// The status every answer must have; anything else is an error.
    pub(crate) expect_status: u16,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
}

/// What a measurement found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) per_second: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

/// A request that took longer than this is an error (and its connection
/// is dropped).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn measure(s: &Scenario) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let start = Instant::now() + s.warmup;
        let deadline = start + s.duration;
        let request = if s.keep_alive {
            format!("{}\r\n", s.request_head)
        } else {
            format!("{}Connection: close\r\n\r\n", s.request_head)
        };
        let mut tasks = Vec::with_capacity(s.connections);
        for _ in 0..s.connections {
            let worker = Worker {
                addr: s.addr,
                request: request.clone().into_bytes(),
                keep_alive: s.keep_alive,
                expect_status: s.expect_status,
            };
            tasks.push(tokio::spawn(worker.run(start, deadline)));
        }
        let mut latencies = Vec::new();
        let mut errors = 0;
        let mut last_end = start + s.duration;
        for task in tasks {
            let done = task.await?;
            latencies.extend(done.latencies);
            errors += done.errors;
            last_end = last_end.max(done.last_end);
        }
        // The rate is over the measured requests: from the start of the
        // window to the end of the last request that began inside it (a
        // warm-up request still in flight does not stretch it).
        let elapsed = last_end.saturating_duration_since(start);
        latencies.sort_unstable();
        let pick = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(Duration::ZERO, |&ns| Duration::from_nanos(ns))
        };
        Ok(Outcome {
            requests: latencies.len() as u64,
            errors,
            per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: pick(0.50),
            p99: pick(0.99),
        })
    })
}

struct Worker {
    addr: SocketAddr,
    request: Vec<u8>,
    keep_alive: bool,
    expect_status: u16,
}

/// What one connection's worker measured.
struct Done {
    /// Latencies (ns) of the requests that began in the window.
    latencies: Vec<u64>,
    /// Requests that began in the window and failed.
    errors: u64,
    /// When the last request that began in the window ended.
    last_end: Instant,
}

impl Worker {
    /// Sends requests until `deadline`, measuring those that begin after
    /// `start`.
    async fn run(self, start: Instant, deadline: Instant) -> Done {
        let mut latencies = Vec::new();
        let mut errors = 0;
        let mut last_end = start;
        let mut conn: Option<Conn> = None;
        loop {
            let began = Instant::now();
            if began >= deadline {
                break;
            }
            let result = tokio::time::timeout(REQUEST_TIMEOUT, self.once(&mut conn)).await;
            let ok = matches!(result, Ok(Ok(status)) if status == self.expect_status);
            if began >= start {
                last_end = Instant::now();
                if ok {
                    latencies.push(last_end.duration_since(began).as_nanos() as u64);
                } else {
                    errors += 1;
                }
            }
            if !ok {
                conn = None;
            }
        }
        Done {
            latencies,
            errors,
            last_end,
        }
    }

    /// One request; returns the status.
    async fn once(&self, conn: &mut Option<Conn>) -> std::io::Result<u16> {
        if conn.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            *conn = Some(Conn {
                stream,
                buf: Vec::with_capacity(4096),
            });
        }
        let c = conn.as_mut().expect("connected above");
        c.stream.write_all(&self.request).await?;
        let (status, close) = c.read_response().await?;
        if close || !self.keep_alive {
            *conn = None;
        }
        Ok(status)
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Reads one response; returns its status and whether the server will
    /// close the connection.
    async fn read_response(&mut self) -> std::io::Result<(u16, bool)> {
        self.buf.clear();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) =
                response.parse(&self.buf).map_err(invalid)?
            {
                let status = response.code.unwrap_or(0);
                let mut length = None;
                let mut close = response.version == Some(0);
                for h in response.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok());
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close = h.value.eq_ignore_ascii_case(b"close");
                    }
                }
                match length {
                    Some(n) => self.read_to(head_len + n).await?,
                    None => {
                        self.read_to_end().await?;
                        close = true;
                    }
                }
                return Ok((status, close));
            }
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn read_to(&mut self, total: usize) -> std::io::Result<()> {
        while self.buf.len() < total {
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    async fn read_to_end(&mut self) -> std::io::Result<()> {
        while self.fill().await? > 0 {}
        Ok(())
    }
}

fn invalid(e: httparse::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}
