//! `cargo xtask bench-redirect`: the same credentials GET to
//! 169.254.169.254:80 through the two ways a workload reaches the agent on
//! a host: alias mode (the address on `lo`, the agent's nftables table) and
//! eBPF mode (the `connect4` program sends the connection to 127.0.0.1),
//! each attributing the client by its socket.
//!
//! Everything happens in a network namespace and a cgroup of the run's own
//! (a private cgroup2 mount under target/xtask), removed at the end: the
//! agent in cgroup `agent`, the load generator (this binary again, as
//! `xtask bench-client`) in cgroup `client`. Needs root and the eBPF build.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::load::{Outcome, Scenario, measure};
use super::{Timing, fetch_token, ms};
use crate::util::{is_root, run as run_cmd, work_dir};

/// The role the bench rule gives.
const ROLE: &str = "imds-agent-demo";
const CONNECTIONS: [usize; 3] = [1, 16, 64];

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Options {
    #[command(flatten)]
    timing: Timing,
    /// Also write the results as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// `xtask bench-client`: one measurement from where it runs (the
/// namespace and cgroup `bench-redirect` put it in), printed as one line.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientOptions {
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long)]
    connections: usize,
    #[arg(long)]
    close: bool,
    #[command(flatten)]
    timing: Timing,
}

pub(crate) fn client(o: &ClientOptions) -> anyhow::Result<()> {
    // Tokens are bound to the workload: this process fetches its own.
    let token = fetch_token(o.addr).context("fetching a token")?;
    let outcome = measure(&Scenario {
        addr: o.addr,
        request_head: format!(
            "GET /latest/meta-data/iam/security-credentials/{ROLE} HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token: {token}\r\n"
        ),
        connections: o.connections,
        keep_alive: !o.close,
        expect_status: 200,
        warmup: o.timing.warmup(),
        duration: o.timing.duration(),
    })?;
    println!(
        "{} {} {} {} {}",
        outcome.requests,
        outcome.errors,
        outcome.per_second,
        outcome.p50.as_nanos(),
        outcome.p99.as_nanos()
    );
    Ok(())
}

fn parse_outcome(line: &str) -> Option<Outcome> {
    let mut fields = line.split_whitespace();
    let mut next = || fields.next();
    Some(Outcome {
        requests: next()?.parse().ok()?,
        errors: next()?.parse().ok()?,
        per_second: next()?.parse().ok()?,
        p50: Duration::from_nanos(next()?.parse().ok()?),
        p99: Duration::from_nanos(next()?.parse().ok()?),
    })
}

/// The run's namespace and cgroups; removed on drop.
struct Sandbox {
    netns: String,
    mount: PathBuf,
    base: PathBuf,
}

impl Sandbox {
    fn new() -> anyhow::Result<Sandbox> {
        let netns = format!("imdsbench{}", std::process::id());
        run_cmd(Command::new("ip").args(["netns", "add", &netns]))?;
        let mount = work_dir().join(format!("bench-cgroup2-{}", std::process::id()));
        let sandbox = Sandbox {
            netns,
            base: mount.join(format!("imds-bench-{}", std::process::id())),
            mount,
        };
        run_cmd(Command::new("ip").args(["-n", &sandbox.netns, "link", "set", "lo", "up"]))?;
        std::fs::create_dir_all(&sandbox.mount)?;
        run_cmd(
            Command::new("mount")
                .args(["-t", "cgroup2", "none"])
                .arg(&sandbox.mount),
        )?;
        for cgroup in ["", "agent", "client"] {
            std::fs::create_dir_all(sandbox.base.join(cgroup))?;
        }
        Ok(sandbox)
    }

    /// `ip netns exec NS sh -c 'echo $$ > CGROUP/cgroup.procs; exec …'`.
    fn command(&self, cgroup: &str, program: &Path) -> Command {
        let procs = self.base.join(cgroup).join("cgroup.procs");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "sh", "-c"])
            .arg(format!("echo $$ > {} && exec \"$@\"", procs.display()))
            .arg("sh")
            .arg(program);
        cmd
    }

    /// The cgroup path below the mount, as the agent's config names it.
    fn cgroup_path(&self) -> String {
        format!(
            "/{}",
            self.base
                .strip_prefix(&self.mount)
                .expect("below the mount")
                .display()
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for cgroup in ["agent", "client", ""] {
            let _ = std::fs::remove_dir(self.base.join(cgroup));
        }
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = std::fs::remove_dir(&self.mount);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// An agent in the sandbox, stopped (SIGTERM) on drop.
struct Agent {
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start_agent(sandbox: &Sandbox, bin: &Path, mode: &str) -> anyhow::Result<Agent> {
    let dir = work_dir().join("bench-redirect");
    std::fs::create_dir_all(dir.join("roles.d"))?;
    std::fs::write(
        dir.join("roles.d/bench.toml"),
        format!(
            "[[rule]]\ncgroup = \"{}/client\"\nrole = \"{ROLE}\"\n",
            sandbox.cgroup_path()
        ),
    )?;
    let host = match mode {
        "ebpf" => format!(
            "mode = \"ebpf\"\nebpf_cgroup = \"{}\"\n",
            sandbox.cgroup_path()
        ),
        _ => "mode = \"alias\"\n".to_owned(),
    };
    let config = dir.join(format!("{mode}.toml"));
    std::fs::write(
        &config,
        format!(
            "[host]\n{host}\
             [privileges]\nuser = \"nobody\"\n\
             [attribution]\ncgroup_root = \"{root}\"\n\
             [roles]\ndir = \"{roles}\"\n\
             [credentials]\nsource = \"static\"\naccess_key_id = \"ASIAIMDSAGENTDEMO000\"\n\
             secret_access_key = \"imdsAgentDemoSecretKeyNotValidAnywhere00\"\n\
             session_token = \"IQoJaW1kcy1hZ2VudC1kZW1vLXNlc3Npb24tdG9rZW4tbm90LXZhbGlkLWFueXdoZXJl\"\n",
            root = sandbox.mount.display(),
            roles = dir.join("roles.d").display(),
        ),
    )?;
    let mut child = sandbox
        .command("agent", bin)
        .args([
            "run",
            "--log-level",
            "warn,imds_agent::app=info",
            "--config",
        ])
        .arg(&config)
        .arg("--admin-socket")
        .arg(dir.join(format!("{mode}.sock")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the agent")?;
    let stderr = child.stderr.take().context("the agent's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line?;
        log.push_str(&line);
        log.push('\n');
        if line.contains(" listening ") {
            // Keep draining its log so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Ok(Agent { child });
        }
    }
    let _ = child.wait();
    bail!("the agent ({mode} mode) stopped before listening:\n{log}")
}

pub(crate) fn run(options: &Options) -> anyhow::Result<()> {
    if !is_root() {
        bail!("bench-redirect needs root: it makes a network namespace and attaches eBPF programs");
    }
    crate::ebpf::build(&crate::ebpf::Options::default())?;
    if !crate::test::has_nftables_libraries() {
        bail!(
            "bench-redirect compares with alias mode, which needs libnftnl-dev, libmnl-dev and pkg-config"
        );
    }
    let bin = crate::util::build_release()?;
    let xtask = std::env::current_exe().context("finding the xtask binary")?;
    let sandbox = Sandbox::new()?;
    let mut rows = Vec::new();
    for mode in ["alias", "ebpf"] {
        let agent = start_agent(&sandbox, &bin, mode)?;
        for connections in CONNECTIONS {
            for close in [false, true] {
                let out = sandbox
                    .command("client", &xtask)
                    .args(["bench-client", "--addr", "169.254.169.254:80"])
                    .args(["--connections", &connections.to_string()])
                    .args(["--warmup-ms", &options.timing.warmup_ms.to_string()])
                    .args(["--duration-ms", &options.timing.duration_ms.to_string()])
                    .args(close.then_some("--close"))
                    .output()
                    .context("running the bench client")?;
                let stdout = String::from_utf8_lossy(&out.stdout);
                let outcome = parse_outcome(stdout.trim()).with_context(|| {
                    format!(
                        "the bench client said: {stdout}{}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                })?;
                let connection = if close { "close" } else { "keep-alive" };
                eprintln!(
                    "xtask bench-redirect: {mode:<5} {connections:>2} conn {connection:<10} {:>9.0} req/s p50 {:>7.3} ms p99 {:>7.3} ms errors {}",
                    outcome.per_second,
                    ms(outcome.p50),
                    ms(outcome.p99),
                    outcome.errors
                );
                rows.push((mode, connections, connection, outcome));
            }
        }
        drop(agent);
    }
    let mut report = format!(
        "Credentials GET to 169.254.169.254:80 from a client in its own cgroup, attributed by cgroup; each scenario {} ms after {} ms warm-up.\n\n| conns | connection | alias req/s | ebpf req/s | alias p50 / p99 ms | ebpf p50 / p99 ms | errors |\n|---:|---|---:|---:|---:|---:|---:|\n",
        options.timing.duration_ms, options.timing.warmup_ms
    );
    for (_, connections, connection, alias) in rows.iter().filter(|r| r.0 == "alias") {
        let Some((.., ebpf)) = rows
            .iter()
            .find(|r| r.0 == "ebpf" && r.1 == *connections && r.2 == *connection)
        else {
            continue;
        };
        report.push_str(&format!(
            "| {connections} | {connection} | {:.0} | {:.0} | {:.3} / {:.3} | {:.3} / {:.3} | {} |\n",
            alias.per_second,
            ebpf.per_second,
            ms(alias.p50),
            ms(alias.p99),
            ms(ebpf.p50),
            ms(ebpf.p99),
            alias.errors + ebpf.errors
        ));
    }
    println!("{report}");
    if let Some(path) = &options.markdown {
        std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    let errors: u64 = rows.iter().map(|r| r.3.errors).sum();
    if errors > 0 {
        bail!("the agent answered {errors} requests wrongly or not at all");
    }
    Ok(())
}
