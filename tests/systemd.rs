//! The agent as operators meet it: a systemd service.
//!
//! - On the host: `systemd-analyze verify` finds nothing to say about the
//!   unit, and `systemd-analyze security` scores it 2.0 or better.
//! - Under a real systemd: a minimal Debian booted with systemd-nspawn in a
//!   network namespace of its own (`--private-network`), `cargo xtask
//!   install` into it, `systemctl start imds-agent` (Type=notify: it
//!   returns once the agent is READY), a client in a unit of its own gets
//!   its unit's role, the request's fields are in `journalctl -o json`, and
//!   a killed agent is restarted by systemd.
//! - A restart that costs STS nothing: 200 roles fetched from moto (behind
//!   the counting proxy, in the machine's network namespace) survive
//!   `systemctl restart` in systemd's file descriptor store, with no STS
//!   call; `systemctl stop` empties the store.
//!
//! The Debian root comes from `cargo xtask test` (`IMDS_TEST_ROOTFS`, a
//! tarball it builds once with debootstrap). Needs root.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::netns::unique;
use support::wait_for;

/// How long a machine may take to boot its systemd.
const BOOT_WAIT: Duration = Duration::from_secs(120);

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/imds-agent.service");

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_unit_verifies_and_scores_2_or_better() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-analyze is missing: run `bash .ci/run` (apt-get install systemd)");
    }
    // verify needs the binary at ExecStart's path and the system's units:
    // a root of its own holds both.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("usr/local/bin")).unwrap();
    std::fs::copy(support::agent_bin(), r.join("usr/local/bin/imds-agent")).unwrap();
    std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    std::fs::copy(UNIT, r.join("etc/systemd/system/imds-agent.service")).unwrap();
    // With every shipped drop-in: they must parse too.
    let drop_ins = r.join("etc/systemd/system/imds-agent.service.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    for drop_in in ["docker.conf", "ebpf.conf"] {
        let shipped = std::path::Path::new(UNIT).with_file_name(drop_in);
        std::fs::copy(shipped, drop_ins.join(drop_in)).unwrap();
    }
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    let copied = output(
        Command::new("cp")
            .args(["-a", "/lib/systemd/system"])
            .arg(r.join("usr/lib/systemd/")),
    );
    assert!(copied.status.success(), "{}", text(&copied));
    let verify = output(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", r.display()))
            .args(["--man=no", "imds-agent.service"]),
    );
    // Unknown keys and bad values are only warnings: nothing may be said.
    assert!(
        verify.status.success() && text(&verify).trim().is_empty(),
        "systemd-analyze verify: {}",
        text(&verify)
    );
    let security = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager", "--threshold=20"])
            .arg(UNIT),
    );
    let report = text(&security);
    assert!(security.status.success(), "exposure above 2.0:\n{report}");
    assert!(
        report.contains("Overall exposure level for imds-agent.service"),
        "{report}"
    );
}

/// A booted machine, powered off and removed on drop.
struct Machine {
    dir: PathBuf,
    root: PathBuf,
    nspawn: Option<Child>,
    leader: u32,
    /// The machine's own cgroup, one per hierarchy.
    cgroups: Vec<PathBuf>,
}

/// The test's own cgroups in the hierarchies nspawn places a machine in:
/// the hybrid layout's named systemd (v1) and unified (v2) ones, or the
/// whole v2 tree. Under them, a cancelled job's cgroup still holds its
/// machines.
fn own_cgroups() -> Vec<PathBuf> {
    let ours = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    // `ID:CONTROLLERS:PATH`; the unified tree's CONTROLLERS are empty.
    let under = |controllers: &str| {
        ours.lines()
            .find_map(|l| {
                let (_, rest) = l.split_once(':')?;
                let (names, path) = rest.split_once(':')?;
                (names == controllers).then_some(path)
            })
            .unwrap_or("/")
            .trim_start_matches('/')
            .to_owned()
    };
    let unified = Path::new("/sys/fs/cgroup");
    if unified.join("cgroup.controllers").exists() {
        return vec![unified.join(under(""))];
    }
    [
        ("/sys/fs/cgroup/systemd", "name=systemd"),
        ("/sys/fs/cgroup/unified", ""),
    ]
    .into_iter()
    .map(|(hierarchy, names)| Path::new(hierarchy).join(under(names)))
    .filter(|c| c.join("cgroup.procs").exists())
    .collect()
}

/// Kills what is left in `cgroup` and below, waits for it to be empty
/// and removes it, bottom-up.
fn remove_cgroup(cgroup: &Path) {
    let mut dirs = vec![cgroup.to_owned()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
            dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        i += 1;
    }
    let procs = |dir: &Path| {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = dirs.iter().flat_map(|d| procs(d)).collect();
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&left)
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(100));
    }
    for dir in dirs.iter().rev() {
        let _ = std::fs::remove_dir(dir);
    }
}

impl Machine {
    /// Extracts `tarball` to a tmpfs, lets `prepare` fill the root, and
    /// boots it.
    fn boot(tarball: &Path, prepare: impl FnOnce(&Path)) -> Machine {
        let dir = std::env::temp_dir().join(unique("imds-machine-"));
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = output(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=2g,mode=0755", "imds-e2e"])
                .arg(&dir),
        );
        assert!(mounted.status.success(), "{}", text(&mounted));
        let root = dir.join("root");
        std::fs::create_dir(&root).unwrap();
        let name = unique("imds");
        // A cgroup of its own in every hierarchy: without a systemd on the
        // host, nspawn puts the machine in a `payload` cgroup under its own,
        // so machines started from one cgroup would share theirs, and one
        // machine's systemd stopping its units (or powering off) would kill
        // the other's processes.
        let cgroups: Vec<PathBuf> = own_cgroups()
            .iter()
            .map(|c| c.join(format!("imds-e2e-{name}")))
            .collect();
        for cgroup in &cgroups {
            // Left by an earlier run whose pid and counter were these.
            remove_cgroup(cgroup);
        }
        for cgroup in &cgroups {
            std::fs::create_dir(cgroup)
                .unwrap_or_else(|e| panic!("creating {}: {e}", cgroup.display()));
        }
        let mut machine = Machine {
            dir,
            root,
            nspawn: None,
            leader: 0,
            cgroups,
        };
        let extracted = output(Command::new("sh").args([
            "-c",
            &format!(
                "zstd -dc '{}' | tar -C '{}' --numeric-owner --xattrs --acls -xf -",
                tarball.display(),
                machine.root.display()
            ),
        ]));
        assert!(extracted.status.success(), "{}", text(&extracted));
        prepare(&machine.root);
        let console = std::fs::File::create(machine.dir.join("console.log")).unwrap();
        // --register=no --keep-unit: no systemd on the host;
        // --private-network: the agent changes addresses and nftables in
        // the machine's own namespace, never the host's.
        // The shell moves itself into the machine's cgroups, then becomes
        // nspawn (same pid).
        let moves: String = machine
            .cgroups
            .iter()
            .map(|c| format!("echo $$ > '{}/cgroup.procs' && ", c.display()))
            .collect();
        let nspawn = Command::new("sh")
            .args(["-c", &format!("{moves}exec systemd-nspawn \"$@\""), "sh"])
            .args(["-q", "-D"])
            .arg(&machine.root)
            .args([
                "-M",
                &name,
                "--boot",
                "--register=no",
                "--keep-unit",
                "--private-network",
            ])
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("systemd-nspawn (apt-get install systemd-container)");
        let pid = nspawn.id();
        machine.nspawn = Some(nspawn);
        // Generous: the other tests of this binary build and install the
        // agent meanwhile, and a machine booting on two busy cores has been
        // seen to take over 30 s.
        machine.leader = wait_for("the machine's systemd", BOOT_WAIT, || {
            // The first child may be nspawn's short-lived outer child: the
            // machine's PID 1 is the one called systemd.
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            let mut found = None;
            for child in children.split_whitespace() {
                let mut frontier = vec![child.to_owned()];
                while let Some(p) = frontier.pop() {
                    // PID 1 of its namespace: not a child of it that has
                    // not yet renamed itself after fork.
                    let is_init =
                        std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| {
                            s.lines()
                                .find_map(|l| l.strip_prefix("NSpid:"))
                                .and_then(|ids| ids.split_whitespace().last())
                                == Some("1")
                        });
                    if is_init
                        && std::fs::read_to_string(format!("/proc/{p}/comm"))
                            .is_ok_and(|c| c.trim() == "systemd")
                    {
                        found = p.parse().ok();
                    }
                    let more = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children"))
                        .unwrap_or_default();
                    frontier.extend(more.split_whitespace().map(str::to_owned));
                }
            }
            found
        });
        wait_for("systemd's private socket", BOOT_WAIT, || {
            machine
                .run(&["test", "-S", "/run/systemd/private"])
                .status
                .success()
                .then_some(())
        });
        let state = machine.run(&["timeout", "60", "systemctl", "is-system-running", "--wait"]);
        assert!(
            text(&state).contains("running") || text(&state).contains("degraded"),
            "the machine did not boot: {}\n{}",
            text(&state),
            machine.console()
        );
        machine
    }

    /// Runs a command inside the machine.
    fn run(&self, args: &[&str]) -> Output {
        assert!(
            self.leader == 0 || Path::new(&format!("/proc/{}", self.leader)).exists(),
            "the machine's systemd is gone; its console:\n{}",
            self.console()
        );
        output(
            Command::new("nsenter")
                .args(["-t", &self.leader.to_string(), "-a", "--"])
                .args(args)
                .env("SYSTEMD_PAGER", "")
                .env("SYSTEMD_COLORS", "0"),
        )
    }

    /// A command prefix that enters the machine's network namespace only:
    /// the host's files (the test's Python) with the machine's 127.0.0.1.
    fn net_prefix(&self) -> Vec<String> {
        ["nsenter", "-t", &self.leader.to_string(), "-n", "--"]
            .map(str::to_owned)
            .to_vec()
    }

    /// The agent's journal entries `filter` selects, once everything
    /// logged so far is in the journal (`journalctl --sync`).
    fn agent_journal(&self, filter: &[&str]) -> String {
        let synced = self.run(&["journalctl", "--sync"]);
        assert!(
            synced.status.success(),
            "journalctl --sync: {}",
            text(&synced)
        );
        let mut args = vec!["journalctl", "-u", "imds-agent", "--no-pager"];
        args.extend_from_slice(filter);
        text(&self.run(&args))
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    fn main_pid(&self) -> u32 {
        let out = self.run(&[
            "systemctl",
            "show",
            "-p",
            "MainPID",
            "--value",
            "imds-agent",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(mut nspawn) = self.nspawn.take() {
            // nspawn turns SIGTERM into a clean poweroff.
            let _ = Command::new("kill")
                .args(["-TERM", &nspawn.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && nspawn.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = nspawn.kill();
            let _ = nspawn.wait();
        }
        // nspawn without a systemd on the host leaves its cgroups behind,
        // and a killed machine may leave processes in them.
        for cgroup in &self.cgroups {
            remove_cgroup(cgroup);
        }
        for dir in [
            "/run/systemd/nspawn/locks",
            "/run/systemd/nspawn/propagate",
            "/run/systemd/nspawn",
        ] {
            // Only empty: a host with machines of its own keeps theirs.
            let _ = std::fs::remove_dir(dir);
        }
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const CONFIG: &str = r#"
[host]
mode = "alias"

[instance]
account_id = "123456789012"

[credentials]
source = "static"
access_key_id = "ASIAIMDSAGENTDEMO000"
secret_access_key = "imdsAgentDemoSecretKeyNotValidAnywhere00"
session_token = "IQoJaW1kcy1hZ2VudC1kZW1vLXNlc3Npb24tdG9rZW4tbm90LXZhbGlkLWFueXdoZXJl"
"#;

/// The Debian root the machines boot (`IMDS_TEST_ROOTFS`).
fn rootfs() -> PathBuf {
    PathBuf::from(std::env::var_os("IMDS_TEST_ROOTFS").expect(
        "IMDS_TEST_ROOTFS is not set: run the tests with `cargo xtask test` (or `cargo xtask test-env`), which builds the Debian root",
    ))
}

const RULES: &str = "[[rule]]\nunit = \"imds-client.service\"\nrole = \"client-role\"\n";

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn installed_started_attributed_journaled_and_restarted_under_systemd() {
    let tarball = rootfs();
    let machine = Machine::boot(&tarball, |root| install_into(root, CONFIG, RULES));
    let started = machine.run(&["timeout", "60", "systemctl", "start", "imds-agent"]);
    let journal = || text(&machine.run(&["journalctl", "-u", "imds-agent", "--no-pager"]));
    assert!(
        started.status.success(),
        "systemctl start: {}\n{}",
        text(&started),
        journal()
    );
    let active = machine.run(&["systemctl", "is-active", "imds-agent"]);
    assert_eq!(
        String::from_utf8_lossy(&active.stdout).trim(),
        "active",
        "{}",
        journal()
    );
    // It runs as the user sysusers.d made for it, not a shared one.
    let user = text(&machine.run(&["getent", "passwd", "imds-agent"]));
    let uid = user.split(':').nth(2).unwrap_or_default().to_owned();
    assert!(!uid.is_empty(), "no imds-agent user: {user}");
    let agent_status =
        text(&machine.run(&["cat", &format!("/proc/{}/status", machine.main_pid())]));
    assert!(
        agent_status.contains(&format!("Uid:\t{uid}\t")),
        "{agent_status}"
    );
    let status = text(&machine.run(&[
        "systemctl",
        "show",
        "-p",
        "StatusText",
        "--value",
        "imds-agent",
    ]));
    assert!(
        status.contains("serving 169.254.169.254:80 (alias mode)"),
        "{status}"
    );

    // A client in a unit of its own gets that unit's role.
    let client = |path: &str| client(&machine, path);
    let listing = client("/latest/meta-data/iam/security-credentials/");
    assert_eq!(listing["body"], "client-role", "{listing}\n{}", journal());
    let creds = client("/latest/meta-data/iam/security-credentials/client-role");
    assert_eq!(creds["status"], 200, "{creds}");

    // The request's fields, as journalctl shows them.
    let entries = machine.agent_journal(&["-o", "json", "F_ROLE=client-role"]);
    let entry: serde_json::Value = entries
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["MESSAGE"] == "credentials request")
        .unwrap_or_else(|| {
            panic!(
                "no credentials request with F_ROLE=client-role in:\n{entries}\n{}",
                journal()
            )
        });
    println!("the request's journal entry: {entry}");
    assert_eq!(entry["F_UNIT"], "imds-client.service", "{entry}");
    assert_eq!(entry["F_STATUS"], "200", "{entry}");
    assert_eq!(entry["F_ACCESS_KEY_SUFFIX"], "O000", "{entry}");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "imds-agent", "{entry}");
    assert!(
        entry["F_LATENCY_US"]
            .as_str()
            .is_some_and(|l| l.parse::<u64>().is_ok()),
        "{entry}"
    );
    assert!(
        !entries.contains("imdsAgentDemoSecretKey"),
        "no secret in the journal"
    );

    // The agent holds no capability while it serves.
    let pid = machine.main_pid();
    let proc_status = text(&machine.run(&["cat", &format!("/proc/{pid}/status")]));
    assert!(
        proc_status.contains("CapEff:\t0000000000000000"),
        "{proc_status}"
    );

    // `systemctl reload` (ExecReload=, as root: the agent's own copy of the
    // file is the start's) puts a new zone in force in the same process and
    // names what waits for a restart, a moved admin socket among them: the
    // reload talks to the socket the agent listens on.
    let zone = "/latest/meta-data/placement/availability-zone";
    let config = machine.root.join("etc/imds-agent/config.toml");
    std::fs::write(
        &config,
        CONFIG.replace(
            "[instance]\n",
            "[instance]\navailability_zone = \"eu-west-1c\"\nregion = \"eu-west-1\"\n",
        ) + "\n[server]\nhop_limit = 2\n[admin]\nsocket = \"/run/imds-agent/moved.sock\"\n",
    )
    .unwrap();
    let reloaded = machine.run(&["timeout", "60", "systemctl", "reload", "imds-agent"]);
    assert!(
        reloaded.status.success(),
        "systemctl reload: {}\n{}",
        text(&reloaded),
        journal()
    );
    assert_eq!(client(zone)["body"], "eu-west-1c", "{}", journal());
    assert_eq!(machine.main_pid(), pid, "a reload is not a restart");
    let reload_log =
        machine.agent_journal(&["-q", "-o", "verbose", "SYSLOG_IDENTIFIER=imds-agent"]);
    assert!(
        reload_log.contains("config reloaded")
            && reload_log.contains("server.hop_limit")
            && reload_log.contains("admin.socket"),
        "{reload_log}"
    );
    std::fs::write(&config, CONFIG).unwrap();

    // Killed, it is restarted (Restart=on-failure), and serves again.
    let killed = machine.run(&[
        "systemctl",
        "kill",
        "-s",
        "KILL",
        "--kill-who=main",
        "imds-agent",
    ]);
    assert!(killed.status.success(), "{}", text(&killed));
    let restarted = wait_for(
        "systemd to restart the agent",
        Duration::from_secs(30),
        || {
            let now = machine.main_pid();
            let active = machine.run(&["systemctl", "is-active", "imds-agent"]);
            (now != 0 && now != pid && String::from_utf8_lossy(&active.stdout).trim() == "active")
                .then_some(now)
        },
    );
    assert_ne!(restarted, pid);
    let again = client("/latest/meta-data/iam/security-credentials/");
    assert_eq!(again["body"], "client-role", "{again}\n{}", journal());

    // A clean stop takes the address off; the table stays.
    let stopped = machine.run(&["systemctl", "stop", "imds-agent"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    let addresses = text(&machine.run(&["ip", "addr", "show", "dev", "lo"]));
    assert!(
        !addresses.contains("169.254.169.254"),
        "{addresses}\n{}",
        journal()
    );
    let tables = text(&machine.run(&["nft", "list", "tables"]));
    assert!(tables.contains("imds_agent"), "{tables}");
    // What the agent logged as it stopped may still be on its way to the
    // journal.
    let errors = machine.agent_journal(&["-p", "err", "-q", "SYSLOG_IDENTIFIER=imds-agent"]);
    assert!(errors.trim().is_empty(), "errors in the journal:\n{errors}");
}

#[test]
#[cfg_attr(
    not(feature = "nftables"),
    ignore = "installs the nftables build: needs libnftnl-dev, libmnl-dev"
)]
fn install_keeps_an_operators_files_and_uninstall_reverses_it() {
    let dest = tempfile::tempdir().unwrap();
    let xtask = |task: &str| {
        let out = output(
            Command::new(env!("CARGO"))
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .args(["xtask", task, "--prefix", "/usr", "--destdir"])
                .arg(dest.path()),
        );
        assert!(out.status.success(), "cargo xtask {task}: {}", text(&out));
        text(&out)
    };
    let d = dest.path();
    xtask("install");
    let unit =
        std::fs::read_to_string(d.join("usr/lib/systemd/system/imds-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/imds-agent run"), "{unit}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &str| std::fs::metadata(d.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("usr/bin/imds-agent"), 0o755);
    assert_eq!(mode("etc/imds-agent/config.toml"), 0o600);
    let sysusers = std::fs::read_to_string(d.join("usr/lib/sysusers.d/imds-agent.conf")).unwrap();
    assert!(sysusers.contains("u imds-agent "), "{sysusers}");
    assert!(d.join("etc/imds-agent/roles.d/example.toml").exists());
    // The operator edits the config and adds a rule: a second install
    // keeps both.
    std::fs::write(d.join("etc/imds-agent/config.toml"), "# mine\n").unwrap();
    std::fs::write(d.join("etc/imds-agent/roles.d/10-mine.toml"), "").unwrap();
    let again = xtask("install");
    assert!(again.contains("kept"), "{again}");
    assert_eq!(
        std::fs::read_to_string(d.join("etc/imds-agent/config.toml")).unwrap(),
        "# mine\n"
    );
    // Uninstall removes what is still the shipped files and keeps the rest.
    xtask("uninstall");
    assert!(!d.join("usr/bin/imds-agent").exists());
    assert!(!d.join("usr/lib/systemd/system/imds-agent.service").exists());
    assert!(!d.join("usr/lib/sysusers.d/imds-agent.conf").exists());
    assert!(!d.join("etc/imds-agent/roles.d/example.toml").exists());
    assert!(
        d.join("etc/imds-agent/config.toml").exists(),
        "the operator's config stays"
    );
    assert!(
        d.join("etc/imds-agent/roles.d/10-mine.toml").exists(),
        "the operator's rule stays"
    );
}

/// tests/py/get.py's report of GET `path` on 169.254.169.254, from a
/// client in a unit of its own (`imds-client.service`) with a user of its
/// own.
fn client(machine: &Machine, path: &str) -> serde_json::Value {
    let url = format!("http://169.254.169.254{path}");
    let args = [
        "systemd-run",
        "--unit=imds-client",
        "--wait",
        "--collect",
        "--pipe",
        "--quiet",
        "-p",
        "DynamicUser=yes",
        "python3",
        "/usr/local/share/imds-test/get.py",
        &url,
    ];
    // The previous client's unit may still be loaded for a moment after
    // `--wait` returned: its name is taken until systemd let it go.
    let out = wait_for(
        "the client's unit name to be free",
        Duration::from_secs(60),
        || {
            let out = machine.run(&args);
            let busy = String::from_utf8_lossy(&out.stderr).contains("already loaded");
            if busy {
                // A unit that lingers (failed, or not yet collected) is
                // let go.
                let _ = machine.run(&["systemctl", "stop", "imds-client.service"]);
                let _ = machine.run(&["systemctl", "reset-failed", "imds-client.service"]);
                std::thread::sleep(Duration::from_millis(200));
            }
            (!busy).then_some(out)
        },
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    serde_json::from_str::<serde_json::Value>(stdout.trim())
        .unwrap_or_else(|e| panic!("{}: {e}", text(&out)))
}

/// Roles the restart test caches.
const MANY: usize = 200;

/// `cargo xtask ARGS PATH`, which must succeed.
fn xtask(args: &[&str], path: &Path) -> Output {
    let out = output(
        Command::new(env!("CARGO"))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .arg("xtask")
            .args(args)
            .arg(path),
    );
    assert!(out.status.success(), "cargo xtask {args:?}: {}", text(&out));
    out
}

/// `cargo xtask install` into `root`, with `config` and `rules`, and get.py
/// for clients.
fn install_into(root: &Path, config: &str, rules: &str) {
    xtask(&["install", "--destdir"], root);
    std::fs::write(root.join("etc/imds-agent/config.toml"), config).unwrap();
    std::fs::write(root.join("etc/imds-agent/roles.d/10-rules.toml"), rules).unwrap();
    std::fs::create_dir_all(root.join("usr/local/share/imds-test")).unwrap();
    std::fs::copy(
        support::py_script("get.py"),
        root.join("usr/local/share/imds-test/get.py"),
    )
    .unwrap();
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn a_restart_under_systemd_costs_sts_nothing() {
    let tarball = rootfs();
    let mut rules = String::from("[[rule]]\nunit = \"imds-client.service\"\nrole = \"role-7\"\n");
    for i in 0..MANY {
        rules.push_str(&format!(
            "[[rule]]\nunit = \"w{i}.service\"\nrole = \"role-{i}\"\n"
        ));
    }
    // The endpoint is known once the machine runs: the config is written
    // then, before the agent starts.
    let machine = Machine::boot(&tarball, |root| install_into(root, "", &rules));
    let proxy = support::sts::StsProxy::start_behind(&machine.net_prefix());
    let config = format!(
        "[host]\nmode = \"alias\"\n[instance]\naccount_id = \"123456789012\"\n\
         [credentials]\nsource = \"sts\"\nendpoint = \"{}\"\nrate_per_second = 200\nburst = 200\n\
         [roles]\nsession_per_workload = false\n",
        proxy.url()
    );
    std::fs::write(machine.root.join("etc/imds-agent/config.toml"), config).unwrap();
    // The agent's own keys (moto takes any), as an operator's drop-in
    // would give them.
    let drop_in = machine.root.join("etc/systemd/system/imds-agent.service.d");
    std::fs::create_dir_all(&drop_in).unwrap();
    std::fs::write(
        drop_in.join("keys.conf"),
        "[Service]\nEnvironment=AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n\
         Environment=AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n\
         Environment=AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null\n",
    )
    .unwrap();
    let reloaded = machine.run(&["systemctl", "daemon-reload"]);
    assert!(reloaded.status.success(), "{}", text(&reloaded));
    let journal = || text(&machine.run(&["journalctl", "-u", "imds-agent", "--no-pager"]));
    let systemctl = |verb: &str| {
        let out = machine.run(&["timeout", "60", "systemctl", verb, "imds-agent"]);
        assert!(
            out.status.success(),
            "systemctl {verb}: {}\n{}",
            text(&out),
            journal()
        );
    };
    let client_key = || {
        let reply = client(
            &machine,
            "/latest/meta-data/iam/security-credentials/role-7",
        );
        assert_eq!(reply["status"], 200, "{reply}");
        let doc: serde_json::Value = serde_json::from_str(reply["body"].as_str().unwrap()).unwrap();
        assert_eq!(doc["Code"], "Success", "{doc}");
        doc["AccessKeyId"].as_str().unwrap().to_owned()
    };
    let ready = || {
        wait_for("every role to be fetched", Duration::from_secs(90), || {
            machine
                .run(&["imds-agent", "status"])
                .status
                .success()
                .then_some(())
        })
    };

    systemctl("start");
    ready();
    let fetched = proxy.count("AssumeRole");
    assert!(
        fetched >= MANY,
        "{fetched} AssumeRole calls for {MANY} roles"
    );
    let before = client_key();

    // Restarted (what an upgrade does): every role comes back from the
    // store, and STS hears nothing.
    let pid = machine.main_pid();
    let restart = Instant::now();
    systemctl("restart");
    assert_ne!(machine.main_pid(), pid, "a new process");
    ready();
    println!(
        "systemctl restart to ready with {MANY} roles carried over: {:?}",
        restart.elapsed()
    );
    assert_eq!(client_key(), before, "the same credentials, carried over");
    std::thread::sleep(Duration::from_secs(3));
    let calls = proxy.calls();
    assert_eq!(
        calls.len(),
        fetched,
        "no STS call after the restart: {:?}\n{}",
        &calls[fetched.min(calls.len())..],
        journal()
    );
    let carried = machine.agent_journal(&["-o", "json", &format!("F_KEPT={MANY}")]);
    assert!(
        carried.contains("credentials carried over from the previous run"),
        "{carried}\n{}",
        journal()
    );
    assert!(
        !journal().contains("wJalrXUtnFEMI"),
        "no secret in the journal"
    );
    // The process's own metrics, as the hardened unit lets it read them
    // (ProcSubset=pid hides /proc/stat).
    let metrics = text(&machine.run(&["imds-agent", "metrics"]));
    for name in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_start_time_seconds ",
        "process_open_fds ",
        "imds_agent_build_info{version=",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }

    // Stopped for good, the store is emptied: the next start fetches.
    systemctl("stop");
    systemctl("start");
    ready();
    assert!(
        proxy.count("AssumeRole") >= fetched + MANY,
        "a start after a stop fetches every role again"
    );
    assert_ne!(client_key(), before);
}

/// `cargo xtask package`, and the path of the .deb it built in `out`.
fn build_package(out: &Path) -> PathBuf {
    let built = xtask(&["package", "--out"], out);
    // Its last line (dpkg-deb says what it builds before).
    let stdout = String::from_utf8_lossy(&built.stdout).into_owned();
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(path.is_file(), "{}", text(&built));
    path
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn the_debian_package_installs_enabled_serves_and_purges() {
    let tarball = rootfs();
    let out = tempfile::tempdir().unwrap();
    let deb = build_package(out.path());
    // What dpkg-deb says is in it: the conffiles, the config root's only.
    let info = text(&output(Command::new("dpkg-deb").arg("--info").arg(&deb)));
    assert!(info.contains("Package: imds-agent"), "{info}");
    // Versioned, from the libraries' symbols (dpkg-shlibdeps).
    assert!(
        info.contains("Depends: systemd (>= 247), libc6 (>= "),
        "{info}"
    );
    let conffiles = text(&output(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .arg("conffiles"),
    ));
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        [
            "/etc/imds-agent/config.toml",
            "/etc/imds-agent/roles.d/example.toml"
        ]
    );
    let contents = text(&output(
        Command::new("dpkg-deb").arg("--contents").arg(&deb),
    ));
    for (mode, path) in [
        ("-rw-------", "./etc/imds-agent/config.toml"),
        ("-rw-r--r--", "./etc/imds-agent/roles.d/example.toml"),
        ("-rwxr-xr-x", "./usr/bin/imds-agent"),
        ("-rw-r--r--", "./usr/lib/systemd/system/imds-agent.service"),
        ("-rw-r--r--", "./usr/lib/sysusers.d/imds-agent.conf"),
        ("-rw-r--r--", "./usr/lib/tmpfiles.d/imds-agent.conf"),
        ("-rw-r--r--", "./usr/share/man/man1/imds-agent.1.gz"),
        ("-rw-r--r--", "./usr/share/man/man1/imds-agent-run.1.gz"),
        (
            "-rw-r--r--",
            "./usr/share/bash-completion/completions/imds-agent",
        ),
        (
            "-rw-r--r--",
            "./usr/share/zsh/vendor-completions/_imds-agent",
        ),
        (
            "-rw-r--r--",
            "./usr/share/fish/vendor_completions.d/imds-agent.fish",
        ),
        (
            "-rw-r--r--",
            "./usr/share/doc/imds-agent/examples/docker.conf",
        ),
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.starts_with(mode) && l.contains(" root/root ") && l.ends_with(path)),
            "{mode} root/root {path} in:\n{contents}"
        );
    }

    let machine = Machine::boot(&tarball, |root| {
        std::fs::copy(&deb, root.join("root/imds-agent.deb")).unwrap();
        std::fs::create_dir_all(root.join("usr/local/share/imds-test")).unwrap();
        std::fs::copy(
            support::py_script("get.py"),
            root.join("usr/local/share/imds-test/get.py"),
        )
        .unwrap();
    });
    let run = |args: &[&str]| {
        let out = machine.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        text(&out)
    };
    let state = |what: &str| {
        String::from_utf8_lossy(&machine.run(&["systemctl", what, "imds-agent"]).stdout)
            .trim()
            .to_owned()
    };
    run(&["dpkg", "-i", "/root/imds-agent.deb"]);
    assert_eq!(state("is-enabled"), "enabled", "enabled at install");
    assert_eq!(state("is-active"), "inactive", "but not started");
    assert!(run(&["getent", "passwd", "imds-agent"]).starts_with("imds-agent:"));
    let man = run(&["sh", "-c", "zcat /usr/share/man/man1/imds-agent.1.gz"]);
    assert!(
        man.contains(".TH imds-agent 1") && man.contains("check\\-config"),
        "{man}"
    );
    assert!(
        !man.contains("generate"),
        "the hidden command is not in the man page"
    );
    let run_page = run(&["sh", "-c", "zcat /usr/share/man/man1/imds-agent-run.1.gz"]);
    assert!(run_page.contains("\\-\\-config"), "{run_page}");
    let completion = run(&["cat", "/usr/share/bash-completion/completions/imds-agent"]);
    assert!(completion.contains("check-config"), "{completion}");

    // As installed, the config sets nothing: a start (as the next boot's)
    // is skipped, not failed, and 169.254.169.254 stays untouched.
    let shipped = std::fs::read_to_string(machine.root.join("etc/imds-agent/config.toml")).unwrap();
    assert!(
        shipped
            .lines()
            .all(|l| l.trim().is_empty() || l.starts_with('#')),
        "{shipped}"
    );
    assert!(shipped.contains("# mode = \"alias\""), "{shipped}");
    let journal = || text(&machine.run(&["journalctl", "-u", "imds-agent", "--no-pager"]));
    run(&["timeout", "60", "systemctl", "start", "imds-agent"]);
    assert_eq!(state("is-active"), "inactive", "{}", journal());
    let skipped = machine.agent_journal(&[]);
    assert!(
        skipped.contains("holds no settings") && skipped.contains("not configured"),
        "{skipped}"
    );
    let addresses = run(&["ip", "addr", "show", "dev", "lo"]);
    assert!(!addresses.contains("169.254.169.254"), "{addresses}");

    // The operator's part, then a start: the client's unit gets its role.
    std::fs::write(machine.root.join("etc/imds-agent/config.toml"), CONFIG).unwrap();
    std::fs::write(
        machine.root.join("etc/imds-agent/roles.d/10-client.toml"),
        RULES,
    )
    .unwrap();
    let started = machine.run(&["timeout", "60", "systemctl", "start", "imds-agent"]);
    assert!(
        started.status.success(),
        "{}\n{}",
        text(&started),
        journal()
    );
    let reply = client(
        &machine,
        "/latest/meta-data/iam/security-credentials/client-role",
    );
    assert_eq!(reply["status"], 200, "{reply}\n{}", journal());

    // An upgrade (the same package again) restarts the running agent.
    let before = machine.main_pid();
    run(&["dpkg", "-i", "/root/imds-agent.deb"]);
    assert_eq!(state("is-active"), "active", "{}", journal());
    assert_ne!(machine.main_pid(), before, "an upgrade restarts the agent");
    let reply = client(
        &machine,
        "/latest/meta-data/iam/security-credentials/client-role",
    );
    assert_eq!(reply["status"], 200, "{reply}\n{}", journal());
    // One whose binary would refuse the config does not restart it: the
    // running agent keeps serving, dpkg succeeds, and the operator is told.
    let config = machine.root.join("etc/imds-agent/config.toml");
    std::fs::write(&config, format!("{CONFIG}\n[log]\nlevl = \"debug\"\n")).unwrap();
    let before = machine.main_pid();
    let upgraded = run(&["dpkg", "-i", "/root/imds-agent.deb"]);
    assert!(upgraded.contains("does not accept"), "{upgraded}");
    assert_eq!(machine.main_pid(), before, "{upgraded}");
    assert_eq!(state("is-active"), "active", "{}", journal());
    std::fs::write(&config, CONFIG).unwrap();

    // Removed: stopped, its address gone, the binary gone, the operator's
    // config and rules kept.
    run(&["dpkg", "-r", "imds-agent"]);
    assert_ne!(state("is-active"), "active");
    assert!(!machine.root.join("usr/bin/imds-agent").exists());
    let addresses = run(&["ip", "addr", "show", "dev", "lo"]);
    assert!(!addresses.contains("169.254.169.254"), "{addresses}");
    assert_eq!(
        std::fs::read_to_string(machine.root.join("etc/imds-agent/config.toml")).unwrap(),
        CONFIG,
        "dpkg -r keeps the conffiles"
    );
    let wants = machine
        .root
        .join("etc/systemd/system/sysinit.target.wants/imds-agent.service");
    assert!(!wants.is_symlink(), "dpkg -r disables it");
    // Installed again over the kept conffiles: enabled, as at a first
    // install, and not started.
    run(&["dpkg", "-i", "/root/imds-agent.deb"]);
    assert!(wants.is_symlink(), "enabled at a reinstall");
    assert_eq!(state("is-enabled"), "enabled");
    assert_eq!(state("is-active"), "inactive", "but not started");
    run(&["test", "!", "-e", "/run/imds-agent-dpkg"]);
    // Purged: the conffiles go; the operator's own rule file stays, and
    // with it the directory.
    run(&["dpkg", "-P", "imds-agent"]);
    assert!(!machine.root.join("etc/imds-agent/config.toml").exists());
    assert!(
        !machine
            .root
            .join("etc/imds-agent/roles.d/example.toml")
            .exists()
    );
    assert!(
        machine
            .root
            .join("etc/imds-agent/roles.d/10-client.toml")
            .exists()
    );
    let status = text(&machine.run(&["dpkg", "-s", "imds-agent"]));
    assert!(!status.contains("Status: install"), "{status}");
}
