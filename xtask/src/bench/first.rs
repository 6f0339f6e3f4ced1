//! First requests of new workloads: N units appear one after another (each
//! in a cgroup of its own, made just before it starts, as systemd does)
//! and each asks for its credentials once, as an SDK does (token PUT, role
//! listing, credentials GET, a one-second timeout each), against the agent
//! with cgroup attribution, `roles.default` and sessions named after
//! workloads, with STS from moto. Measures how long each first answer took
//! and whether it was a credentials document. Needs root (cgroups).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::targets::{Server, start_agent};
use crate::util::work_dir;

/// New workloads per run.
pub(crate) const WORKLOADS: usize = 100;
/// Over how long they start: moto answers some 60 calls a second on two
/// cores (STS answers hundreds).
pub(crate) const SPREAD: Duration = Duration::from_secs(2);

/// What the run measured.
pub(crate) struct FirstRequests {
    pub(crate) workloads: usize,
    pub(crate) successes: usize,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
}

/// A cgroup2 mount of the benchmark's own with a directory under it,
/// removed (and unmounted) on drop.
struct Tree {
    mount: PathBuf,
    base: PathBuf,
}

impl Tree {
    fn new() -> anyhow::Result<Tree> {
        let mount = work_dir().join(format!("bench-cgroup2-{}", std::process::id()));
        std::fs::create_dir_all(&mount)?;
        crate::util::run(
            Command::new("mount")
                .args(["-t", "cgroup2", "none"])
                .arg(&mount),
        )?;
        let base = mount.join(format!("imds-bench-{}", std::process::id()));
        std::fs::create_dir(&base).with_context(|| format!("creating {}", base.display()))?;
        Ok(Tree { mount, base })
    }

    fn remove(&self, dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    self.remove(&entry.path());
                }
            }
        }
        // Whatever still runs there goes back to the root first.
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(self.mount.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.remove(&self.base);
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = std::fs::remove_dir(&self.mount);
    }
}

/// The agent (dev mode) attributing by cgroups below `root`, with STS at
/// `sts`.
fn agent(bin: &Path, log_level: &str, root: &Path, sts: SocketAddr) -> anyhow::Result<Server> {
    let config = work_dir().join("bench-first.toml");
    std::fs::write(
        &config,
        format!(
            "[attribution]\ncgroups = true\ncgroup_root = \"{}\"\n\
             [instance]\naccount_id = \"123456789012\"\n\
             [credentials]\nsource = \"sts\"\nendpoint = \"http://{sts}\"\n\
             [roles]\ndefault = \"imds-agent-demo\"\n",
            root.display()
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.args(["dev", "--port", "0", "--log-level", log_level, "--config"])
        .arg(&config)
        .arg("--admin-socket")
        .arg(work_dir().join("bench-first-{port}.sock"))
        .env("AWS_ACCESS_KEY_ID", "AKIABENCHMARK0000000")
        .env("AWS_SECRET_ACCESS_KEY", "benchmark")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    start_agent(cmd, "first-agent")
}

/// Starts the hidden `bench-first-request` client in cgroup `dir` (made
/// now).
fn start_client(dir: &Path, addr: SocketAddr) -> anyhow::Result<Child> {
    std::fs::create_dir_all(dir)?;
    let me = std::env::current_exe().context("finding xtask's own binary")?;
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\" bench-first-request --addr {addr}",
            dir.display()
        ))
        .arg(me)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a first-request client")
}

/// Runs the scenario against a new agent.
pub(crate) fn run(bin: &Path, log_level: &str, sts: SocketAddr) -> anyhow::Result<FirstRequests> {
    let tree = Tree::new()?;
    let agent = agent(bin, log_level, &tree.base, sts)?;
    // A running host: one unit has made the agent's (and moto's) first
    // calls already. (From a unit of its own: this process is outside the
    // tree, so the agent would not know it.)
    let warm = start_client(
        &tree.base.join("system.slice/bench-warm.service"),
        agent.addr,
    )?
    .wait_with_output()?;
    let warm = String::from_utf8_lossy(&warm.stdout);
    if !warm.starts_with("ok ") {
        bail!("the agent did not serve a warm-up request: {}", warm.trim());
    }
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..WORKLOADS {
        let at = started + SPREAD.mul_f64(i as f64 / WORKLOADS as f64);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let dir = tree
            .base
            .join("system.slice")
            .join(format!("bench-{i}.service"));
        clients.push(start_client(&dir, agent.addr)?);
    }
    let mut took = Vec::new();
    let mut successes = 0;
    for client in clients {
        let out = client.wait_with_output()?;
        let line = String::from_utf8_lossy(&out.stdout);
        let mut words = line.split_whitespace();
        let (verdict, ms) = (
            words.next(),
            words.next().and_then(|m| m.parse::<f64>().ok()),
        );
        if verdict == Some("ok") {
            successes += 1;
        }
        took.push(Duration::from_secs_f64(ms.unwrap_or(0.0) / 1000.0));
    }
    drop(agent);
    took.sort();
    let at = |p: f64| took[((took.len() - 1) as f64 * p).round() as usize];
    Ok(FirstRequests {
        workloads: WORKLOADS,
        successes,
        p50: at(0.5),
        p99: at(0.99),
        max: *took.last().unwrap_or(&Duration::ZERO),
    })
}

/// `bench-first-request`: one workload's first credentials, as an SDK
/// asks for them. Prints `ok MS` or `failed MS WHAT`.
pub(crate) fn client(addr: SocketAddr) -> anyhow::Result<()> {
    let began = Instant::now();
    let result = first_request(addr);
    let ms = began.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(()) => println!("ok {ms:.3}"),
        Err(e) => println!("failed {ms:.3} {e:#}"),
    }
    Ok(())
}

/// The token PUT, the role listing and the credentials GET, a new
/// connection and a one-second timeout each (botocore's defaults).
fn first_request(addr: SocketAddr) -> anyhow::Result<()> {
    let token = exchange(
        addr,
        "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n",
    )?;
    let header = format!("X-aws-ec2-metadata-token: {token}\r\n");
    let base = "/latest/meta-data/iam/security-credentials/";
    let role = exchange(
        addr,
        &format!("GET {base} HTTP/1.1\r\nHost: 169.254.169.254\r\n{header}"),
    )?;
    let doc = exchange(
        addr,
        &format!("GET {base}{role} HTTP/1.1\r\nHost: 169.254.169.254\r\n{header}"),
    )?;
    if !doc.contains("\"Code\" : \"Success\"") && !doc.contains("\"Code\":\"Success\"") {
        bail!(
            "not a credentials document: {}",
            doc.lines().take(3).collect::<Vec<_>>().join(" ")
        );
    }
    Ok(())
}

/// One request (`head` without its final blank line) on a new connection:
/// the body of a 200.
fn exchange(addr: SocketAddr, head: &str) -> anyhow::Result<String> {
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let (status, body) = reply.split_once("\r\n\r\n").context("an HTTP answer")?;
    if !status.starts_with("HTTP/1.1 200") {
        bail!("{}", status.lines().next().unwrap_or(""));
    }
    Ok(body.trim().to_owned())
}
