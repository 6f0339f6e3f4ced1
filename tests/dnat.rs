//! DNAT mode, for EC2 hosts, where 169.254.169.254 is EC2's own IMDS: the
//! agent's table redirects workloads' requests to the agent, while the
//! agent's own requests reach the real IMDS, to which it forwards what the
//! allowlist lets through (proxy mode).
//!
//! Two namespaces of the test's own: "host" runs the agent and the
//! workloads; "upstream" stands in for EC2's IMDS (tests/py/fake_ec2_imds.py
//! on 169.254.169.254:80, IMDSv2 only, with instance credentials, identity
//! credentials and user data that must never be passed on). Needs root.

mod support;

use std::process::Command;

use support::cgroups::Cgroups;
use support::ec2::{FakeEc2, bridged_client};
use support::netns::{NetNs, link};
use support::{Agent, STATIC_CREDENTIALS, agent_bin, botocore, python_get};

const IMDS: &str = "http://169.254.169.254";
const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
/// The agent's user: a uid of its own, exempt from the redirect.
const AGENT_UID: &str = "61000";

struct Ec2 {
    host: NetNs,
    fake: FakeEc2,
    cgroups: Cgroups,
    dir: tempfile::TempDir,
}

fn ec2() -> Ec2 {
    let host = NetNs::new("eh");
    let fake = FakeEc2::beside(&host);
    // The host forwards, as an EC2 host running containers does: what it
    // forwards to 169.254.169.254 must still not get there.
    host.sysctl("net.ipv4.ip_forward=1");
    let cgroups = Cgroups::new(&["a", "none"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("roles.d")).unwrap();
    std::fs::write(
        dir.path().join("roles.d/10-test.toml"),
        format!(
            "[[rule]]\ncgroup = \"{}\"\nrole = \"role-a\"\n",
            cgroups.path("a")
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[host]\nmode = \"dnat\"\n\
             [privileges]\nuser = \"{AGENT_UID}\"\n\
             [attribution]\ncgroup_root = \"{root}\"\n\
             [instance]\naccount_id = \"123456789012\"\n\
             {STATIC_CREDENTIALS}\
             [roles]\ndir = \"{roles}\"\n",
            root = cgroups.root().display(),
            roles = dir.path().join("roles.d").display(),
        ),
    )
    .unwrap();
    Ec2 {
        host,
        fake,
        cgroups,
        dir,
    }
}

impl Ec2 {
    fn start(&self) -> Agent {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.host.name,
            agent_bin(),
            "run",
            "--config",
        ])
        .arg(self.dir.path().join("config.toml"));
        Agent::start_run(cmd)
    }

    fn get(&self, cgroup: &str, path: &str) -> serde_json::Value {
        get_with(
            &self.cgroups.exec_prefix(&self.host.name, cgroup),
            path,
            "5",
        )
    }
}

fn get_with(prefix: &[String], path: &str, timeout: &str) -> serde_json::Value {
    python_get(prefix, &format!("{IMDS}{path}"), timeout)
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn workloads_are_redirected_and_the_agent_proxies_only_what_is_allowed() {
    let ec2 = ec2();
    let agent = ec2.start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    assert!(status.contains(&format!("Uid:\t{AGENT_UID}\t")), "{status}");

    // A workload with a rule: its own role from the agent, instance facts
    // from EC2's IMDS.
    assert_eq!(ec2.get("a", ROLES)["body"], "role-a");
    let id = ec2.get("a", "/latest/meta-data/instance-id");
    assert_eq!(id["status"], 200, "{id}");
    assert_eq!(id["body"], "i-0fakeec2upstream1");
    let listing = ec2.get("a", "/latest/meta-data/");
    let listing = listing["body"].as_str().unwrap().to_owned();
    assert_eq!(
        listing,
        "ami-id\nhostname\niam/\ninstance-id\ninstance-type\nplacement/"
    );
    // botocore: credentials from the agent, the region from EC2's
    // placement, all through the redirect.
    let prefix = ec2.cgroups.exec_prefix(&ec2.host.name, "a");
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let report = botocore(&format!("{IMDS}/"), &prefix, &[]);
    assert_eq!(report["access_key"], "ASIAIMDSAGENTDEMO000", "{report}");
    assert_eq!(report["region"], "us-west-2", "{report}");

    // What is never passed on: the instance's role and identity
    // credentials, its user data; and EC2 never even sees the request.
    for path in [
        "/latest/meta-data/iam/security-credentials/instance-role",
        "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
        "/latest/user-data",
    ] {
        assert_eq!(ec2.get("a", path)["status"], 404, "{path}");
    }
    // No rule: no role, EC2's or anyone's.
    assert_eq!(ec2.get("none", ROLES)["status"], 404);
    let none_listing = ec2.get("none", "/latest/meta-data/");
    assert!(!none_listing["body"].as_str().unwrap().contains("iam/"));

    // A container on a bridge is redirected too (prerouting).
    let bridged = bridged_client(&ec2.host);
    let id = get_with(&bridged.exec_prefix(), "/latest/meta-data/instance-id", "5");
    assert_eq!(id["body"], "i-0fakeec2upstream1", "{id}");
    // EC2's IPv6 IMDS serves the instance role too: neither a local
    // workload nor a bridged one reaches it. Before, DNAT mode guarded
    // IPv4 only.
    let v6 = "http://[fd00:ec2::254]/latest/meta-data/instance-id";
    let local = python_get(&ec2.cgroups.exec_prefix(&ec2.host.name, "a"), v6, "1");
    assert!(
        local["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{local}"
    );
    with_ipv6(&ec2.host, &bridged);
    let from_bridge = python_get(&bridged.exec_prefix(), v6, "1");
    assert!(
        from_bridge["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{from_bridge}"
    );
    assert_eq!(ec2.fake.requests_v6(), Vec::<String>::new());
    // A client behind an interface that is not a container's: forwarded
    // toward EC2's IMDS by the host, and dropped on the way.
    let foreign = foreign_client(&ec2);
    let dropped = get_with(&foreign.exec_prefix(), "/latest/meta-data/instance-id", "1");
    assert!(
        dropped["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{dropped}"
    );
    let table = String::from_utf8_lossy(
        &Command::new("ip")
            .args([
                "netns",
                "exec",
                &ec2.host.name,
                "nft",
                "list",
                "chain",
                "inet",
                "imds_agent",
                "forward",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        table.contains("drop") && !table.contains("packets 0 "),
        "{table}"
    );

    // Paths an upstream may decode or resolve into iam/: answered 404 by
    // the agent, never passed on (the fake records every path it gets).
    for path in [
        "/latest/meta-data/network/%2e%2e/iam/security-credentials/",
        "/latest/meta-data/placement/..%2f..%2fiam/security-credentials/",
        "/latest/meta-data/tags/..;/iam/",
        "/latest/meta-data/placement/..\\..\\iam/security-credentials/",
    ] {
        let status = raw_status(&ec2.cgroups.exec_prefix(&ec2.host.name, "a"), path);
        assert_eq!(status, "404", "{path}");
    }

    let seen = ec2.fake.requests();
    assert!(
        seen.contains(&"PUT /latest/api/token".to_owned()),
        "{seen:?}"
    );
    for request in &seen {
        assert!(
            !request.contains("iam")
                && !request.contains("identity-credentials")
                && !request.contains("user-data"),
            "EC2's IMDS was asked {request}: {seen:?}"
        );
    }
    let forwarded_before = seen.len();

    // The agent dies: workloads are still redirected, to nothing. They
    // never reach EC2's IMDS (fail closed).
    agent.kill();
    let after = ec2.get("a", "/latest/meta-data/instance-id");
    assert!(
        after["error"]
            .as_str()
            .is_some_and(|e| e.contains("refused")),
        "{after}"
    );
    assert_eq!(ec2.fake.requests().len(), forwarded_before);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ec2.host.name,
            agent_bin(),
            "cleanup",
            "--config",
        ])
        .arg(ec2.dir.path().join("config.toml"))
        .output()
        .unwrap();
    let cleaned = String::from_utf8_lossy(&out.stdout);
    assert!(
        cleaned.contains("removed 169.254.170.254 from lo"),
        "{cleaned}"
    );
    // Without the agent's table, the host reaches EC2's IMDS directly
    // again: cleanup restored it.
    let direct = ec2.get("a", "/latest/meta-data/instance-id");
    assert_eq!(
        direct["status"], 401,
        "EC2's own IMDS answers (IMDSv2 only): {direct}"
    );
    // And its IPv6 one: the timeouts above were the table's doing.
    let direct = python_get(&ec2.cgroups.exec_prefix(&ec2.host.name, "a"), v6, "5");
    assert_eq!(direct["status"], 401, "{direct}");
}

/// The status code of a GET of `path` sent as written (no client library
/// to normalise or encode it), from `prefix`.
fn raw_status(prefix: &[String], path: &str) -> String {
    let script = "exec 3<>/dev/tcp/169.254.169.254/80; \
        printf 'GET %s HTTP/1.0\\r\\nHost: 169.254.169.254\\r\\n\\r\\n' \"$1\" >&3; \
        head -c 12 <&3";
    let out = Command::new(&prefix[0])
        .args(&prefix[1..])
        .args(["bash", "-c", script, "bash", path])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    head.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no answer to {path}: {head:?} {out:?}"))
        .to_owned()
}

/// Gives `client` (behind `host`'s bridge, 10.98.0.0/24) IPv6 too:
/// fd98::2/64 with a default route through the host (fd98::1, which
/// forwards IPv6).
fn with_ipv6(host: &NetNs, client: &NetNs) {
    host.sysctl("net.ipv6.conf.all.forwarding=1");
    let bridge = interface_with(host, "10.98.0.1/24");
    host.ip(&["addr", "add", "fd98::1/64", "dev", &bridge, "nodad"]);
    let own = interface_with(client, "10.98.0.2/24");
    client.ip(&["addr", "add", "fd98::2/64", "dev", &own, "nodad"]);
    client.ip(&["-6", "route", "add", "default", "via", "fd98::1"]);
}

/// The interface of `ns` holding `cidr`.
fn interface_with(ns: &NetNs, cidr: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-o", "addr", "show", "to", cidr])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no interface with {cidr} in {}: {text}", ns.name))
        .to_owned()
}

/// A client namespace behind a plain veth (not a container interface).
fn foreign_client(ec2: &Ec2) -> NetNs {
    let client = NetNs::new("ef");
    link(&ec2.host, "10.97.0.1/24", &client, "10.97.0.2/24");
    client.ip(&["route", "add", "default", "via", "10.97.0.1"]);
    client
}
