//! The commands that talk to a running agent over its admin socket.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::admin::DEFAULT_SOCKET;
use crate::admin::client::{self, Reply};

/// `--socket`.
#[derive(Debug, Args)]
pub(super) struct SocketArg {
    /// The agent's admin socket.
    #[arg(long, env = "IMDS_AGENT_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(super) enum ProfileAction {
    /// The profiles and the active one.
    List,
    /// Make NAME the active profile.
    Use {
        /// The profile.
        name: String,
    },
    /// What profile NAME is (never its secret key).
    Show {
        /// The profile.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum SessionAction {
    /// The agent's own session: its base credentials, MFA device, expiry.
    Show,
    /// Open an MFA session with CODE (six digits).
    Start {
        /// The code (better: leave it out and type it; it is read from
        /// stdin).
        code: Option<String>,
    },
    /// Discard the MFA session or session token.
    Clear,
}

/// Where `dev` puts its socket unless told otherwise: in a directory of
/// the user's own, one socket per port.
pub(super) fn dev_socket_path() -> PathBuf {
    crate::desktop::runtime_dir().join("imds-agent-dev-{port}.sock")
}

pub(super) fn status(arg: &SocketArg) -> ExitCode {
    ask(&arg.socket, "GET", "/status", None, |reply| {
        println!("{}", pretty(&reply.body));
        let ready = serde_json::from_str::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v["ready"].as_bool())
            .unwrap_or(false);
        if ready {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    })
}

/// The workloads seen recently and their roles, as a table (or the JSON).
pub(super) fn who(arg: &SocketArg, json: bool) -> ExitCode {
    ask(&arg.socket, "GET", "/workloads", None, |reply| {
        if json {
            println!("{}", pretty(&reply.body));
            return ExitCode::SUCCESS;
        }
        let Ok(list) = serde_json::from_str::<Vec<serde_json::Value>>(&reply.body) else {
            eprintln!("imds-agent: the agent's answer is not a list of workloads");
            return ExitCode::from(3);
        };
        let rows: Vec<[String; 4]> = list
            .iter()
            .map(|w| {
                let text = |k: &str| w[k].as_str().unwrap_or("-").to_owned();
                [
                    text("workload"),
                    text("role"),
                    w["requests"].to_string(),
                    text("last_seen"),
                ]
            })
            .collect();
        print!(
            "{}",
            table(["WORKLOAD", "ROLE", "REQUESTS", "LAST SEEN"], &rows)
        );
        ExitCode::SUCCESS
    })
}

/// The metrics, as Prometheus reads them.
pub(super) fn metrics(arg: &SocketArg) -> ExitCode {
    ask(&arg.socket, "GET", "/metrics", None, |reply| {
        print!("{}", reply.body);
        ExitCode::SUCCESS
    })
}

/// The rules in force, most specific first, and the defaults.
pub(super) fn assignments(arg: &SocketArg) -> ExitCode {
    ask(&arg.socket, "GET", "/assignments", None, |reply| {
        println!("{}", pretty(&reply.body));
        ExitCode::SUCCESS
    })
}

/// Left-aligned columns, two spaces apart.
fn table<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = head.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(head);
    for row in rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

pub(super) fn bootstrap(arg: &SocketArg) -> ExitCode {
    let mut body = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut body) {
        eprintln!("imds-agent: cannot read the credentials from stdin: {e}");
        return ExitCode::from(1);
    }
    ask(&arg.socket, "POST", "/bootstrap/creds", Some(&body), |_| {
        println!("the agent took the credentials");
        ExitCode::SUCCESS
    })
}

pub(super) fn mfa(arg: &SocketArg, code: Option<&str>) -> ExitCode {
    let typed;
    let code = match code {
        Some(code) => code,
        None => match read_code() {
            Ok(code) => {
                typed = code;
                typed.as_str()
            }
            Err(e) => {
                eprintln!("imds-agent: cannot read the MFA code from stdin: {e}");
                return ExitCode::from(2);
            }
        },
    };
    if crate::creds::mfa::MfaCode::parse(code).is_err() {
        eprintln!("imds-agent: an MFA code is exactly six digits");
        return ExitCode::from(2);
    }
    let body = serde_json::json!({ "code": code }).to_string();
    ask(&arg.socket, "POST", "/mfa", Some(&body), |reply| {
        let opened = serde_json::from_str::<serde_json::Value>(&reply.body).unwrap_or_default();
        match opened["expiration"].as_str() {
            Some(expiration) => println!("the MFA session is open until {expiration}"),
            None => println!("the agent took the code"),
        }
        ExitCode::SUCCESS
    })
}

/// One line from stdin, with a prompt on stderr when stdin is a terminal.
/// At most 64 bytes: a code is six digits, and a stdin that never ends
/// must not be read to its end.
fn read_code() -> std::io::Result<String> {
    use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("MFA code: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().take(64).read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// Hands the agent at `socket` a config's `text` and says what it did.
pub(super) fn reload(socket: &Path, text: &str) -> ExitCode {
    ask(socket, "POST", "/config", Some(text), |reply| {
        let outcome: serde_json::Value = serde_json::from_str(&reply.body).unwrap_or_default();
        let keys = |name: &str| -> Vec<String> {
            outcome[name]
                .as_array()
                .map(|keys| {
                    keys.iter()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (applied, restart) = (keys("applied"), keys("needs_restart"));
        if applied.is_empty() && restart.is_empty() {
            println!("reloaded: nothing changed (the role rules were read again)");
        }
        if !applied.is_empty() {
            println!("reloaded, in force now: {}", applied.join(", "));
        }
        if !restart.is_empty() {
            println!(
                "changed, but in force only after a restart (`systemctl restart imds-agent`, which costs STS nothing): {}",
                restart.join(", ")
            );
        }
        let rules = &outcome["rules"];
        if let Some(why) = rules["refused"].as_str() {
            eprintln!(
                "imds-agent: the role rules in {} were refused, the last good set stays in force: {why}",
                rules["dir"].as_str().unwrap_or("roles.d")
            );
            return ExitCode::from(1);
        }
        if rules.is_null() {
            eprintln!(
                "imds-agent: warning: the role rules' watcher did not answer: see the agent's log"
            );
        } else {
            println!(
                "role rules: {} in {} file(s) in {}",
                rules["rules"],
                rules["files"],
                rules["dir"].as_str().unwrap_or_default()
            );
        }
        ExitCode::SUCCESS
    })
}

pub(super) fn refresh(arg: &SocketArg) -> ExitCode {
    ask(&arg.socket, "POST", "/refresh", None, |_| {
        println!("refreshing");
        ExitCode::SUCCESS
    })
}

pub(super) fn profile(arg: &SocketArg, action: &ProfileAction) -> ExitCode {
    match action {
        ProfileAction::List => ask(&arg.socket, "GET", "/profiles", None, |reply| {
            println!("{}", pretty(&reply.body));
            ExitCode::SUCCESS
        }),
        ProfileAction::Show { name } => ask(
            &arg.socket,
            "GET",
            &format!("/profiles/{name}"),
            None,
            |reply| {
                println!("{}", pretty(&reply.body));
                ExitCode::SUCCESS
            },
        ),
        ProfileAction::Use { name } => {
            let body = serde_json::json!({ "name": name }).to_string();
            ask(&arg.socket, "PUT", "/profiles/active", Some(&body), |_| {
                println!("profile {name} is active");
                ExitCode::SUCCESS
            })
        }
    }
}

pub(super) fn session(arg: &SocketArg, action: &SessionAction) -> ExitCode {
    match action {
        SessionAction::Show => ask(&arg.socket, "GET", "/session", None, |reply| {
            println!("{}", pretty(&reply.body));
            ExitCode::SUCCESS
        }),
        SessionAction::Start { code } => mfa(arg, code.as_deref()),
        SessionAction::Clear => ask(&arg.socket, "DELETE", "/session", None, |_| {
            println!("session cleared");
            ExitCode::SUCCESS
        }),
    }
}

/// Prints the `/manage` page's address and, unless `print_only` or there is
/// no display, opens it with `xdg-open` (through a file: the address
/// carries the page's secret, and command lines are public).
pub(super) fn manage(arg: &SocketArg, print_only: bool) -> ExitCode {
    ask(&arg.socket, "GET", "/manage-url", None, |reply| {
        let url = serde_json::from_str::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v["url"].as_str().map(str::to_owned));
        let Some(url) = url.filter(|u| crate::desktop::is_local_page(u)) else {
            eprintln!("imds-agent: the agent's answer is not a /manage address on loopback");
            return ExitCode::from(3);
        };
        println!("{url}");
        if print_only || !crate::desktop::has_display() {
            return ExitCode::SUCCESS;
        }
        let dir = crate::desktop::runtime_dir();
        let opened = crate::desktop::private_dir(&dir)
            .map_err(std::io::Error::other)
            .and_then(|()| crate::desktop::open_in_browser(&url, &dir));
        match opened {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("imds-agent: could not open a browser ({e}); open the address above");
                ExitCode::from(3)
            }
        }
    })
}

/// Sends one request; a 2xx goes to `ok`, anything else is printed as the
/// agent's refusal (exit 1), an unreachable agent is exit 3.
fn ask(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    ok: impl FnOnce(&Reply) -> ExitCode,
) -> ExitCode {
    match client::request(socket, method, path, body) {
        Ok(reply) if (200..300).contains(&reply.status) => ok(&reply),
        Ok(reply) => {
            let reason = serde_json::from_str::<serde_json::Value>(&reply.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(reply.body);
            eprintln!("imds-agent: the agent refused ({}): {reason}", reply.status);
            ExitCode::from(1)
        }
        Err(e) => {
            let mut message = e.to_string();
            if let Some(source) = std::error::Error::source(&e) {
                message.push_str(&format!(": {source}"));
            }
            eprintln!("imds-agent: {message}");
            ExitCode::from(3)
        }
    }
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| json.to_owned())
}
