//! The agent taking over 169.254.169.254 (`host.mode = "alias"`) in a
//! network namespace of the test's own, with a cgroup2 tree of its own and
//! a real STS (moto) inside that namespace: workloads in three cgroups get
//! three roles and nothing else, foreign interfaces are dropped, the drop
//! outlives the agent, `cleanup` restores the namespace, privileges are
//! gone, and rule files reload live.
//!
//! Needs root. Every request to 169.254.169.254 is made inside the test's
//! own namespace, where the agent owns that address.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::cgroups::Cgroups;
use support::netns::NetNs;
use support::sts::{Helper, agent_credentials, moto_in};
use support::{
    Agent, agent_bin, botocore_with, py_script, python, python_get, rust_sdk, wait_for_showing,
    wait_until,
};

const IMDS: &str = "http://169.254.169.254";
/// The agent's user: a uid of its own, as `privileges.user` should be.
const AGENT_UID: &str = "61001";
const ROLES: &str = "/latest/meta-data/iam/security-credentials/";

/// A namespace, cgroups, moto and a config for the agent.
struct Host {
    ns: NetNs,
    cgroups: Cgroups,
    moto: Helper,
    dir: tempfile::TempDir,
}

const RULES: &str = "
[[rule]]
cgroup = \"BASE/a\"
role = \"role-a\"

[[rule]]
cgroup = \"BASE/b\"
role = \"role-b@210987654321\"

[[rule]]
cgroup = \"BASE/c\"
role = \"arn:aws:iam::123456789012:role/team/role-c\"
session_name = \"job-c\"
";

impl Host {
    fn new() -> Host {
        Host::with(&["a", "b", "c", "none"], RULES, false)
    }

    /// Cgroups `names` (the test's own subtree), rules `rules`, and the
    /// agent's `attribution.cgroup_root` at the cgroup2 mount, or (`at_base`)
    /// at the test's own directory, so that paths there read as they would
    /// at the root of a host (`/system.slice/…`).
    fn with(names: &[&str], rules: &str, at_base: bool) -> Host {
        let ns = NetNs::new("hx");
        let cgroups = Cgroups::new(names);
        let moto = moto_in(&ns);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("roles.d")).unwrap();
        let host = Host {
            ns,
            cgroups,
            moto,
            dir,
        };
        host.write_rules("10-test.toml", rules);
        let root = if at_base {
            host.cgroups.dir("")
        } else {
            host.cgroups.root().to_owned()
        };
        let config = format!(
            "[host]\nmode = \"alias\"\n\
             [privileges]\nuser = \"{AGENT_UID}\"\n\
             [attribution]\ncgroup_root = \"{root}\"\n\
             [instance]\naccount_id = \"123456789012\"\n\
             [credentials]\nsource = \"sts\"\nendpoint = \"{sts}\"\nduration_seconds = 900\nfirst_fetch_wait_ms = 5000\n\
             [roles]\ndir = \"{roles}\"\n",
            root = root.display(),
            sts = host.moto.url,
            roles = host.dir.path().join("roles.d").display(),
        );
        std::fs::write(host.config(), config).unwrap();
        host
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn write_rules(&self, file: &str, text: &str) {
        let text = text.replace("BASE", &self.cgroups.base);
        std::fs::write(self.dir.path().join("roles.d").join(file), text).unwrap();
    }

    /// `imds-agent run` in the namespace, with its own credentials (for
    /// moto) in the environment.
    fn start(&self) -> Agent {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.ns.name,
            agent_bin(),
            "run",
            "--config",
        ])
        .arg(self.config());
        agent_credentials(&mut cmd);
        Agent::start_run(cmd)
    }

    /// The command prefix for a client in cgroup `name`.
    fn in_cgroup(&self, name: &str) -> Vec<String> {
        self.cgroups.exec_prefix(&self.ns.name, name)
    }

    /// botocore in cgroup `name`, also calling sts:GetCallerIdentity.
    fn botocore(&self, name: &str) -> serde_json::Value {
        let prefix = self.in_cgroup(name);
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        botocore_with(&format!("{IMDS}/"), &prefix, &[], &[&self.moto.url])
    }

    /// A GET of `path` from cgroup `name`.
    fn get(&self, name: &str, path: &str) -> serde_json::Value {
        self.get_with_timeout(name, path, "5")
    }

    /// `get`, giving up after `timeout` seconds.
    fn get_with_timeout(&self, name: &str, path: &str, timeout: &str) -> serde_json::Value {
        python_get(&self.in_cgroup(name), &format!("{IMDS}{path}"), timeout)
    }

    /// `imds-agent cleanup` in the namespace.
    fn cleanup(&self) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns.name,
                agent_bin(),
                "cleanup",
                "--config",
            ])
            .arg(self.config())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cleanup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the namespace's network looks like: its addresses and its
    /// whole ruleset.
    fn network_state(&self) -> String {
        // One line per address, without what changes on its own (IPv6
        // duplicate address detection, link state).
        let addrs: Vec<String> = output("ip", &["-n", &self.ns.name, "-o", "addr", "show"])
            .lines()
            // Link-local IPv6 addresses appear on their own once a link's
            // carrier is up, after `ip link set up` has returned.
            .filter(|l| !l.contains("inet6 fe80::"))
            .map(|l| {
                l.split('\\')
                    .next()
                    .unwrap_or(l)
                    .replace(" tentative", "")
                    .trim_end()
                    .to_owned()
            })
            .collect();
        let addrs = addrs.join("\n");
        let rules = output(
            "ip",
            &["netns", "exec", &self.ns.name, "nft", "list", "ruleset"],
        );
        format!("{addrs}\n--- ruleset ---\n{rules}")
    }
}

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Not a test of its own: the Rust SDK client `rust_sdk` starts.
#[test]
#[ignore = "a client process that the tests start"]
fn rust_sdk_client() {
    support::rust_sdk_child();
}

fn eventually(what: &str, f: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(10), f);
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn three_cgroups_get_three_roles_and_nothing_else() {
    let host = Host::new();
    let agent = host.start();
    // The serving agent holds nothing: nobody, no capability, no way back.
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        field("Uid:"),
        format!("{AGENT_UID} {AGENT_UID} {AGENT_UID} {AGENT_UID}"),
        "{status}"
    );
    for caps in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(caps), "0000000000000000", "{caps} {status}");
    }
    assert_eq!(field("NoNewPrivs:"), "1");
    assert!(agent.logs().contains("privileges dropped"));
    // botocore waits 1 s for IMDS: let the prefetch finish first.
    agent.wait_ready();

    let expected = [
        ("a", "assumed-role/role-a/", "123456789012"),
        ("b", "assumed-role/role-b/", "210987654321"),
        ("c", "assumed-role/role-c/job-c", "123456789012"),
    ];
    let mut keys = Vec::new();
    for (cgroup, arn_part, account) in expected {
        let report = host.botocore(cgroup);
        assert_eq!(report["method"], "iam-role", "{cgroup}: {report}");
        let arn = report["caller_arn"].as_str().unwrap_or_default();
        assert!(
            arn.contains(arn_part) && arn.contains(account),
            "{cgroup}: {arn}"
        );
        let key = report["access_key"].as_str().unwrap().to_owned();
        let sdk = rust_sdk(&host.in_cgroup(cgroup), "rust_sdk_client", IMDS, false);
        assert_eq!(
            sdk["access_key"].as_str(),
            Some(key.as_str()),
            "{cgroup}: the Rust SDK got {sdk}"
        );
        keys.push(key);
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3, "three roles, three sets of credentials");
    // Session names come from the workload: the cgroup's name ("a",
    // padded to STS's two-character minimum).
    let a = host.botocore("a");
    assert!(a["caller_arn"].as_str().unwrap().ends_with("/a_"), "{a}");

    // No rule: no role, and no one else's.
    let listing = host.get("none", ROLES);
    assert_eq!(listing["status"], 404, "{listing}");
    assert_eq!(host.get("none", &format!("{ROLES}role-a"))["status"], 404);
    assert_eq!(
        host.get("none", "/latest/meta-data/instance-id")["status"],
        200
    );
    let report = host.botocore("none");
    assert_eq!(report["method"], serde_json::Value::Null, "{report}");
    // Another role's name: 404 even for a workload that has a role.
    assert_eq!(host.get("a", &format!("{ROLES}role-b"))["status"], 404);
    let logs = agent.logs();
    assert!(
        !logs.contains("SecretAccessKey") && !logs.contains("wJalrXUtnFEMI"),
        "no secret in the logs"
    );
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn ten_thousand_mixed_requests_never_cross_roles() {
    let host = Host::new();
    let _agent = host.start();
    let roles = [("a", "role-a"), ("b", "role-b"), ("c", "role-c")];
    let clients: Vec<_> = roles
        .iter()
        .map(|(cgroup, role)| {
            let others: Vec<&str> = roles
                .iter()
                .map(|(_, r)| *r)
                .filter(|r| r != role)
                .collect();
            let prefix = host.in_cgroup(cgroup);
            let count = if *cgroup == "a" { "3334" } else { "3333" };
            Command::new(&prefix[0])
                .args(&prefix[1..])
                .arg(python())
                .arg(py_script("hammer.py"))
                .args(["169.254.169.254", "80", role, &others.join(","), count])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut all_keys = Vec::new();
    let mut total = 0;
    for (client, (cgroup, _)) in clients.into_iter().zip(roles) {
        let out = client.wait_with_output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["wrong"], 0, "{cgroup}: {report}");
        assert_eq!(report["errors"], 0, "{cgroup}: {report}");
        let keys = report["keys"].as_array().unwrap().clone();
        assert_eq!(
            keys.len(),
            1,
            "{cgroup} saw one set of credentials: {report}"
        );
        all_keys.extend(keys);
        total += report["requests"].as_u64().unwrap();
    }
    assert_eq!(total, 10_000);
    all_keys.sort_by_key(ToString::to_string);
    all_keys.dedup();
    assert_eq!(all_keys.len(), 3, "no key served to two workloads");
}

fn client_behind(host: &Host, subnet: u8, bridge: Option<&str>) -> NetNs {
    support::netns::client_behind(&host.ns, subnet, bridge, "169.254.169.254/32")
}

fn get_from(ns: &NetNs, path: &str, timeout: &str) -> serde_json::Value {
    python_get(&ns.exec_prefix(), &format!("{IMDS}{path}"), timeout)
}

/// The drop counter of the agent's table.
fn dropped_packets(host: &Host) -> u64 {
    let table = output(
        "ip",
        &[
            "netns",
            "exec",
            &host.ns.name,
            "nft",
            "list",
            "table",
            "inet",
            "imds_agent",
        ],
    );
    table
        .lines()
        .filter(|l| l.contains("drop"))
        .filter_map(|l| {
            l.split("packets ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn foreign_interfaces_are_dropped_even_after_the_agent_dies() {
    let host = Host::new();
    let bridged = client_behind(&host, 91, Some("br-e2e"));
    let foreign = client_behind(&host, 92, None);
    let before = host.network_state();
    let agent = host.start();
    let helper = stop_helper_of(agent.pid())
        .unwrap_or_else(|| panic!("no stop helper; the agent's log:\n{}", agent.logs()));
    // The helper drops its privileges on its own time: `no_new_privs` is
    // its last step.
    let helper_status = wait_for_showing(
        "the stop helper's privilege drop",
        Duration::from_secs(10),
        || {
            let status =
                std::fs::read_to_string(format!("/proc/{helper}/status")).unwrap_or_default();
            if status.contains("NoNewPrivs:\t1") {
                Ok(status.clone())
            } else {
                Err(status)
            }
        },
    );
    assert!(
        helper_status.contains("CapEff:\t0000000000001000"),
        "the helper keeps CAP_NET_ADMIN alone: {helper_status}"
    );

    // The bridge is a container interface (`br-*`): served. Not a process
    // of this namespace and not a known container: no role.
    let served = get_from(&bridged, "/latest/meta-data/instance-id", "5");
    assert_eq!(served["status"], 200, "{served}");
    assert_eq!(get_from(&bridged, ROLES, "5")["status"], 404);
    // A foreign veth: dropped before it reaches anything.
    let dropped = get_from(&foreign, "/latest/meta-data/instance-id", "1");
    assert!(
        dropped["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{dropped}"
    );
    assert!(dropped_packets(&host) > 0);

    // A crash: the helper leaves everything as it is, the drop holds.
    agent.kill();
    eventually("the stop helper to exit", || {
        !std::path::Path::new(&format!("/proc/{helper}")).exists()
    });
    let counted = dropped_packets(&host);
    let dropped = get_from(&foreign, "/latest/meta-data/instance-id", "1");
    assert!(
        dropped["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{dropped}"
    );
    assert!(
        dropped_packets(&host) > counted,
        "still dropped by the table"
    );
    // The address stays too: nothing answers on it now.
    let refused = get_from(&bridged, "/latest/meta-data/instance-id", "2");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("Connection refused")),
        "{refused}"
    );

    // cleanup removes exactly what the agent made.
    let cleaned = host.cleanup();
    assert!(
        cleaned.contains("removed nftables table inet imds_agent"),
        "{cleaned}"
    );
    assert!(
        cleaned.contains("removed 169.254.169.254 from lo"),
        "{cleaned}"
    );
    assert_eq!(host.network_state(), before);
    assert!(
        host.cleanup().contains("no nftables table"),
        "a second cleanup finds nothing"
    );
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn a_clean_stop_removes_the_address_and_keeps_the_table() {
    let host = Host::new();
    // Something answers 169.254.169.254 beyond this host, as on EC2 or
    // in a network that has one.
    let fake = support::ec2::FakeEc2::beside(&host.ns);
    let before = host.network_state();
    let upstream = host.get_with_timeout("a", "/latest/meta-data/instance-id", "5");
    assert_eq!(upstream["status"], 401, "the stand-in answers: {upstream}");
    let agent = host.start();
    let during = host.network_state();
    assert!(
        during.contains("169.254.169.254/32 scope global lo:metadata"),
        "{during}"
    );
    assert!(during.contains("table inet imds_agent"), "{during}");
    let logs = agent_logs_after_stop(agent);
    let after = host.network_state();
    assert!(
        !after.contains("lo:metadata"),
        "the address is gone: {after}\n{logs}"
    );
    assert!(
        after.contains("table inet imds_agent"),
        "the table stays: {after}"
    );
    // Stopped, the agent fails closed: the address is gone and the table
    // drops what would now leave for the stand-in.
    let asked = fake.requests().len();
    let dropped = host.get_with_timeout("a", "/latest/meta-data/instance-id", "1");
    assert!(
        dropped["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{dropped}"
    );
    assert_eq!(fake.requests().len(), asked, "the stand-in saw nothing");
    // A second agent starts over the first one's table.
    let again = host.start();
    assert_eq!(
        host.get("a", "/latest/meta-data/instance-id")["status"],
        200
    );
    again.kill();
    host.cleanup();
    assert_eq!(host.network_state(), before);
}

/// Stops `agent` with SIGTERM, checks it exited cleanly, and returns its
/// log.
fn agent_logs_after_stop(agent: Agent) -> String {
    let logs = agent.logs_handle();
    let status = agent.stop();
    let logs = logs.lock().unwrap().clone();
    assert!(status.success(), "{status:?}\n{logs}");
    logs
}

/// The stop helper: the agent's child process.
fn stop_helper_of(agent: u32) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid …
            let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
                continue;
            };
            let ppid = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(agent) && stat.contains("(imds-stop)") {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn rule_files_reload_live_and_a_bad_file_changes_nothing() {
    let host = Host::new();
    let agent = host.start();
    assert_eq!(host.get("c", ROLES)["body"], "role-c");
    // A bad file: refused with file, line and reason; the rules stand.
    host.write_rules(
        "20-bad.toml",
        "[[rule]]\ncgroup = \"BASE/c\"\nrole = \"not a role!\"\n",
    );
    agent.wait_for_log("role rules refused");
    let logs = agent.logs();
    assert!(logs.contains("20-bad.toml:3: rule[0].role"), "{logs}");
    assert_eq!(host.get("c", ROLES)["body"], "role-c");
    // The bad file is fixed to give c another role: in force at once.
    host.write_rules(
        "20-bad.toml",
        "[[rule]]\ncgroup = \"BASE/c\"\nuid = 0\nrole = \"role-c2\"\n",
    );
    eventually("role-c2", || host.get("c", ROLES)["body"] == "role-c2");
    // A removed assignment stops being served at once, and its credentials
    // leave the cache.
    std::fs::remove_file(host.dir.path().join("roles.d/20-bad.toml")).unwrap();
    host.write_rules("10-test.toml", &RULES.replace("role-a", "role-a2"));
    eventually("role-a2", || host.get("a", ROLES)["body"] == "role-a2");
    assert_eq!(host.get("a", &format!("{ROLES}role-a"))["status"], 404);
    let status = Command::new(agent_bin())
        .args(["status", "--socket"])
        .arg(&agent.socket)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        !status.contains("\"role\": \"role-a\"") && status.contains("role-a2"),
        "{status}"
    );
    agent.wait_for_log("role no longer assigned: credentials dropped");
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn the_ipv6_endpoint_is_served_and_attributed() {
    let host = Host::new();
    let config = std::fs::read_to_string(host.config()).unwrap();
    std::fs::write(
        host.config(),
        config.replace("mode = \"alias\"\n", "mode = \"alias\"\nipv6 = true\n"),
    )
    .unwrap();
    let agent = host.start();
    let state = host.network_state();
    assert!(state.contains("inet6 fd00:ec2::254/128"), "{state}");
    assert!(state.contains("ip6 daddr fd00:ec2::254"), "{state}");
    let v6 = |cgroup: &str, path: &str| {
        python_get(
            &host.in_cgroup(cgroup),
            &format!("http://[fd00:ec2::254]{path}"),
            "5",
        )
    };
    assert_eq!(v6("b", ROLES)["body"], "role-b", "attributed over IPv6 too");
    assert_eq!(v6("none", ROLES)["status"], 404);
    let logs = agent_logs_after_stop(agent);
    assert!(logs.contains("address=fd00:ec2::254"), "{logs}");
    assert!(!host.network_state().contains("fd00:ec2::254/128"));
    host.cleanup();
}

/// The user a test hands a cgroup subtree to, as systemd hands every user
/// `user@UID.service`.
const ATTACKER: u32 = 4242;

const DELEGATION_RULES: &str = "\
[[rule]]
unit = \"nginx.service\"
role = \"role-web\"

[[rule]]
cgroup = \"/user.slice/**/nginx.service\"
role = \"role-by-path\"

[[rule]]
user_unit = \"sync.service\"
uid = 4242
role = \"role-sync\"
";

/// The attack: any user with a systemd user manager runs `systemd-run
/// --user --unit nginx.service …`, which puts their process in
/// `/user.slice/user-UID.slice/user@UID.service/app.slice/nginx.service`.
/// Here the test hands uid 4242 that subtree (as systemd does: the
/// directory is chowned to the user) and the user makes the cgroup
/// itself. Before, a rule `unit = "nginx.service"` handed it the system
/// unit's role.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn a_users_own_cgroup_named_like_a_system_unit_gets_no_role() {
    let manager = "user.slice/user-4242.slice/user@4242.service";
    let host = Host::with(
        &[
            "system.slice",
            "system.slice/nginx.service",
            "user.slice",
            "user.slice/user-4242.slice",
            manager,
        ],
        DELEGATION_RULES,
        true,
    );
    host.cgroups.delegate(manager, ATTACKER);
    let agent = host.start();
    let as_user = |sub: &str, path: &str| {
        let prefix = host
            .cgroups
            .exec_prefix_as(&host.ns.name, manager, sub, ATTACKER);
        python_get(&prefix, &format!("{IMDS}{path}"), "5")
    };

    // The real system unit gets its role.
    let real = host.get("system.slice/nginx.service", ROLES);
    assert_eq!(real["body"], "role-web", "{real}\n{}", agent.logs());

    // The user's look-alike: no role, not by unit, not by a path glob, not
    // by asking for the role by name.
    let forged = as_user("app.slice/nginx.service", ROLES);
    assert_eq!(forged["uid"], ATTACKER, "{forged}");
    assert_eq!(forged["status"], 404, "{forged}\n{}", agent.logs());
    let by_name = as_user("app.slice/nginx.service", &format!("{ROLES}role-web"));
    assert_eq!(by_name["status"], 404, "{by_name}");
    let by_path = as_user("app.slice/nginx.service", &format!("{ROLES}role-by-path"));
    assert_eq!(by_path["status"], 404, "{by_path}");

    // What the user may be given: its own unit, by a rule that names the
    // user.
    let sync = as_user("app.slice/sync.service", ROLES);
    assert_eq!(sync["body"], "role-sync", "{sync}\n{}", agent.logs());
    let creds = as_user("app.slice/sync.service", &format!("{ROLES}role-sync"));
    assert_eq!(creds["status"], 200, "{creds}");
    agent.wait_for_log("workload=user 4242's unit sync.service (uid 4242) ");
}

/// One user opens twice the agent's connection slots and sends nothing on
/// them. Before, every other workload's request then waited for a slot
/// that never came (the agent stopped accepting at 1024). Now a workload,
/// and a user's workloads together, get a share; the rest are closed at
/// once, and everyone else is served within the SDKs' 1 s.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn one_user_flooding_the_agent_starves_no_one() {
    let host = Host::new();
    let agent = host.start();
    assert_eq!(host.get("a", ROLES)["body"], "role-a");
    let mut flood = host.in_cgroup("none");
    flood.extend(support::as_user(ATTACKER));
    let mut flood = Command::new(&flood[0])
        .args(&flood[1..])
        .arg(python())
        .arg(py_script("flood.py"))
        .args(["169.254.169.254", "80", "2049"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(flood.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert!(report["opened"].as_u64().unwrap_or(0) > 1024, "{report}");
    let started = Instant::now();
    let got = host.get_with_timeout("a", ROLES, "1");
    let took = started.elapsed();
    assert_eq!(got["body"], "role-a", "{got}\n{}", agent.logs());
    assert!(took < Duration::from_secs(1), "{took:?}");
    let _ = flood.kill();
    let _ = flood.wait();
    let metrics = agent.cli(&["metrics"], "");
    let text = String::from_utf8_lossy(&metrics.stdout);
    let refused: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("imds_connections_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused > 1000, "{text}");
}

/// One user makes 1,100 cgroups and asks for credentials from each: with
/// `roles.default` and a session per workload, 1,100 sessions, more than
/// the cache holds and far more than the STS budget allows for minutes.
/// Before, they filled the cache and queued ahead of everyone, so a new
/// system unit's role waited behind them (or was refused: cache full).
/// Now the unit's role, which an assignment names, is fetched first and
/// the user's sessions take what is left.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn a_thousand_cgroups_of_one_user_do_not_keep_a_system_unit_waiting() {
    let manager = "user.slice/user-4242.slice/user@4242.service";
    let host = Host::with(
        &[
            "system.slice",
            "user.slice",
            "user.slice/user-4242.slice",
            manager,
        ],
        // The user's cgroups match a rule too, whose role sorts first: a
        // prefetch filled with them would leave the unit's role out.
        "[[rule]]\nunit = \"new.service\"\nrole = \"role-new\"\n\
         [[rule]]\ncgroup = \"/user.slice/**\"\nrole = \"role-aaa\"\n",
        true,
    );
    host.cgroups.delegate(manager, ATTACKER);
    let config = std::fs::read_to_string(host.config()).unwrap();
    std::fs::write(
        host.config(),
        config
            .replace(
                "first_fetch_wait_ms = 5000\n",
                // Each of the user's requests waits for its own fetch, as a
                // first request does: briefly, so the flood ends in seconds.
                "first_fetch_wait_ms = 500\nmax_roles = 64\nrate_per_second = 2\nburst = 2\n",
            )
            .replace("[roles]\n", "[roles]\ndefault = \"role-default\"\n"),
    )
    .unwrap();
    let agent = host.start();
    let prefix =
        host.cgroups
            .exec_prefix_as(&host.ns.name, manager, "app.slice/start.service", ATTACKER);
    let flood = Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(python())
        .arg(py_script("many_cgroups.py"))
        .arg(host.cgroups.dir(manager).join("app.slice"))
        .arg("1100")
        .arg(format!("{IMDS}{ROLES}role-aaa"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&flood.stdout);
    assert!(
        flood.status.success() && report.contains("\"asked\": 1100"),
        "{report}{}",
        String::from_utf8_lossy(&flood.stderr)
    );

    // A system unit starts now.
    std::fs::create_dir(host.cgroups.dir("system.slice/new.service")).unwrap();
    let started = Instant::now();
    let path = format!("{ROLES}role-new");
    let got = wait_for_showing("the new unit's credentials", Duration::from_secs(8), || {
        let got = host.get("system.slice/new.service", &path);
        let code = got["body"]
            .as_str()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .map(|doc| doc["Code"].clone());
        if code == Some(serde_json::json!("Success")) {
            Ok(got)
        } else {
            Err(got)
        }
    });
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{got}\n{}",
        agent.logs()
    );
    // The user's sessions stayed within the cache.
    let status = agent.cli(&["status"], "");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let cached = status["sts"]["roles"]
        .as_array()
        .map_or(usize::MAX, Vec::len);
    assert!(cached <= 64, "{cached} roles cached");
}

/// The kernel's socket lookup falls back to a listening socket on the
/// local port asked for: a client in another network namespace (a
/// container on a bridge) that connects from the port a host service
/// listens on used to be taken for that service, and got its role. Here
/// the service is in cgroup `a` (role-a) and listens on 8088; the client
/// connects from port 8088 and gets no role.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn a_client_from_a_services_port_is_not_that_service() {
    let host = Host::new();
    let bridged = client_behind(&host, 93, Some("br-lport"));
    let agent = host.start();
    let mut service = Command::new(&host.in_cgroup("a")[0])
        .args(&host.in_cgroup("a")[1..])
        .arg(python())
        .args([
            "-c",
            "import socket, time\n\
             s = socket.socket()\n\
             s.bind(('0.0.0.0', 8088))\n\
             s.listen()\n\
             print('ready', flush=True)\n\
             time.sleep(30)\n",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(service.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let client = format!(
        "import socket\n\
         s = socket.socket()\n\
         s.bind(('0.0.0.0', 8088))\n\
         s.settimeout(5)\n\
         s.connect(('169.254.169.254', 80))\n\
         s.sendall(b'GET {ROLES} HTTP/1.0\\r\\nHost: 169.254.169.254\\r\\n\\r\\n')\n\
         print(s.recv(4096).decode(errors='replace'))\n"
    );
    let out = Command::new(&bridged.exec_prefix()[0])
        .args(&bridged.exec_prefix()[1..])
        .arg(python())
        .args(["-c", &client])
        .output()
        .unwrap();
    let _ = service.kill();
    let _ = service.wait();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.starts_with("HTTP/1.0 404 "),
        "a client from the service's port got: {answer:?}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.logs()
    );
}
