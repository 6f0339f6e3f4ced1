//! The command line: `run`, `dev`, `check-config` and `is-configured`
//! start or check an agent, `cleanup` undoes what it set up on the host; `status`, `who`,
//! `assignments`, `metrics`, `bootstrap`, `mfa`, `profile`, `refresh`, `reload`,
//! `session` and `manage` talk to a running one over its admin socket
//! (`admin.rs`).
//!
//! Exit codes: 0 success, 1 a configuration error or a refusal from the
//! agent (or, for `status`, an agent that is not ready), 2 a usage error
//! (from clap), 3 a failure while running or an agent that can't be reached.

mod admin;
mod check;
mod generate;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, ConfigError, HostFacts, HostMode, Origin, Overrides};
use crate::imds::HttpTokens;
use crate::reload::Source;

/// A local EC2 Instance Metadata Service that gives each workload its own
/// IAM role's credentials.
#[derive(Debug, Parser)]
#[command(name = "imds-agent", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the IMDS as the config file says (what the systemd unit runs).
    Run {
        /// The config file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Serve an IMDS on a loopback port for development: no root, no AWS
    /// account, demo credentials unless told otherwise.
    Dev {
        /// Use this config file instead of the built-in dev config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The loopback port (0 picks a free one).
        #[arg(long, default_value_t = 1338)]
        port: u16,
        /// Serve the credentials in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
        /// and AWS_SESSION_TOKEN instead of the demo ones.
        #[arg(long)]
        credentials_from_env: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Check a config file and exit: 0 if it is valid, 1 if not.
    CheckConfig {
        /// The config file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Exit 0 if the config file holds any setting, 1 if it holds none or
    /// is missing (the unit's start condition: the package's sample, every
    /// line a comment, keeps the service from starting until it is
    /// written).
    IsConfigured {
        /// The config file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Remove what the agent set up on this host: its nftables table and
    /// its addresses on `lo`. Nothing else is touched.
    Cleanup {
        /// The config file (its `[host]` names the table); a missing file
        /// means the defaults.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// A running agent's state (exit 0 if ready, 1 if not).
    Status(admin::SocketArg),
    /// The workloads a running agent saw recently, and their roles.
    Who {
        /// Print the JSON the agent sent.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: admin::SocketArg,
    },
    /// A running agent's role rules (most specific first) and defaults.
    Assignments(admin::SocketArg),
    /// A running agent's metrics, in Prometheus' text format.
    Metrics(admin::SocketArg),
    /// Give a running agent its own credentials: reads
    /// {"AccessKeyId", "SecretAccessKey", "Token"} from stdin.
    Bootstrap(admin::SocketArg),
    /// Give a running agent an MFA code (six digits). Without CODE it is
    /// read from stdin (prompted for on a terminal), so it never shows in
    /// the process list: `imds-agent mfa` is better than `imds-agent mfa
    /// 123456`.
    Mfa {
        /// The code (better: leave it out and type it).
        code: Option<String>,
        #[command(flatten)]
        socket: admin::SocketArg,
    },
    /// List a running agent's profiles, or switch to one.
    Profile {
        #[command(subcommand)]
        action: admin::ProfileAction,
        #[command(flatten)]
        socket: admin::SocketArg,
    },
    /// Hand a running agent a config file (as root or the agent's user: the
    /// agent refuses anyone else): what changes without a restart (log
    /// level, instance data) is put in force, the role rules are read
    /// again, and the keys that need a restart are named. The unit's
    /// ExecReload (`systemctl reload imds-agent`). Exits 1 when the file
    /// does not check or the role rules are refused, 3 when the agent
    /// cannot be reached.
    Reload {
        /// The config file; it is checked here first, and a file that does
        /// not check is not sent.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// The agent's admin socket (default: the one `--running-config`
        /// names, else the one `--config` names).
        #[arg(long, env = "IMDS_AGENT_SOCKET")]
        socket: Option<PathBuf>,
        /// The config the agent runs with (the unit passes its credential
        /// copy): its admin socket is the one the agent listens on, since a
        /// changed `admin.socket` takes a restart.
        #[arg(long)]
        running_config: Option<PathBuf>,
    },
    /// Refresh every role a running agent caches now (it keeps serving what
    /// it has until the new credentials arrive).
    Refresh(admin::SocketArg),
    /// Print the address of a running agent's /manage page (its secret
    /// included) and open it in the browser when there is a display.
    Manage {
        /// Only print the address.
        #[arg(long)]
        print: bool,
        #[command(flatten)]
        socket: admin::SocketArg,
    },
    /// Discard a running agent's MFA session (the next fetch opens a new one).
    Session {
        #[command(subcommand)]
        action: admin::SessionAction,
        #[command(flatten)]
        socket: admin::SocketArg,
    },
    /// Write the man pages (roff, one per command, into --dir) or a
    /// shell's completions (to stdout), from this very command line's
    /// definition (packaging).
    #[command(hide = true)]
    Generate {
        /// What to write.
        #[arg(value_enum)]
        what: generate::Generated,
        /// Where the man pages go.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Options named after EC2's own instance metadata options.
#[derive(Debug, Args)]
struct Common {
    /// `optional`: IMDSv1 and IMDSv2; `required`: IMDSv2 only.
    #[arg(long, value_name = "optional|required", value_parser = parse_http_tokens)]
    http_tokens: Option<HttpTokens>,
    /// IP TTL of token responses (EC2's HttpPutResponseHopLimit), 1-64.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=64))]
    hop_limit: Option<u8>,
    /// Listen on these addresses instead (repeatable).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Log filter: error, warn, info, debug, trace, or per-module filters.
    #[arg(long)]
    log_level: Option<String>,
    /// The admin socket ({port} is replaced by the first listening port).
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// How workloads reach the agent (the file's host.mode): off, alias
    /// (169.254.169.254 on lo), dnat (nftables) or ebpf (cgroup programs).
    #[arg(long, value_name = "off|alias|dnat|ebpf", value_parser = parse_host_mode)]
    host_mode: Option<HostMode>,
}

impl Common {
    fn overrides(&self) -> Overrides {
        Overrides {
            listen: (!self.listen.is_empty()).then(|| self.listen.clone()),
            http_tokens: self.http_tokens,
            hop_limit: self.hop_limit,
            log_level: self.log_level.clone(),
            credentials_from_env: false,
            admin_socket: self.admin_socket.clone(),
            host_mode: self.host_mode,
        }
    }
}

fn parse_host_mode(value: &str) -> Result<HostMode, String> {
    HostMode::parse(value).ok_or_else(|| format!("{value:?}: expected off, alias, dnat or ebpf"))
}

fn parse_http_tokens(value: &str) -> Result<HttpTokens, String> {
    match value {
        "optional" => Ok(HttpTokens::Optional),
        "required" => Ok(HttpTokens::Required),
        other => Err(format!("{other:?}: expected optional or required")),
    }
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    // First, while nothing else is open and the process is one thread.
    let carried = crate::fdstore::take(crate::fdstore::CREDENTIALS);
    let cli = Cli::parse();
    let env = |name: &str| std::env::var(name).ok();
    let host = HostFacts::read();
    match cli.command {
        Command::CheckConfig { config } => {
            match Config::load(&config, &Overrides::default(), &host, &env) {
                Ok(c) => check::check_config(&c),
                Err(e) => config_error(&e),
            }
        }
        Command::IsConfigured { config } => check::is_configured(&config),
        Command::Cleanup { config } => cleanup(&config, &host, &env),
        Command::Generate { what, dir } => generate::generate(what, dir.as_deref()),
        Command::Run { config, common } => {
            crate::sys::hangup::ignore_until_caught();
            let overrides = common.overrides();
            match Config::load_with_text(&config, &overrides, &host, &env) {
                Ok((c, text)) => {
                    let source = Source {
                        path: Some(config),
                        text,
                        overrides,
                    };
                    serve(c, source, carried, |_, _| {})
                }
                Err(e) => config_error(&e),
            }
        }
        Command::Dev {
            config,
            port,
            credentials_from_env,
            common,
        } => {
            let mut overrides = common.overrides();
            overrides.credentials_from_env = credentials_from_env;
            if overrides.listen.is_none() {
                overrides.listen = Some(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))]);
            }
            let dev_socket = admin::dev_socket_path();
            let loaded = match &config {
                Some(path) => Config::load_with_text(path, &overrides, &host, &env),
                None => Config::parse(
                    config::DEV_CONFIG,
                    Origin::Embedded,
                    &overrides,
                    &host,
                    &env,
                )
                .map(|c| (c, config::DEV_CONFIG.to_owned())),
            };
            let source = |text| Source {
                path: config.clone(),
                text,
                overrides: overrides.clone(),
            };
            match loaded {
                Ok((c, _)) if c.host.mode != config::HostMode::Off => {
                    eprintln!(
                        "imds-agent: {}: host.mode = \"{}\": dev serves on a loopback port and never takes over the host; use `imds-agent run`",
                        c.origin,
                        c.host.mode.as_str()
                    );
                    ExitCode::from(1)
                }
                Ok((mut c, text)) => {
                    // A dev agent's socket is the user's own, one per port,
                    // in a directory nobody else may enter.
                    if c.admin_socket.is_none()
                        && let Some(dir) = dev_socket.parent()
                        && let Err(why) = crate::desktop::private_dir(dir)
                    {
                        eprintln!("imds-agent: {why}");
                        return ExitCode::from(1);
                    }
                    c.admin_socket.get_or_insert(dev_socket);
                    // The page is the developer's way in: on a free
                    // loopback port unless the config names one.
                    c.web_listen
                        .get_or_insert(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
                    c.desktop = true;
                    let banner = dev_banner(&c);
                    serve(c, source(text), carried, move |addrs, manage| {
                        print!("{}", banner(addrs, manage))
                    })
                }
                Err(e) => config_error(&e),
            }
        }
        Command::Status(socket) => admin::status(&socket),
        Command::Who { json, socket } => admin::who(&socket, json),
        Command::Assignments(socket) => admin::assignments(&socket),
        Command::Metrics(socket) => admin::metrics(&socket),
        Command::Bootstrap(socket) => admin::bootstrap(&socket),
        Command::Mfa { code, socket } => admin::mfa(&socket, code.as_deref()),
        Command::Refresh(socket) => admin::refresh(&socket),
        Command::Reload {
            config,
            socket,
            running_config,
        } => match Config::load_with_text(&config, &Overrides::default(), &host, &env) {
            Ok((c, text)) => {
                let running = running_config.filter(|_| socket.is_none()).and_then(|path| {
                    match Config::load(&path, &Overrides::default(), &host, &env) {
                        Ok(running) => Some(crate::admin::socket_path(&running, &running.listen)),
                        Err(e) => {
                            // A certificate it names may have changed since
                            // the start: --config's socket is the best guess.
                            eprintln!(
                                "imds-agent: warning: the running config: {}; trying the admin socket {} names",
                                e.with_causes(),
                                config.display()
                            );
                            None
                        }
                    }
                });
                let socket = socket
                    .or(running)
                    .unwrap_or_else(|| crate::admin::socket_path(&c, &c.listen));
                admin::reload(&socket, &text)
            }
            Err(e) => config_error(&e),
        },
        Command::Profile { action, socket } => admin::profile(&socket, &action),
        Command::Session { action, socket } => admin::session(&socket, &action),
        Command::Manage { print, socket } => admin::manage(&socket, print),
    }
}

fn cleanup(path: &std::path::Path, host: &HostFacts, env: config::Env<'_>) -> ExitCode {
    let loaded = if path.exists() {
        Config::load(path, &Overrides::default(), host, env)
    } else {
        Config::parse("", Origin::Embedded, &Overrides::default(), host, env)
    };
    let c = match loaded {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    match crate::net::cleanup(&c.host) {
        Ok(cleaned) => {
            match &cleaned.table {
                Some(table) => println!("removed nftables table inet {table}"),
                None => println!("no nftables table inet {}", c.host.table),
            }
            for ip in &cleaned.addresses {
                println!("removed {ip} from lo");
            }
            for pin in &cleaned.pins {
                println!("removed eBPF link {}", pin.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("imds-agent: cleanup: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn serve(
    config: Config,
    source: Source,
    carried: crate::fdstore::Taken,
    on_listening: impl FnOnce(&[SocketAddr], Option<&str>),
) -> ExitCode {
    crate::logging::init(&config.log_level, config.log_target);
    if let Some(warning) = config.permission_warning() {
        tracing::warn!("{warning}");
    }
    match crate::app::run(config, source, carried, on_listening) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imds-agent: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("imds-agent: {}", e.with_causes());
    ExitCode::from(1)
}

/// What `dev` prints once it listens: where it is and the line that points
/// SDKs at it.
fn dev_banner(c: &Config) -> impl FnOnce(&[SocketAddr], Option<&str>) -> String + use<> {
    let role = c
        .roles
        .default
        .as_ref()
        .map_or("no role".to_owned(), |r| format!("role {}", r.name));
    let tokens = c.settings.http_tokens.as_str();
    let hops = c.settings.hop_limit;
    let region = c.instance.region.clone();
    let config = c.clone();
    move |addrs, manage| {
        let first = addrs
            .first()
            .map_or_else(String::new, |a| format!("http://{a}/"));
        let socket = crate::admin::socket_path(&config, addrs);
        format!(
            "imds-agent dev: EC2 instance metadata on {first} ({role}; tokens {tokens}; hop limit {hops})\n\
             Point AWS SDKs and the AWS CLI at it with:\n\
             export AWS_EC2_METADATA_SERVICE_ENDPOINT={first}\n\
             export AWS_REGION={region}\n\
             {}\
             Talk to it (imds-agent status, mfa, profile, manage) with:\n\
             export IMDS_AGENT_SOCKET={}\n",
            manage.map_or_else(String::new, |url| format!(
                "Manage its session (MFA code, profile) in a browser:\n{url}\n"
            )),
            socket.display(),
        )
    }
}
