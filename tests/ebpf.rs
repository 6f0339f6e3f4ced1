//! eBPF mode (`host.mode = "ebpf"`): the agent's cgroup programs send
//! connections to 169.254.169.254:80 and [fd00:ec2::254]:80 to the agent
//! and record who made them.
//!
//! A network namespace of the test's own ("host") runs the agent and the
//! workloads, with a cgroup2 tree of the test's own: the programs attach to
//! the test's cgroup only, so nothing outside it is redirected. Beside it,
//! "upstream" stands in for EC2's IMDS (tests/py/fake_ec2_imds.py, IMDSv2
//! only), and a client namespace sits behind a bridge, as a container
//! does. Needs root and the eBPF build.

mod support;

use std::process::Command;
use std::time::Duration;

use support::cgroups::Cgroups;
use support::ec2::{FakeEc2, bridged_client};
use support::netns::NetNs;
use support::{Agent, STATIC_CREDENTIALS, agent_bin, python, python_get, wait_until};

const IMDS: &str = "http://169.254.169.254";
const IMDS_V6: &str = "http://[fd00:ec2::254]";
const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
/// A workload's uid that a rule names.
const WORKLOAD_UID: &str = "4242";
/// The agent's loopback port.
const PORT: u16 = 8169;

struct Setup {
    host: NetNs,
    fake: FakeEc2,
    bridged: NetNs,
    cgroups: Cgroups,
    dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let host = NetNs::new("bh");
    let fake = FakeEc2::beside(&host);
    let bridged = bridged_client(&host);
    let cgroups = Cgroups::new(&["agent", "a", "users", "exe", "ctr", "none"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("roles.d")).unwrap();
    // The executable the exe rule names: the interpreter behind the venv's
    // `python` symlink, as /proc/PID/exe shows it.
    let interpreter = std::fs::canonicalize(python()).unwrap();
    std::fs::write(
        dir.path().join("roles.d/10-test.toml"),
        format!(
            "[[rule]]\ncgroup = \"{a}\"\nrole = \"role-a\"\n\n\
             [[rule]]\ncgroup = \"{users}\"\nuid = {WORKLOAD_UID}\nrole = \"role-uid\"\n\n\
             [[rule]]\ncgroup = \"{exe}\"\nrole = \"role-exe-cgroup\"\n\n\
             [[rule]]\nexe = \"{interpreter}\"\ncgroup = \"{exe}\"\nrole = \"role-exe\"\n\n\
             [[rule]]\ncgroup = \"{ctr}\"\nrole = \"role-ctr\"\n",
            a = cgroups.path("a"),
            users = cgroups.path("users"),
            exe = cgroups.path("exe"),
            ctr = cgroups.path("ctr"),
            interpreter = interpreter.display(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[host]\nmode = \"ebpf\"\nebpf_cgroup = \"{base}\"\nebpf_port = {PORT}\n\
             ebpf_bridge_address = \"10.98.0.1\"\n\
             [proxy]\nenabled = true\n\
             [attribution]\ncgroup_root = \"{root}\"\n\
             [instance]\naccount_id = \"123456789012\"\n\
             {STATIC_CREDENTIALS}\
             [roles]\ndir = \"{roles}\"\n",
            base = cgroups.base,
            root = cgroups.root().display(),
            roles = dir.path().join("roles.d").display(),
        ),
    )
    .unwrap();
    Setup {
        host,
        fake,
        bridged,
        cgroups,
        dir,
    }
}

impl Setup {
    /// `imds-agent run` in the host namespace, inside the attached cgroup
    /// (as an agent attached at the root is): its own connections must
    /// still not be redirected.
    fn start(&self) -> Agent {
        let prefix = self.cgroups.exec_prefix(&self.host.name, "agent");
        let mut cmd = Command::new(&prefix[0]);
        cmd.args(&prefix[1..])
            .arg(agent_bin())
            .arg("run")
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            // Every request's log line names its workload.
            .args(["--log-level", "debug"]);
        Agent::start_run(cmd)
    }

    /// A GET from cgroup `cgroup` of namespace `ns`, as `user` if set.
    fn get_as(&self, ns: &NetNs, cgroup: &str, user: Option<&str>, url: &str) -> serde_json::Value {
        let mut prefix = self.cgroups.exec_prefix(&ns.name, cgroup);
        if let Some(uid) = user {
            prefix.extend(
                [
                    "setpriv",
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                ]
                .map(str::to_owned),
            );
        }
        python_get(&prefix, url, "5")
    }

    fn get(&self, cgroup: &str, path: &str) -> serde_json::Value {
        self.get_as(&self.host, cgroup, None, &format!("{IMDS}{path}"))
    }

    /// Whether the programs are attached to the test's cgroup.
    fn attached(&self) -> bool {
        let out = Command::new("bpftool")
            .args(["cgroup", "show"])
            .arg(self.cgroups.dir(""))
            .output()
            .expect("bpftool");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).contains("imds_connect4")
    }
}

/// `/proc/<pid>/status` of the agent's child process named `name`.
fn helper_status(agent: u32, name: &str) -> String {
    let children = std::fs::read_to_string(format!("/proc/{agent}/task/{agent}/children")).unwrap();
    children
        .split_whitespace()
        .map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default())
        .find(|status| status.starts_with(&format!("Name:\t{name}\n")))
        .unwrap_or_else(|| panic!("no child {name} among {children:?}"))
}

/// The agent's log line for a request by `pid` (its `workload` field).
fn logged_workload(agent: &Agent, pid: &serde_json::Value) -> String {
    let needle = format!(", pid {pid} ");
    let logs = agent.wait_for_log(&needle);
    logs.lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no request by pid {pid} in the log:\n{logs}"))
        .to_owned()
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn clients_are_redirected_attributed_to_their_process_and_let_go_at_exit() {
    let setup = setup();
    let agent = setup.start();
    assert!(setup.attached());

    // A client in a cgroup with a rule: its own role, through the redirect;
    // its socket still says it talks to 169.254.169.254:80.
    let got = setup.get("a", ROLES);
    assert_eq!(got["body"], "role-a", "{got}");
    assert_eq!(got["peer"], "169.254.169.254:80", "{got}");
    // The agent knows the exact process behind the connection.
    let line = logged_workload(&agent, &got["pid"]);
    assert!(line.contains("role=\"role-a\""), "{line}");

    // The recorded uid is the process's: a rule for that uid matches it.
    let url = format!("{IMDS}{ROLES}");
    let got = setup.get_as(&setup.host, "users", Some(WORKLOAD_UID), &url);
    assert_eq!(got["uid"], 4242, "{got}");
    assert_eq!(got["body"], "role-uid", "{got}");
    let line = logged_workload(&agent, &got["pid"]);
    assert!(
        line.contains(&format!("(uid {WORKLOAD_UID}, pid ")),
        "{line}"
    );
    // Root in the same cgroup is not that uid.
    assert_eq!(setup.get("users", ROLES)["status"], 404);

    // A rule naming the executable beats the cgroup's rule, for a root
    // process too: the agent (nobody) asks its executable helper, which
    // keeps CAP_SYS_PTRACE and nothing else.
    let got = setup.get("exe", ROLES);
    assert_eq!(got["body"], "role-exe", "{got}");
    let line = logged_workload(&agent, &got["pid"]);
    let interpreter = std::fs::canonicalize(python()).unwrap();
    assert!(
        line.contains(&format!("exe=\"{}\"", interpreter.display())),
        "{line}"
    );
    let helper = helper_status(agent.pid(), "imds-exe");
    assert!(helper.contains("Uid:\t65534\t"), "{helper}");
    // CAP_SYS_PTRACE is bit 19.
    assert!(helper.contains("CapEff:\t0000000000080000"), "{helper}");
    assert!(helper.contains("CapBnd:\t0000000000080000"), "{helper}");
    assert!(helper.contains("NoNewPrivs:\t1"), "{helper}");
    let own = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    assert!(own.contains("CapEff:\t0000000000000000"), "{own}");

    // IPv6: [fd00:ec2::254]:80 reaches the agent too.
    let got = setup.get_as(&setup.host, "a", None, &format!("{IMDS_V6}{ROLES}"));
    assert_eq!(got["body"], "role-a", "{got}");
    assert_eq!(got["peer"], "fd00:ec2::254:80", "{got}");

    // No rule: no role.
    assert_eq!(setup.get("none", ROLES)["status"], 404);

    // The agent's own requests are not redirected: in proxy mode it
    // forwards instance facts from the real IMDS (which only the agent
    // asks: a redirected agent would ask itself).
    let id = setup.get("a", "/latest/meta-data/instance-id");
    assert_eq!(id["body"], "i-0fakeec2upstream1", "{id}");
    assert!(
        setup
            .fake
            .requests()
            .contains(&"GET /latest/meta-data/instance-id".to_owned())
    );

    // A client outside the attached cgroup is not redirected: it reaches
    // the real IMDS, which wants a token.
    let outside = python_get(
        &setup.host.exec_prefix(),
        &format!("{IMDS}/latest/meta-data/instance-id"),
        "5",
    );
    assert_eq!(outside["status"], 401, "{outside}");
    assert_eq!(outside["peer"], "169.254.169.254:80", "{outside}");

    // A container behind a bridge: sent to the bridge address, attributed
    // to its cgroup and process.
    let got = setup.get_as(&setup.bridged, "ctr", None, &url);
    assert_eq!(got["body"], "role-ctr", "{got}");
    assert_eq!(got["peer"], "169.254.169.254:80", "{got}");
    let line = logged_workload(&agent, &got["pid"]);
    assert!(line.contains("role=\"role-ctr\""), "{line}");
    // Its record by address is dropped once read: the address and port may
    // be another container's next.
    let by_addr = Command::new("bpftool")
        .args(["-j", "map", "dump", "name", "BY_ADDR"])
        .output()
        .expect("bpftool");
    let dump = String::from_utf8_lossy(&by_addr.stdout);
    assert!(
        by_addr.status.success() && !dump.contains("\"key\""),
        "{dump}"
    );

    // A clean stop detaches the programs: the same client now reaches the
    // real IMDS.
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
    assert!(!setup.attached());
    let after = setup.get("a", "/latest/meta-data/instance-id");
    assert_eq!(after["status"], 401, "{after}");
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn a_killed_agent_leaves_nothing_attached() {
    let setup = setup();
    let agent = setup.start();
    assert_eq!(setup.get("a", ROLES)["body"], "role-a");
    let helper = helper_status(agent.pid(), "imds-exe");
    let helper_pid = helper
        .lines()
        .find_map(|l| l.strip_prefix("Pid:\t"))
        .unwrap()
        .to_owned();
    agent.kill();
    // The kernel detaches the programs with the agent's last descriptor.
    wait_until("the programs to detach", Duration::from_secs(5), || {
        !setup.attached()
    });
    let after = setup.get("a", "/latest/meta-data/instance-id");
    assert_eq!(after["status"], 401, "{after}");
    // The executable helper went with the agent.
    let helper = std::path::Path::new("/proc").join(&helper_pid);
    wait_until(
        "the executable helper to go",
        Duration::from_secs(5),
        || !helper.exists(),
    );
}
