//! `cargo xtask bench`: token PUTs and credential GETs at 1, 16 and 64
//! connections, keep-alive and `Connection: close`, against the agent and,
//! in the same run, against ectou-metadata, so that the ratio holds on a
//! noisy machine; the agent on a Roles Anywhere base beside it, counting
//! that serving calls out for nothing (`roles_anywhere.rs`); and, as root,
//! the first requests of a hundred new workloads (`first.rs`).

pub(crate) mod first;
mod load;
pub(crate) mod redirect;
mod roles_anywhere;
mod targets;

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use load::{Outcome, Scenario, measure};

/// How long each scenario runs.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Timing {
    /// Measured time of each scenario, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    duration_ms: u64,
    /// Unmeasured time before each scenario, in milliseconds.
    #[arg(long, default_value_t = 300)]
    warmup_ms: u64,
}

impl Timing {
    fn warmup(&self) -> Duration {
        Duration::from_millis(self.warmup_ms)
    }

    fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Options {
    #[command(flatten)]
    timing: Timing,
    /// Measure the agent only (no Python, no ectou-metadata).
    #[arg(long)]
    no_ectou: bool,
    /// The agent's log level while measured.
    #[arg(long, default_value = "warn")]
    agent_log_level: String,
    /// Also write the results as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Fail unless every target holds (latency, ratio, errors).
    #[arg(long)]
    check: bool,
    /// Only this operation.
    #[arg(long, value_enum)]
    op: Option<Op>,
    /// Only the first requests of new workloads (as root).
    #[arg(long)]
    first_requests_only: bool,
    /// Only this many connections.
    #[arg(long)]
    connections: Option<usize>,
    /// Only this connection mode.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
}

/// `keep-alive` or `close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    KeepAlive,
    Close,
}

impl Options {
    /// A run short enough for CI: proves the benchmark works, measures
    /// little.
    pub(crate) fn quick() -> Self {
        Self {
            timing: Timing {
                duration_ms: 200,
                warmup_ms: 50,
            },
            no_ectou: false,
            agent_log_level: "warn".to_owned(),
            markdown: None,
            check: false,
            op: None,
            first_requests_only: false,
            connections: None,
            mode: None,
        }
    }
}

const ROLE: &str = "imds-agent-demo";
const ECTOU: &str = "ectou-metadata";
const ATTRIBUTED: &str = "imds-agent, attributed";
const ROLES_ANYWHERE: &str = "imds-agent, Roles Anywhere";
const CONNECTIONS: [usize; 3] = [1, 16, 64];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Op {
    Token,
    Credentials,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Token => "token PUT",
            Op::Credentials => "credentials GET",
        }
    }
}

struct Target {
    name: &'static str,
    /// Measured for credentials only (it shares the agent's token path).
    credentials_only: bool,
    addr: SocketAddr,
    credentials_path: String,
    token: String,
    /// ectou-metadata has no IMDSv2: its token PUT answers 404.
    token_status: u16,
}

struct Row {
    target: &'static str,
    op: Op,
    connections: usize,
    keep_alive: bool,
    outcome: Outcome,
}

pub(crate) fn run(options: &Options) -> anyhow::Result<()> {
    // The same build as `cargo xtask install`.
    let bin = crate::util::build_release()?;
    let agent = targets::agent(&bin, &options.agent_log_level)?;
    let mut list = vec![Target {
        name: "imds-agent",
        credentials_only: false,
        addr: agent.addr,
        credentials_path: format!("/latest/meta-data/iam/security-credentials/{ROLE}"),
        token: fetch_token(agent.addr)?,
        token_status: 200,
    }];
    let attributed = targets::attributed_agent(&bin, &options.agent_log_level)?;
    list.push(Target {
        name: ATTRIBUTED,
        credentials_only: true,
        addr: attributed.addr,
        credentials_path: format!("/latest/meta-data/iam/security-credentials/{ROLE}"),
        token: fetch_token(attributed.addr)?,
        token_status: 200,
    });
    let mut sts = None;
    let mut ra_calls_before = None;
    let helpers = if options.no_ectou {
        None
    } else {
        let moto = targets::moto()?;
        sts = Some(moto.addr);
        let ectou = targets::ectou(moto.addr, "arn:aws:iam::123456789012:role/bench")?;
        let path = "/latest/meta-data/iam/security-credentials/role-name".to_owned();
        warm_up(ectou.addr, &path).context("ectou-metadata never served credentials")?;
        let sts_agent = targets::sts_agent(&bin, &options.agent_log_level, moto.addr)?;
        let sts_path = format!("/latest/meta-data/iam/security-credentials/{ROLE}");
        warm_up(sts_agent.addr, &sts_path)
            .context("the STS-backed agent never served credentials")?;
        list.push(Target {
            name: "imds-agent, STS",
            credentials_only: true,
            addr: sts_agent.addr,
            credentials_path: sts_path.clone(),
            token: fetch_token(sts_agent.addr)?,
            token_status: 200,
        });
        let ra =
            roles_anywhere::RolesAnywhereAgent::start(&bin, &options.agent_log_level, moto.addr)
                .context("the Roles Anywhere-backed agent")?;
        warm_up(ra.agent.addr, &sts_path)
            .context("the Roles Anywhere-backed agent never served credentials")?;
        list.push(Target {
            name: ROLES_ANYWHERE,
            credentials_only: true,
            addr: ra.agent.addr,
            credentials_path: sts_path,
            token: fetch_token(ra.agent.addr)?,
            token_status: 200,
        });
        ra_calls_before = Some(ra.calls()?);
        list.push(Target {
            name: ECTOU,
            credentials_only: false,
            addr: ectou.addr,
            credentials_path: path,
            token: "unused".to_owned(),
            token_status: 404,
        });
        Some((moto, ectou, sts_agent, ra))
    };
    let mut rows = Vec::new();
    let ops = [Op::Token, Op::Credentials]
        .into_iter()
        .filter(|&o| !options.first_requests_only && options.op.is_none_or(|w| w == o));
    for op in ops {
        let counts = CONNECTIONS
            .into_iter()
            .filter(|&c| options.connections.is_none_or(|w| w == c));
        for connections in counts {
            let modes = [Mode::KeepAlive, Mode::Close]
                .into_iter()
                .filter(|&m| options.mode.is_none_or(|w| w == m));
            for mode in modes {
                let keep_alive = mode == Mode::KeepAlive;
                for target in list
                    .iter()
                    .filter(|t| op == Op::Credentials || !t.credentials_only)
                {
                    let scenario = scenario(target, op, connections, keep_alive, options);
                    let outcome = measure(&scenario)?;
                    eprintln!(
                        "xtask bench: {:<15} {:<16} {connections:>2} conn {:<10} {:>9.0} req/s p50 {:>7.3} ms p99 {:>7.3} ms requests {} errors {}",
                        target.name,
                        op.name(),
                        if keep_alive { "keep-alive" } else { "close" },
                        outcome.per_second,
                        ms(outcome.p50),
                        ms(outcome.p99),
                        outcome.requests,
                        outcome.errors
                    );
                    rows.push(Row {
                        target: target.name,
                        op,
                        connections,
                        keep_alive,
                        outcome,
                    });
                }
            }
        }
    }
    // Serving never asks Roles Anywhere or STS for anything.
    let ra_calls = match (&helpers, ra_calls_before) {
        (Some((_, _, _, ra)), Some(before)) => Some((before, ra.calls()?)),
        _ => None,
    };
    if let Some((before, after)) = ra_calls {
        eprintln!(
            "xtask bench: {ROLES_ANYWHERE}: {} CreateSession and {} STS calls while serving",
            after.create_session - before.create_session,
            after.sts - before.sts
        );
    }
    let first = match sts {
        Some(sts)
            if crate::util::is_root() && (options.op.is_none() || options.first_requests_only) =>
        {
            let first = first::run(&bin, &options.agent_log_level, sts)
                .context("the first-requests scenario")?;
            eprintln!(
                "xtask bench: first requests of {} new workloads: {} got credentials, p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
                first.workloads,
                first.successes,
                ms(first.p50),
                ms(first.p99),
                ms(first.max)
            );
            Some(first)
        }
        _ => {
            eprintln!(
                "xtask bench: first requests of new workloads: skipped (needs root for cgroups, and moto)"
            );
            None
        }
    };
    let mut report = report(&rows, options);
    if let Some((before, after)) = ra_calls {
        let _ = writeln!(
            report,
            "\n{ROLES_ANYWHERE}: {} CreateSession and {} STS calls while serving (its session and the role's credentials were fetched before the measured runs).",
            after.create_session - before.create_session,
            after.sts - before.sts
        );
    }
    if let Some(first) = &first {
        report.push_str(&first_report(first));
    }
    println!("{report}");
    if let Some(path) = &options.markdown {
        std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    let agent_errors: u64 = rows
        .iter()
        .filter(|r| r.target.starts_with("imds-agent"))
        .map(|r| r.outcome.errors)
        .sum();
    if agent_errors > 0 {
        bail!("the agent answered {agent_errors} requests wrongly or not at all");
    }
    if let Some((before, after)) = ra_calls
        && before != after
    {
        bail!(
            "the Roles Anywhere-backed agent called out while serving: {before:?} then {after:?}"
        );
    }
    if let Some(first) = &first
        && first.successes < first.workloads
    {
        bail!(
            "{} of {} new workloads got no credentials on their first request",
            first.workloads - first.successes,
            first.workloads
        );
    }
    if options.check && report.contains("| MISSED |") {
        bail!("a benchmark target was missed (see the table above)");
    }
    Ok(())
}

fn scenario(
    target: &Target,
    op: Op,
    connections: usize,
    keep_alive: bool,
    o: &Options,
) -> Scenario {
    let (request_head, expect_status) = match op {
        Op::Token => (
            "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n".to_owned(),
            target.token_status,
        ),
        Op::Credentials => (
            format!(
                "GET {} HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token: {}\r\n",
                target.credentials_path, target.token
            ),
            200,
        ),
    };
    Scenario {
        addr: target.addr,
        request_head,
        connections,
        keep_alive,
        expect_status,
        warmup: o.timing.warmup(),
        duration: o.timing.duration(),
    }
}

fn fetch_token(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(
        b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n",
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let (_, token) = reply.split_once("\r\n\r\n").context("a token response")?;
    Ok(token.to_owned())
}

fn warm_up(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let request = format!("GET {path} HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n");
            let mut reply = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut reply).is_ok()
                && reply.starts_with("HTTP/1.0 200")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("no 200 from {addr}{path} within 30 s")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(rows: &[Row], options: &Options) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Each scenario: {} ms measured after {} ms warm-up; one load-generator thread on the same machine; agent log level `{}`.\n",
        options.timing.duration_ms, options.timing.warmup_ms, options.agent_log_level
    );
    let _ = writeln!(
        out,
        "| operation | conns | connection | target | req/s | p50 ms | p99 ms | errors | agent ÷ ectou |"
    );
    let _ = writeln!(out, "|---|---:|---|---|---:|---:|---:|---:|---:|");
    for row in rows {
        let ratio = if row.target.starts_with("imds-agent") {
            rows.iter()
                .find(|o| {
                    o.target == ECTOU
                        && o.op == row.op
                        && o.connections == row.connections
                        && o.keep_alive == row.keep_alive
                })
                .filter(|o| o.outcome.per_second > 0.0)
                .map_or("".to_owned(), |o| {
                    format!("{:.1}×", row.outcome.per_second / o.outcome.per_second)
                })
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {} | {} |",
            row.op.name(),
            row.connections,
            if row.keep_alive {
                "keep-alive"
            } else {
                "close"
            },
            row.target,
            row.outcome.per_second,
            ms(row.outcome.p50),
            ms(row.outcome.p99),
            row.outcome.errors,
            ratio
        );
    }
    let _ = writeln!(out, "\nTargets (agent, credentials GET unless noted):\n");
    let _ = writeln!(out, "| target | measured | verdict |");
    let _ = writeln!(out, "|---|---|---|");
    let agent = |op: Op, conns: usize, keep: bool| {
        rows.iter().find(|r| {
            r.target == "imds-agent" && r.op == op && r.connections == conns && r.keep_alive == keep
        })
    };
    let ectou = |op: Op, conns: usize, keep: bool| {
        rows.iter().find(|r| {
            r.target == ECTOU && r.op == op && r.connections == conns && r.keep_alive == keep
        })
    };
    let mut verdict = |name: String, measured: String, ok: bool| {
        let _ = writeln!(
            out,
            "| {name} | {measured} | {} |",
            if ok { "met" } else { "MISSED" }
        );
    };
    for op in [Op::Token, Op::Credentials] {
        if let Some(r) = agent(op, 1, true) {
            verdict(
                format!("{}: p50 ≤ 0.1 ms at 1 connection", op.name()),
                format!("{:.3} ms", ms(r.outcome.p50)),
                r.outcome.p50 <= Duration::from_micros(100),
            );
        }
    }
    for keep in [true, false] {
        let mode = if keep { "keep-alive" } else { "close" };
        if let Some(r) = agent(Op::Credentials, 64, keep) {
            verdict(
                format!("p99 ≤ 2 ms at 64 connections, {mode}"),
                format!("{:.3} ms", ms(r.outcome.p99)),
                r.outcome.p99 <= Duration::from_millis(2),
            );
            if let Some(e) = ectou(Op::Credentials, 64, keep) {
                let ratio = r.outcome.per_second / e.outcome.per_second.max(f64::MIN_POSITIVE);
                verdict(
                    format!("≥ 20× ectou's req/s at 64 connections, {mode}"),
                    format!("{ratio:.1}×"),
                    ratio >= 20.0,
                );
            }
        }
    }
    for keep in [true, false] {
        let mode = if keep { "keep-alive" } else { "close" };
        let attributed = rows.iter().find(|r| {
            r.target == ATTRIBUTED
                && r.op == Op::Credentials
                && r.connections == 64
                && r.keep_alive == keep
        });
        if let (Some(a), Some(u)) = (attributed, agent(Op::Credentials, 64, keep)) {
            let share = a.outcome.per_second / u.outcome.per_second.max(f64::MIN_POSITIVE);
            verdict(
                format!("attributed ≥ 90 % of unattributed req/s at 64 connections, {mode}"),
                format!("{:.0} %", share * 100.0),
                share >= 0.9,
            );
        }
    }
    let errors: u64 = rows
        .iter()
        .filter(|r| r.target.starts_with("imds-agent"))
        .map(|r| r.outcome.errors)
        .sum();
    verdict(
        "zero errors (every agent scenario)".to_owned(),
        errors.to_string(),
        errors == 0,
    );
    out
}

fn first_report(first: &first::FirstRequests) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nFirst requests of {} new workloads (system units starting over {} ms, each in a cgroup made as it starts; cgroup attribution, `roles.default`, a session per workload, STS from moto; token PUT, listing and credentials GET, as an SDK asks):\n",
        first.workloads,
        first::SPREAD.as_millis()
    );
    let _ = writeln!(out, "| got credentials | p50 ms | p99 ms | max ms |");
    let _ = writeln!(out, "|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {} of {} | {:.1} | {:.1} | {:.1} |",
        first.successes,
        first.workloads,
        ms(first.p50),
        ms(first.p99),
        ms(first.max)
    );
    out
}
