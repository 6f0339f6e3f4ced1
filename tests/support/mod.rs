//! Shared helpers of the end-to-end tests: run the built agent, talk raw
//! HTTP to it, run Python clients, make network namespaces.

#![allow(dead_code, unreachable_pub)]

pub mod cgroups;
pub mod ec2;
pub mod netns;
pub mod roles_anywhere;
pub mod sts;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A `[credentials]` section with the demo keys (static source), for
/// config files the tests write.
pub const STATIC_CREDENTIALS: &str = "[credentials]\nsource = \"static\"\n\
    access_key_id = \"ASIAIMDSAGENTDEMO000\"\n\
    secret_access_key = \"imdsAgentDemoSecretKeyNotValidAnywhere00\"\n\
    session_token = \"IQoJaW1kcy1hZ2VudC1kZW1vLXNlc3Npb24tdG9rZW4tbm90LXZhbGlkLWFueXdoZXJl\"\n";

/// The agent binary under test.
pub fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_imds-agent")
}

/// A running agent, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Agent {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its admin socket.
    pub socket: PathBuf,
    logs: Arc<Mutex<String>>,
    /// The thread reading its stderr into `logs`: it ends once every
    /// process holding the pipe (the agent, its helpers) is gone.
    log_reader: Option<std::thread::JoinHandle<()>>,
    banner: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// `imds-agent dev --port 0 <args>`, waiting for its banner.
    pub fn dev(args: &[&str]) -> Agent {
        let mut cmd = Command::new(agent_bin());
        cmd.args(["dev", "--port", "0"]).args(args);
        Agent::start(cmd)
    }

    /// Starts `cmd` (an `imds-agent dev …` command, possibly wrapped in
    /// `ip netns exec`), with an admin socket of its own, and waits for the
    /// banner that names its address.
    pub fn start(cmd: Command) -> Agent {
        Agent::start_waiting(cmd, false)
    }

    /// Starts `cmd` (an `imds-agent run …` command, which prints no
    /// banner) and waits for its "listening" log line.
    pub fn start_run(cmd: Command) -> Agent {
        Agent::start_waiting(cmd, true)
    }

    fn start_waiting(mut cmd: Command, by_log: bool) -> Agent {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("admin.sock");
        cmd.arg("--admin-socket").arg(&socket);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawning the agent");
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&logs);
        let (tx, rx) = mpsc::channel();
        let listening = tx.clone();
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                {
                    let mut logs = sink.lock().unwrap();
                    logs.push_str(&line);
                    logs.push('\n');
                }
                // `run` prints no banner: its "listening addr=…" log line
                // says it is ready (and is in `logs` by now).
                if by_log
                    && let Some(rest) = line.split(" listening addr=").nth(1)
                    && let Some(addr) = rest.split_whitespace().next()
                {
                    let _ = listening.send(addr.to_owned());
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let banner = Arc::new(Mutex::new(String::new()));
        let banner_sink = Arc::clone(&banner);
        std::thread::spawn(move || {
            let mut endpoint = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                banner_sink.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(url) =
                    line.strip_prefix("export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://")
                {
                    endpoint = Some(url.trim_end_matches('/').to_owned());
                }
                // The socket line ends the banner: the agent is ready, and
                // the whole banner is in `banner`.
                if !by_log && line.starts_with("export IMDS_AGENT_SOCKET=") {
                    let _ = tx.send(endpoint.take().unwrap_or_default());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr.parse().unwrap_or_else(|e| {
                panic!(
                    "no address in the banner ({e}):\n{}",
                    banner.lock().unwrap()
                )
            }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                finish_reading(&log_reader);
                panic!(
                    "the agent did not finish its banner or listening line in 30 s ({status:?}); it printed:\n{}\nits log:\n{}",
                    banner.lock().unwrap(),
                    logs.lock().unwrap()
                );
            }
        };
        Agent {
            child: Some(child),
            addr,
            socket,
            logs,
            log_reader: Some(log_reader),
            banner,
            _dir: dir,
        }
    }

    /// `imds-agent ARGS` against its admin socket, with `stdin`.
    pub fn cli(&self, args: &[&str], stdin: &str) -> std::process::Output {
        run_with_stdin(
            Command::new(agent_bin())
                .args(args)
                .arg("--socket")
                .arg(&self.socket),
            stdin,
        )
    }

    /// Its process id (`ip netns exec` execs the agent: the same process).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
        self.finish_logs();
    }

    /// Once it has exited: lets the log reader take its last lines.
    fn finish_logs(&mut self) {
        if let Some(reader) = self.log_reader.take() {
            finish_reading(&reader);
        }
    }

    /// The base URL, `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it printed on stdout so far.
    pub fn banner(&self) -> String {
        self.banner.lock().unwrap().clone()
    }

    /// Its log, readable after it is gone.
    pub fn logs_handle(&self) -> Arc<Mutex<String>> {
        Arc::clone(&self.logs)
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until its log contains `needle`, and returns the log. A line
    /// the agent wrote before answering may still be in the pipe, or not
    /// yet read by the reader thread, when the answer arrives; many are
    /// written after. Panics with the log after 15 s.
    pub fn wait_for_log(&self, needle: &str) -> String {
        wait_for_showing(
            &format!("the agent to log {needle:?}"),
            Duration::from_secs(15),
            || {
                let logs = self.logs();
                if logs.contains(needle) {
                    Ok(logs)
                } else {
                    Err(logs)
                }
            },
        )
    }

    /// Waits until `imds-agent status` says ready (every role it prefetches
    /// has credentials): an SDK with a 1 s timeout then gets them at once.
    pub fn wait_ready(&self) {
        wait_for_showing(
            "the agent to be ready (`imds-agent status` exit 0)",
            Duration::from_secs(30),
            || {
                let out = self.cli(&["status"], "");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if out.status.success() {
                    Ok(())
                } else {
                    Err(text)
                }
            },
        );
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Sends SIGTERM and waits for it to exit (and for its last log
    /// lines).
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = terminate(&mut child);
        self.finish_logs();
        status
    }
}

/// Waits (at most 2 s: a helper that outlives the agent may hold the pipe)
/// for a reader thread to reach the end of its stream.
fn finish_reading(reader: &std::thread::JoinHandle<()>) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn terminate(child: &mut Child) -> ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().expect("waiting for the agent")
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `raw` on a new connection and reads one response (to EOF or the
/// length in `Content-Length`).
pub fn raw(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(raw).expect("write");
    read_reply(&mut stream, false).expect("a response")
}

/// Reads one response from `stream`. For HEAD, pass `head` so no body is
/// expected.
pub fn read_reply(stream: &mut TcpStream, head: bool) -> Option<Reply> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) | Err(_) => return None,
            Ok(_) => buf.push(byte[0]),
        }
    }
    let head_text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head_text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    let length: usize = reply
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; if head { 0 } else { length }];
    stream.read_exact(&mut body).ok()?;
    Some(Reply { body, ..reply })
}

/// A GET with optional extra header lines.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    raw(addr, request("GET", path, headers).as_bytes())
}

/// The text of a request with `Connection: close`.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// A token from `PUT /latest/api/token`.
pub fn token(addr: SocketAddr, ttl: u32) -> String {
    let reply = raw(
        addr,
        request(
            "PUT",
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", &ttl.to_string())],
        )
        .as_bytes(),
    );
    assert_eq!(reply.status, 200, "token PUT: {}", reply.text());
    reply.text()
}

/// The Python with botocore: `IMDS_TEST_PYTHON` (set by `cargo xtask
/// test` to its virtualenv) or `python3`.
pub fn python() -> PathBuf {
    let python = std::env::var_os("IMDS_TEST_PYTHON")
        .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    let probe = Command::new(&python)
        .args(["-c", "import botocore"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        probe.status.success(),
        "{} has no botocore; run the tests with `cargo xtask test`, or `pip install -r tests/requirements.txt`",
        python.display()
    );
    python
}

/// A script under tests/py.
pub fn py_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/py")
        .join(name)
}

/// Runs `tests/py/botocore_client.py` against `endpoint` (prefixed by
/// `wrapper`, e.g. `ip netns exec NS`), returning its JSON report.
pub fn botocore(endpoint: &str, wrapper: &[&str], extra_env: &[(&str, &str)]) -> serde_json::Value {
    botocore_with(endpoint, wrapper, extra_env, &[])
}

/// `botocore` with extra arguments for the script (an STS URL).
pub fn botocore_with(
    endpoint: &str,
    wrapper: &[&str],
    extra_env: &[(&str, &str)],
    script_args: &[&str],
) -> serde_json::Value {
    let python = python();
    let (program, args): (PathBuf, Vec<String>) = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut args: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            args.push(python.display().to_string());
            (PathBuf::from(first), args)
        }
        None => (python, Vec::new()),
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg(py_script("botocore_client.py"))
        .arg(endpoint)
        .args(script_args);
    only_imds_credentials(&mut cmd);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running botocore_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "botocore_client.py failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad report {stdout:?}: {e}"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Writes `text` to a config file in a new temporary directory.
pub fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("writing the config");
    (dir, path)
}

/// One request to an agent's admin socket: (status, body).
pub fn admin_request(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let reply = imds_agent::admin::client::request(socket, method, path, body)
        .expect("the admin socket answers");
    (reply.status, reply.body)
}

/// tests/py/get.py run with `prefix` (a namespace, a cgroup, a user):
/// `{"status", "body", "peer", "pid", "uid"}` or `{"error", …}`.
pub fn python_get(prefix: &[String], url: &str, timeout: &str) -> serde_json::Value {
    let out = Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(python())
        .arg(py_script("get.py"))
        .arg(url)
        .arg(timeout)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "get.py {url}: {stdout}{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{stdout}{stderr}: {e}"))
}

/// Polls `ready` every 100 ms until it gives a value; panics, naming
/// `what`, once `limit` has passed.
pub fn wait_for<T>(what: &str, limit: Duration, mut ready: impl FnMut() -> Option<T>) -> T {
    wait_for_showing(what, limit, || ready().ok_or("(nothing to show)"))
}

/// `wait_for`, where a miss says what was seen instead: the panic shows the
/// last thing seen (a log, a status document), so a timeout says what did
/// arrive.
pub fn wait_for_showing<T, S: std::fmt::Display>(
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> Result<T, S>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match ready() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last seen:\n{seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `wait_for` a condition.
pub fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    wait_for(what, limit, || ready().then_some(()));
}

/// The command prefix that runs a program as `uid` (its own gid, no
/// supplementary groups), from root.
pub fn as_user(uid: impl std::fmt::Display) -> Vec<String> {
    vec![
        "setpriv".to_owned(),
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".to_owned(),
    ]
}

/// Runs `cmd` with `stdin` on its standard input; its output.
pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The variable that tells `rust_sdk_child` where the IMDS is.
const RUST_SDK_ENDPOINT: &str = "IMDS_TEST_RUST_SDK_ENDPOINT";
/// Set: one attempt with a 1 s read timeout (a test that expects failure).
const RUST_SDK_FAIL_FAST: &str = "IMDS_TEST_RUST_SDK_FAIL_FAST";

/// The Rust SDK (aws-config's IMDS credentials provider) against
/// `endpoint`, run with `prefix` (a namespace, a cgroup): this test binary
/// again, running only its ignored test `child`, which calls
/// `rust_sdk_child`. `{"access_key"}` or `{"error"}`.
pub fn rust_sdk(
    prefix: &[String],
    child: &str,
    endpoint: &str,
    fail_fast: bool,
) -> serde_json::Value {
    let mut cmd = Command::new(&prefix[0]);
    cmd.args(&prefix[1..])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            child,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(RUST_SDK_ENDPOINT, endpoint);
    if fail_fast {
        cmd.env(RUST_SDK_FAIL_FAST, "1");
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout
        .lines()
        .find_map(|l| l.split("REPORT ").nth(1))
        .unwrap_or_else(|| {
            panic!(
                "no report: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(report).unwrap()
}

/// The body of a test binary's `rust_sdk` child: fetches credentials and
/// prints what it got. Does nothing unless `rust_sdk` started it.
pub fn rust_sdk_child() {
    use aws_config::imds::client::Client;
    use aws_config::imds::credentials::ImdsCredentialsProvider;
    use aws_config::provider_config::ProviderConfig;
    use aws_credential_types::provider::ProvideCredentials;
    let Ok(endpoint) = std::env::var(RUST_SDK_ENDPOINT) else {
        return;
    };
    let fail_fast = std::env::var_os(RUST_SDK_FAIL_FAST).is_some();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(async {
        let http = aws_smithy_http_client::Builder::new().build_http();
        let config = ProviderConfig::without_region().with_http_client(http);
        let mut client = Client::builder()
            .configure(&config)
            .endpoint(endpoint)
            .unwrap();
        if fail_fast {
            client = client.max_attempts(1).read_timeout(Duration::from_secs(1));
        }
        let provider = ImdsCredentialsProvider::builder()
            .configure(&config)
            .imds_client(client.build())
            .build();
        match provider.provide_credentials().await {
            Ok(creds) => serde_json::json!({ "access_key": creds.access_key_id() }),
            Err(e) => serde_json::json!({ "error": format!("{e:?}") }),
        }
    });
    println!("REPORT {report}");
}

/// Leaves a client nothing but IMDS to get credentials or config from: no
/// keys, profile or region in its environment, no config files.
pub fn only_imds_credentials(cmd: &mut Command) {
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
}
