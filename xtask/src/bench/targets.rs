//! The servers the benchmark measures, and the STS they need: the agent
//! (release build, `dev` mode), ectou-metadata (a Python IMDS mock from
//! PyPI) and moto_server (the STS ectou fetches its credentials from).
//! Each runs on a loopback port and is killed when dropped.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::python::venv_bin;
use crate::util::{free_port, work_dir};

/// A server process, killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_file(name: &str) -> anyhow::Result<std::fs::File> {
    let dir = work_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("bench-{name}.log"));
    std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))
}

/// The agent in dev mode on a free loopback port, logging at `log_level`
/// to target/xtask/bench-agent.log.
pub(crate) fn agent(bin: &Path, log_level: &str) -> anyhow::Result<Server> {
    let mut cmd = Command::new(bin);
    cmd.args(["dev", "--port", "0", "--log-level", log_level])
        .arg("--admin-socket")
        .arg(work_dir().join("bench-agent-{port}.sock"));
    start_agent(cmd, "agent")
}

/// The agent in dev mode serving credentials from `sts` (moto), assumed
/// with fixed base keys through the standard chain.
pub(crate) fn sts_agent(bin: &Path, log_level: &str, sts: SocketAddr) -> anyhow::Result<Server> {
    let config = work_dir().join("bench-sts.toml");
    std::fs::write(
        &config,
        format!(
            "[instance]\naccount_id = \"123456789012\"\n[credentials]\nsource = \"sts\"\n\
             endpoint = \"http://{sts}\"\n[roles]\ndefault = \"imds-agent-demo\"\n"
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.args(["dev", "--port", "0", "--log-level", log_level, "--config"])
        .arg(&config)
        .arg("--admin-socket")
        .arg(work_dir().join("bench-sts-{port}.sock"))
        .env("AWS_ACCESS_KEY_ID", "AKIABENCHMARK0000000")
        .env("AWS_SECRET_ACCESS_KEY", "benchmark")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    start_agent(cmd, "sts-agent")
}

/// The agent in dev mode with attribution on: every connection is looked
/// up with sock_diag and the cgroup index, and its role found by a rule
/// (matching this process's uid), as on a host.
pub(crate) fn attributed_agent(bin: &Path, log_level: &str) -> anyhow::Result<Server> {
    let dir = work_dir().join("bench-roles.d");
    std::fs::create_dir_all(&dir)?;
    let uid = nix_uid()?;
    std::fs::write(
        dir.join("bench.toml"),
        format!("[[rule]]\nuid = {uid}\nrole = \"imds-agent-demo\"\n"),
    )?;
    let config = work_dir().join("bench-attributed.toml");
    std::fs::write(
        &config,
        format!(
            "[attribution]\ncgroups = true\n[roles]\ndir = \"{}\"\n\
             [credentials]\nsource = \"static\"\naccess_key_id = \"ASIAIMDSAGENTDEMO000\"\n\
             secret_access_key = \"imdsAgentDemoSecretKeyNotValidAnywhere00\"\n\
             session_token = \"IQoJaW1kcy1hZ2VudC1kZW1vLXNlc3Npb24tdG9rZW4tbm90LXZhbGlkLWFueXdoZXJl\"\n",
            dir.display()
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.args(["dev", "--port", "0", "--log-level", log_level, "--config"])
        .arg(&config)
        .arg("--admin-socket")
        .arg(work_dir().join("bench-attributed-{port}.sock"));
    start_agent(cmd, "attributed-agent")
}

/// This process's uid (from /proc: xtask has no libc binding).
fn nix_uid() -> anyhow::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .context("reading the uid from /proc/self/status")
}

pub(crate) fn start_agent(mut cmd: Command, name: &str) -> anyhow::Result<Server> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(log_file(name)?)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stdout = child.stdout.take().context("agent stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(url) = line.strip_prefix("export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://") {
            let addr = url.trim_end_matches('/').parse()?;
            return Ok(Server { child, addr });
        }
    }
    bail!("the agent exited without printing its address; see target/xtask/bench-{name}.log")
}

/// moto_server, a real STS implementation, on a free port.
pub(crate) fn moto() -> anyhow::Result<Server> {
    let port = free_port()?;
    let child = Command::new(venv_bin("moto_server")?)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(log_file("moto")?)
        .stderr(Stdio::null())
        .spawn()
        .context("starting moto_server")?;
    let server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    wait_for_port(server.addr, "moto_server")?;
    Ok(server)
}

/// ectou-metadata on a free port, assuming `role_arn` through moto's STS.
pub(crate) fn ectou(sts: SocketAddr, role_arn: &str) -> anyhow::Result<Server> {
    let port = free_port()?;
    let child = Command::new(venv_bin("ectou_metadata")?)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--role-arn",
            role_arn,
        ])
        .env("AWS_ENDPOINT_URL_STS", format!("http://{sts}"))
        .env("AWS_ACCESS_KEY_ID", "AKIABENCHMARK0000000")
        .env("AWS_SECRET_ACCESS_KEY", "benchmark")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .stdout(Stdio::null())
        .stderr(log_file("ectou")?)
        .spawn()
        .context("starting ectou_metadata")?;
    let server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    wait_for_port(server.addr, "ectou_metadata")?;
    Ok(server)
}

fn wait_for_port(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on {addr} within 30 s; see target/xtask/bench-*.log")
}
