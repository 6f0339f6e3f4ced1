//! The admin interface: metrics that a Prometheus parser reads, also over
//! TCP (and nothing else there), the workloads seen, bootstrap credentials
//! that never come back out, and a socket only its users may open.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::{
    Agent, STATIC_CREDENTIALS, agent_bin, config_file, free_port, get, py_script, python,
    run_with_stdin, token, wait_until,
};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `text` parsed by prometheus_client.
fn parse_metrics(text: &str) -> serde_json::Value {
    let out = run_with_stdin(
        Command::new(python()).arg(py_script("parse_metrics.py")),
        text,
    );
    assert!(
        out.status.success(),
        "prometheus_client refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of sample `name` with `labels`, in whichever family holds it
/// (the parser names a counter's family without `_total`).
fn sample(families: &serde_json::Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    families
        .as_object()
        .unwrap()
        .values()
        .flat_map(|f| f["samples"].as_array().unwrap().iter())
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k].as_str() == Some(*v)))
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

#[test]
fn metrics_parse_and_count_what_happened() {
    let port = free_port();
    let (_dir, path) = config_file(&format!(
        "[admin]\nmetrics_listen = \"127.0.0.1:{port}\"\n\
         {STATIC_CREDENTIALS}[roles]\ndefault = \"app\"\n"
    ));
    let agent = Agent::dev(&["--config", path.to_str().unwrap()]);
    let t = token(agent.addr, 60);
    let creds = "/latest/meta-data/iam/security-credentials/app";
    assert_eq!(
        get(agent.addr, creds, &[("X-aws-ec2-metadata-token", &t)]).status,
        200
    );
    assert_eq!(get(agent.addr, creds, &[]).status, 200);
    assert_eq!(get(agent.addr, "/latest/meta-data/nope", &[]).status, 404);
    assert_eq!(
        get(agent.addr, creds, &[("X-aws-ec2-metadata-token", "forged")]).status,
        401
    );

    let out = agent.cli(&["metrics"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families = parse_metrics(&stdout(&out));
    assert_eq!(families["imds_requests"]["type"], "counter");
    let count = |class: &str, status: &str| {
        sample(
            &families,
            "imds_requests_total",
            &[("class", class), ("status", status)],
        )
    };
    assert_eq!(count("credentials", "200"), 2.0);
    assert_eq!(count("token", "200"), 1.0);
    assert_eq!(count("metadata", "404"), 1.0);
    assert_eq!(count("refused", "401"), 1.0);
    assert_eq!(
        families["imds_request_duration_seconds"]["type"],
        "histogram"
    );
    assert_eq!(
        sample(&families, "imds_request_duration_seconds_count", &[]),
        5.0
    );
    assert_eq!(
        sample(
            &families,
            "imds_request_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        5.0
    );
    assert_eq!(
        sample(
            &families,
            "imds_credentials_served_total",
            &[("from", "cached")]
        ),
        2.0
    );
    assert_eq!(sample(&families, "imds_ready", &[]), 1.0);
    assert_eq!(sample(&families, "imds_workloads_seen", &[]), 1.0);

    // Over TCP: the metrics, and nothing else of the admin API.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let over_tcp = get(addr, "/metrics", &[]);
    assert_eq!(over_tcp.status, 200);
    assert!(
        over_tcp
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4"))
    );
    let families = parse_metrics(&over_tcp.text());
    assert_eq!(
        sample(
            &families,
            "imds_agent_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(sample(&families, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(sample(&families, "process_open_fds", &[]) >= 3.0);
    assert!(sample(&families, "process_cpu_seconds_total", &[]) >= 0.0);
    assert_eq!(
        families["imds_sts_call_duration_seconds"]["type"],
        "histogram"
    );
    assert_eq!(
        sample(
            &families,
            "imds_sts_call_duration_seconds_count",
            &[("action", "AssumeRole")]
        ),
        0.0,
        "static keys: no STS call"
    );
    // The probes, for load balancers and Kubernetes.
    let health = get(addr, "/healthz", &[]);
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    let ready = get(addr, "/readyz", &[]);
    assert_eq!((ready.status, ready.text().as_str()), (200, "ready\n"));
    for path in ["/status", "/workloads", "/profiles", "/bootstrap/creds"] {
        assert_eq!(get(addr, path, &[]).status, 404, "{path} over TCP");
    }

    // Who asked, and what they got.
    let who = agent.cli(&["who"], "");
    let table = stdout(&who);
    assert!(table.starts_with("WORKLOAD"), "{table}");
    assert!(
        table.contains("address 127.0.0.1") && table.contains(" app "),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&agent.cli(&["who", "--json"], "").stdout).unwrap();
    assert_eq!(json[0]["requests"], 5, "{json}");
}

#[test]
fn bootstrap_credentials_never_come_back_out() {
    const SECRET: &str = "bootstrapSecretThatMustNeverBeReadBack00";
    let (_dir, path) = config_file(&format!(
        "[instance]\naccount_id = \"123456789012\"\n\
         [credentials]\nsource = \"sts\"\nbase = \"bootstrap\"\nendpoint = \"http://127.0.0.1:{}\"\n\
         [roles]\ndefault = \"app\"\n",
        free_port()
    ));
    let agent = Agent::dev(&["--config", path.to_str().unwrap()]);
    let body = format!(
        "{{\"AccessKeyId\": \"AKIABOOTSTRAP0000001\", \"SecretAccessKey\": \"{SECRET}\", \"Token\": \"bootstrapTokenNeverReadBack\"}}"
    );
    let taken = agent.cli(&["bootstrap"], &body);
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    // The fetch the bootstrap starts fails (nothing answers at the STS
    // endpoint) and logs that: wait for it, so the log below holds it.
    wait_until(
        "the fetch after bootstrap to be logged",
        Duration::from_secs(15),
        || {
            agent
                .logs()
                .split("bootstrap credentials received")
                .nth(1)
                .is_some_and(|after| after.contains("STS could not issue credentials"))
        },
    );
    let mut seen = String::new();
    for args in [
        &["status"][..],
        &["who", "--json"],
        &["assignments"],
        &["metrics"],
        &["session", "show"],
        &["profile", "list"],
    ] {
        let out = agent.cli(args, "");
        seen.push_str(&stdout(&out));
        seen.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    seen.push_str(&agent.logs());
    assert!(
        !seen.contains(SECRET) && !seen.contains("bootstrapTokenNeverReadBack"),
        "{seen}"
    );
    assert!(
        seen.contains("0001"),
        "the key id's suffix is shown: {seen}"
    );
    // The route takes credentials; nothing reads them.
    let reply = support::admin_request(&agent.socket, "GET", "/bootstrap/creds", None);
    assert_eq!(reply.0, 405, "{reply:?}");
    assert!(!reply.1.contains(SECRET));
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn the_admin_socket_refuses_callers_without_permission() {
    let as_user = |agent: &Agent, uid: &str, gid: &str| {
        Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
            ])
            .arg(agent_bin())
            .args(["status", "--socket"])
            .arg(&agent.socket)
            .output()
            .unwrap()
    };
    // Mode 0600: root and the agent's user only.
    let agent = Agent::dev(&[]);
    let refused = as_user(&agent, "4321", "4321");
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Permission denied"),
        "{refused:?}"
    );
    assert!(agent.cli(&["status"], "").status.success(), "root may");
    drop(agent);
    // With admin.group, its members may too; others still may not.
    let (_dir, path) = config_file(&format!("[admin]\ngroup = \"4322\"\n{STATIC_CREDENTIALS}"));
    let agent = Agent::dev(&["--config", path.to_str().unwrap()]);
    let member = as_user(&agent, "4321", "4322");
    assert!(member.status.success(), "{member:?}");
    assert_eq!(as_user(&agent, "4321", "4321").status.code(), Some(3));
}

/// The socket's mode is not the only guard: with the file opened to
/// everyone (an operator's chmod, a shared directory), a user who is not
/// root, the agent's user or in `admin.group` is still refused, by its
/// credentials on the connection.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn only_root_the_agents_user_and_its_group_may_use_the_socket() {
    use std::os::unix::fs::PermissionsExt as _;
    let (_dir, path) = config_file(&format!(
        "[admin]\ngroup = \"4343\"\n{STATIC_CREDENTIALS}[roles]\ndefault = \"app\"\n"
    ));
    let agent = Agent::dev(&["--config", path.to_str().unwrap()]);
    let open = |p: &std::path::Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(agent.socket.parent().unwrap(), 0o755);
    open(&agent.socket, 0o666);
    let status_as = |groups: &str| {
        Command::new("setpriv")
            .args(["--reuid=4242", "--regid=4242"])
            .arg(groups)
            .arg(agent_bin())
            .args(["status", "--socket"])
            .arg(&agent.socket)
            .output()
            .unwrap()
    };
    let stranger = status_as("--clear-groups");
    assert!(!stranger.status.success(), "{stranger:?}");
    assert!(!stdout(&stranger).contains("\"ready\""), "{stranger:?}");
    agent.wait_for_log("admin socket: refused a connection");
    let member = status_as("--groups=4343");
    assert!(member.status.success(), "{member:?}\n{}", agent.logs());
    assert!(stdout(&member).contains("\"ready\": true"), "{member:?}");
    assert!(agent.cli(&["status"], "").status.success(), "root");

    // A member may not hand the agent a config: this one would have it
    // serve its own config file (its keys) as every workload's user data.
    // Raw HTTP, as an attacker would send it, not the CLI (which checks
    // the file first, with the member's rights).
    let attack = format!(
        "[instance]\nuser_data_file = {:?}\n{STATIC_CREDENTIALS}",
        path.to_str().unwrap()
    );
    let posted = Command::new("setpriv")
        .args(["--reuid=4242", "--regid=4242", "--groups=4343"])
        .args(["/usr/bin/python3", "-c", POST_CONFIG])
        .arg(&agent.socket)
        .arg(&attack)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        stdout(&posted),
        String::from_utf8_lossy(&posted.stderr)
    );
    assert!(said.starts_with("HTTP/1.1 403"), "{said}");
    assert!(
        said.contains("only root or the agent's user may do this"),
        "{said}"
    );
    agent.wait_for_log("refused a request only root or the agent's user may make");
    let user_data = get(agent.addr, "/latest/user-data", &[]);
    assert_eq!(user_data.status, 404, "{}", user_data.text());
    assert!(!user_data.text().contains("imdsAgentDemoSecret"));
}

/// Sends argv[2] as `POST /config` to the socket argv[1] and prints the
/// reply.
const POST_CONFIG: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
body = sys.argv[2].encode()
s.sendall(b"POST /config HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
reply = b""
while chunk := s.recv(65536):
    reply += chunk
print(reply.decode(errors="replace"))
"#;

/// A config reload: SIGHUP reads the file again, `imds-agent reload` hands
/// one in. The log level and the instance metadata change at once; keys
/// that need a restart are named (never their values) and not applied; a
/// file that does not check changes nothing.
#[test]
fn a_reload_changes_the_log_level_and_instance_data_and_names_the_rest() {
    const ZONE: &str = "/latest/meta-data/placement/availability-zone";
    const NEW_SECRET: &str = "reloadedSecretThatMustNeverBeLogged00000";
    let rules = tempfile::tempdir().unwrap();
    let rules_dir = rules.path().display().to_string();
    let config = |zone: &str, level: &str, extra: &str| {
        format!(
            "{STATIC_CREDENTIALS}\
             [instance]\nregion = \"eu-west-1\"\navailability_zone = \"{zone}\"\naccount_id = \"123456789012\"\n{extra}\
             [log]\nlevel = \"{level}\"\n[roles]\ndir = \"{rules_dir}\"\n"
        )
    };
    let (dir, path) = config_file(&config("eu-west-1a", "info", ""));
    let agent = Agent::dev(&["--config", path.to_str().unwrap()]);
    let zone = || get(agent.addr, ZONE, &[]).text();
    let reloads = || {
        agent.logs().matches("config reloaded").count()
            + agent.logs().matches("config reload refused").count()
    };
    let hangup = || {
        let sent = Command::new("kill")
            .args(["-HUP", &agent.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    assert_eq!(zone(), "eu-west-1a");
    assert!(
        !agent.logs().contains(&format!("path=\"{ZONE}\"")),
        "info logs no metadata request"
    );

    // SIGHUP: a new zone and log level are in force; the account and the
    // hop limit need a restart.
    std::fs::write(
        &path,
        config("eu-west-1b", "debug", "[server]\nhop_limit = 2\n")
            .replace("123456789012", "210987654321"),
    )
    .unwrap();
    hangup();
    wait_until("the SIGHUP reload", Duration::from_secs(10), || {
        reloads() == 2
    });
    let logs = agent.logs();
    assert!(
        logs.contains("instance.availability_zone, log.level"),
        "{logs}"
    );
    assert!(
        logs.contains("server.hop_limit") && logs.contains("instance.account_id"),
        "{logs}"
    );
    assert_eq!(zone(), "eu-west-1b");
    let document = get(
        agent.addr,
        "/latest/dynamic/instance-identity/document",
        &[],
    )
    .text();
    assert!(
        document.contains("\"accountId\" : \"123456789012\"")
            || document.contains("\"accountId\":\"123456789012\""),
        "the account stays: {document}"
    );
    wait_until(
        "a metadata request logged at debug",
        Duration::from_secs(5),
        || {
            zone();
            agent.logs().contains(&format!("path=\"{ZONE}\""))
        },
    );

    // The same file again: what waits for a restart is still named.
    let again = agent.cli(&["reload", "--config", path.to_str().unwrap()], "");
    let said_again = format!(
        "{}{}",
        stdout(&again),
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        again.status.success() && said_again.contains("instance.account_id"),
        "{said_again}"
    );

    // A file that does not check changes nothing.
    std::fs::write(
        &path,
        config("eu-west-1c", "info", "[server]\nhop_limit = 99\n"),
    )
    .unwrap();
    hangup();
    wait_until("the refused reload", Duration::from_secs(10), || {
        reloads() == 4
    });
    assert!(
        agent.logs().contains("config reload refused"),
        "{}",
        agent.logs()
    );
    assert_eq!(zone(), "eu-west-1b");

    // `imds-agent reload` hands a file in; a changed secret is named by
    // its key only.
    let handed = dir.path().join("handed.toml");
    std::fs::write(
        &handed,
        config("eu-west-1c", "info", "")
            .replace("imdsAgentDemoSecretKeyNotValidAnywhere00", NEW_SECRET),
    )
    .unwrap();
    let out = agent.cli(&["reload", "--config", handed.to_str().unwrap()], "");
    let said = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("in force now: instance.availability_zone, log.level"),
        "{said}"
    );
    assert!(said.contains("credentials.secret_access_key"), "{said}");
    assert_eq!(zone(), "eu-west-1c");
    assert!(said.contains("role rules: 0 in 0 file(s)"), "{said}");
    // The role rules are read again, and a refused set fails the reload
    // (the last good set stays in force).
    let bad_rule = rules.path().join("10-bad.toml");
    std::fs::write(
        &bad_rule,
        "[[rule]]\nunit = \"x.service\"\nrole = \"not a role\"\n",
    )
    .unwrap();
    let out = agent.cli(&["reload", "--config", handed.to_str().unwrap()], "");
    let said = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("were refused") && said.contains("10-bad.toml"),
        "{said}"
    );
    std::fs::remove_file(&bad_rule).unwrap();
    let out = agent.cli(&["reload", "--config", handed.to_str().unwrap()], "");
    let said = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && said.contains("role rules: 0 in 0 file(s)"),
        "{said}"
    );
    let refused = agent.cli(&["reload", "--config", path.to_str().unwrap()], "");
    assert_eq!(
        refused.status.code(),
        Some(1),
        "a file that does not check is not sent"
    );
    assert_eq!(zone(), "eu-west-1c");
    assert!(!agent.logs().contains(NEW_SECRET) && !said.contains(NEW_SECRET));
}
