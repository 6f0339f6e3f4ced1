//! eBPF mode (`host.mode = "ebpf"`): the agent's cgroup programs send
//! connections to 169.254.169.254:80 and [fd00:ec2::254]:80 to the agent
//! and record who made them.
//!
//! A network namespace of the test's own ("host") runs the agent and the
//! workloads, with a cgroup2 tree of the test's own: the programs attach to
//! the test's cgroup only, so nothing outside it is redirected. Beside it,
//! "upstream" stands in for EC2's IMDS (tests/py/fake_ec2_imds.py, IMDSv2
//! only), and a client namespace sits behind a bridge, as a container
//! does. The programs' links are pinned in a bpf file system of the test's
//! own (a private mount, unmounted at the end, which detaches whatever is
//! left). Needs root and the eBPF build.

mod support;

use std::process::Command;
use std::time::Duration;

use support::cgroups::Cgroups;
use support::ec2::{FakeEc2, bridged_client};
use support::netns::NetNs;
use support::{Agent, STATIC_CREDENTIALS, agent_bin, python, python_get, wait_until};

const IMDS: &str = "http://169.254.169.254";
const IMDS_V6: &str = "http://[fd00:ec2::254]";
/// 169.254.169.254 as an IPv6 socket reaches it.
const IMDS_MAPPED: &str = "http://[::ffff:169.254.169.254]";
const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
/// A workload's uid that a rule names.
const WORKLOAD_UID: &str = "4242";
/// The agent's user: a uid of its own.
const AGENT_UID: &str = "61002";
/// The agent's loopback port.
const PORT: u16 = 8169;

struct Setup {
    host: NetNs,
    fake: FakeEc2,
    bridged: NetNs,
    cgroups: Cgroups,
    dir: tempfile::TempDir,
    /// Declared last: dropped after everything that may use the pins.
    bpffs: BpfFs,
}

/// A bpf file system of the test's own, unmounted on drop (which releases
/// every pin in it, and so detaches what they held).
struct BpfFs {
    mount: tempfile::TempDir,
}

impl BpfFs {
    fn new() -> BpfFs {
        let mount = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(mount.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a bpf file system");
        BpfFs { mount }
    }

    /// The agent's `host.ebpf_pin_dir`.
    fn pins(&self) -> std::path::PathBuf {
        self.mount.path().join("imds-agent")
    }

    /// The pins' names.
    fn pinned(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.pins())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mount.path()).status();
    }
}

fn setup() -> Setup {
    let host = NetNs::new("bh");
    let fake = FakeEc2::beside(&host);
    let bridged = bridged_client(&host);
    let cgroups = Cgroups::new(&["agent", "a", "users", "exe", "ctr", "none"]);
    let bpffs = BpfFs::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("roles.d")).unwrap();

    std::fs::write(
        dir.path().join("roles.d/10-test.toml"),
        format!(
            "[[rule]]\ncgroup = \"{a}\"\nrole = \"role-a\"\n\n\
             [[rule]]\ncgroup = \"{users}\"\nuid = {WORKLOAD_UID}\nrole = \"role-uid\"\n\n\
             [[rule]]\ncgroup = \"{users}\"\nexe = \"/usr/bin/sleep\"\nrole = \"role-sleep\"\n\n\
             [[rule]]\ncgroup = \"{exe}\"\nrole = \"role-exe-cgroup\"\n\n\
             [[rule]]\nexe = \"/usr/bin/bash\"\ncgroup = \"{exe}\"\nrole = \"role-exe\"\n\n\
             [[rule]]\ncgroup = \"{ctr}\"\nrole = \"role-ctr\"\n",
            a = cgroups.path("a"),
            users = cgroups.path("users"),
            exe = cgroups.path("exe"),
            ctr = cgroups.path("ctr"),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[host]\nmode = \"ebpf\"\nebpf_cgroup = \"{base}\"\nebpf_port = {PORT}\n\
             ebpf_bridge_address = \"10.98.0.1\"\nebpf_pin_dir = \"{pins}\"\n\
             [proxy]\nenabled = true\n\
             [privileges]\nuser = \"{AGENT_UID}\"\n\
             [attribution]\ncgroup_root = \"{root}\"\n\
             [instance]\naccount_id = \"123456789012\"\n\
             {STATIC_CREDENTIALS}\
             [roles]\ndir = \"{roles}\"\n",
            base = cgroups.base,
            pins = bpffs.pins().display(),
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
        bpffs,
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
            prefix.extend(support::as_user(uid));
        }
        python_get(&prefix, url, "5")
    }

    fn get(&self, cgroup: &str, path: &str) -> serde_json::Value {
        self.get_as(&self.host, cgroup, None, &format!("{IMDS}{path}"))
    }

    /// A GET of `path` from cgroup `cgroup`, by bash itself (`/dev/tcp`):
    /// its pid and the answer.
    fn bash_get(&self, cgroup: &str, path: &str) -> (u32, String) {
        let script = format!(
            "echo $$; exec 3<>/dev/tcp/169.254.169.254/80; \
             printf 'GET {path} HTTP/1.0\\r\\nHost: 169.254.169.254\\r\\n\\r\\n' >&3; cat <&3"
        );
        let mut prefix = self.cgroups.exec_prefix(&self.host.name, cgroup);
        prefix.extend(["/usr/bin/bash".to_owned(), "-c".to_owned(), script]);
        let out = Command::new(&prefix[0])
            .args(&prefix[1..])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (pid, answer) = text.split_once('\n').unwrap_or_else(|| panic!("{out:?}"));
        (pid.trim().parse().unwrap(), answer.to_owned())
    }

    /// How many sets of the programs are attached to the test's cgroup.
    fn attached(&self) -> usize {
        let out = Command::new("bpftool")
            .args(["cgroup", "show"])
            .arg(self.cgroups.dir(""))
            .output()
            .expect("bpftool");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .matches("imds_connect4")
            .count()
    }

    /// `imds-agent cleanup` for this config, in the host namespace.
    fn cleanup(&self) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.host.name,
                agent_bin(),
                "cleanup",
                "--config",
            ])
            .arg(self.dir.path().join("config.toml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "cleanup: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A GET from cgroup `cgroup` that must find nothing listening: the
    /// redirect held, and nothing else answered.
    fn assert_refused(&self, cgroup: &str, url: &str) {
        let got = self.get_as(&self.host, cgroup, None, url);
        assert!(
            got["error"]
                .as_str()
                .is_some_and(|e| e.contains("Connection refused")),
            "{url} from {cgroup}: {got}"
        );
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
    assert_eq!(setup.attached(), 1);

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
    let (pid, answer) = setup.bash_get("exe", ROLES);
    assert!(
        answer.starts_with("HTTP/1.0 200 ") && answer.ends_with("role-exe"),
        "{answer}"
    );
    let line = logged_workload(&agent, &serde_json::json!(pid));
    assert!(line.contains("exe=\"/usr/bin/bash\""), "{line}");
    let helper = helper_status(agent.pid(), "imds-exe");
    assert!(helper.contains(&format!("Uid:\t{AGENT_UID}\t")), "{helper}");
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
    // So does an IPv6 socket to the IPv4-mapped address, which only the
    // IPv6 program sees: before, it reached the real IMDS.
    let got = setup.get_as(&setup.host, "a", None, &format!("{IMDS_MAPPED}{ROLES}"));
    assert_eq!(got["body"], "role-a", "{got}");
    assert_eq!(got["peer"], "::ffff:169.254.169.254:80", "{got}");
    let line = logged_workload(&agent, &got["pid"]);
    assert!(line.contains("role=\"role-a\""), "{line}");

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

    // Another network namespace behind the bridge: sent to the bridge
    // address (the agent answers, not the real IMDS: 404, not 401), but
    // not attributed by its record: any namespace can file one under any
    // address, and no container registry vouches for this one. Before, it
    // got its cgroup's role.
    let got = setup.get_as(&setup.bridged, "ctr", None, &url);
    assert_eq!(got["status"], 404, "{got}\n{}", agent.logs());
    assert_eq!(got["peer"], "169.254.169.254:80", "{got}");
    // IPv6 from another namespace can't be sent to the (IPv4) bridge
    // address: refused at connect(), never let through to EC2's IPv6 IMDS.
    let v6 = setup.get_as(&setup.bridged, "ctr", None, &format!("{IMDS_V6}{ROLES}"));
    assert!(
        v6["error"]
            .as_str()
            .is_some_and(|e| e.contains("Operation not permitted")),
        "{v6}"
    );
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

    // A clean stop leaves the redirect in place: nothing answers, and the
    // real IMDS is not reached.
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
    assert_eq!(setup.attached(), 1);
    setup.assert_refused("a", &format!("{IMDS}/latest/meta-data/instance-id"));
    // cleanup removes the pins, which detaches the programs.
    let cleaned = setup.cleanup();
    assert_eq!(cleaned.matches("removed eBPF link").count(), 5, "{cleaned}");
    assert_eq!(setup.attached(), 0);
    let after = setup.get("a", "/latest/meta-data/instance-id");
    assert_eq!(after["status"], 401, "{after}");
    assert!(setup.bpffs.pinned().is_empty());
}

/// A crash must not open the real IMDS: the pinned programs keep sending
/// connections to where the agent listened (refused), over IPv4, IPv6 and
/// the IPv4-mapped address. A new agent takes the pins over (one set of
/// programs, its own), and `cleanup` leaves nothing attached.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn a_killed_agent_leaves_the_redirect_and_a_new_one_takes_it_over() {
    let setup = setup();
    let agent = setup.start();
    assert_eq!(setup.get("a", ROLES)["body"], "role-a");
    let first_pins = setup.bpffs.pinned();
    assert_eq!(first_pins.len(), 5, "{first_pins:?}");
    let helper = helper_status(agent.pid(), "imds-exe");
    let helper_pid = helper
        .lines()
        .find_map(|l| l.strip_prefix("Pid:\t"))
        .unwrap()
        .to_owned();
    agent.kill();
    // The executable helper went with the agent.
    let helper = std::path::Path::new("/proc").join(&helper_pid);
    wait_until(
        "the executable helper to go",
        Duration::from_secs(5),
        || !helper.exists(),
    );
    assert_eq!(setup.attached(), 1, "kill -9 left the programs attached");
    for base in [IMDS, IMDS_V6, IMDS_MAPPED] {
        setup.assert_refused("a", &format!("{base}/latest/meta-data/instance-id"));
    }
    // The upstream IMDS saw none of it.
    assert!(
        !setup
            .fake
            .requests()
            .iter()
            .any(|r| r.contains("instance-id")),
        "{:?}",
        setup.fake.requests()
    );

    let again = setup.start();
    assert_eq!(setup.get("a", ROLES)["body"], "role-a");
    wait_until("the old pins to go", Duration::from_secs(5), || {
        let pins = setup.bpffs.pinned();
        pins.len() == 5 && pins.iter().all(|p| !first_pins.contains(p))
    });
    assert_eq!(setup.attached(), 1, "one set of programs: the new agent's");
    again.wait_for_log("took over from a previous agent's eBPF link");
    again.kill();
    setup.cleanup();
    assert_eq!(setup.attached(), 0);
    let after = setup.get("a", "/latest/meta-data/instance-id");
    assert_eq!(after["status"], 401, "{after}");
}

/// The attack on `exe` rules: a process running another program (Python)
/// connects, forks, and execs the allowed executable (bash); its child, which holds the
/// connection, sends the request. By the time the request comes, the pid
/// the kernel recorded runs the allowed executable, but it is not the
/// program that connected: not the executable rule's role (404 for it).
/// Before, the rule matched.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn a_process_that_execs_after_connecting_is_not_the_executable_it_became() {
    let setup = setup();
    let agent = setup.start();
    // The allowed executable, straight: its rule.
    let (_, answer) = setup.bash_get("exe", ROLES);
    assert!(answer.ends_with("role-exe"), "{answer}");
    // Python connects; its child sends; meanwhile the parent becomes
    // bash.
    let script = format!(
        "import os, socket, sys, time\n\
         s = socket.create_connection(('169.254.169.254', 80))\n\
         if os.fork() == 0:\n\
         \x20   time.sleep(1)\n\
         \x20   s.sendall(b'GET {ROLES}role-exe HTTP/1.0\\r\\nHost: 169.254.169.254\\r\\n\\r\\n')\n\
         \x20   sys.stdout.write(s.recv(200).decode(errors='replace'))\n\
         \x20   sys.stdout.flush()\n\
         \x20   os._exit(0)\n\
         os.execv('/usr/bin/bash', ['bash', '-c', 'sleep 3'])\n"
    );
    let mut prefix = setup.cgroups.exec_prefix(&setup.host.name, "exe");
    prefix.extend([python().display().to_string(), "-c".to_owned(), script]);
    let out = Command::new(&prefix[0])
        .args(&prefix[1..])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.starts_with("HTTP/1.0 404 "),
        "the child of a process that became the allowed executable got: {answer:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.wait_for_log("is not the file it ran when it connected");
}

/// The attack on `exe` rules through a mount namespace: any user can
/// `unshare -Urm`, bind its own program (here bash) over the allowed
/// binary's path, and run it by that path. `/proc/<pid>/exe` then reads
/// `/usr/bin/sleep`, and the kernel's record is the user's program: the
/// path names another file in the agent's view, so the rule does not
/// match. Before, the agent compared the record with the file it opened
/// through /proc, which is the user's program too, and the rule matched.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn a_program_bound_over_an_allowed_path_is_not_that_executable() {
    let setup = setup();
    let agent = setup.start();
    let ask = format!(
        "exec 3<>/dev/tcp/169.254.169.254/80; \\
         printf 'GET {ROLES}role-sleep HTTP/1.0\\r\\nHost: 169.254.169.254\\r\\n\\r\\n' >&3; \\
         head -c 200 <&3"
    );
    let script = format!(
        "mount --bind /bin/bash /usr/bin/sleep && exec /usr/bin/sleep -c '{}'",
        ask.replace('\'', "'\\''")
    );
    let mut prefix = setup.cgroups.exec_prefix(&setup.host.name, "users");
    prefix.extend(support::as_user(WORKLOAD_UID));
    prefix.extend(["unshare", "-Urm", "sh", "-c", &script].map(str::to_owned));
    let out = Command::new(&prefix[0])
        .args(&prefix[1..])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.starts_with("HTTP/1.0 404 "),
        "a program bound over /usr/bin/sleep got: {answer:?}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.logs()
    );
    agent.wait_for_log("is not the file it ran when it connected");
}
