//! The container path against a real Docker daemon (Debian's docker.io):
//! containerd and dockerd run inside a network namespace of the test's own
//! (docker0 and every container network live there), with
//! `--iptables=false --ip-forward=false`, their own state directories and
//! their own cgroup parent, and are stopped by pid. The agent runs in the
//! same namespace in alias mode, watching Docker's events.
//!
//! Bridged containers are known by their address, host-network ones by
//! their cgroup; `IAM_ROLE` picks the role; a container that gets a freed
//! address gets its own role, never the previous owner's.
//!
//! Needs root and `dockerd` (`bash .ci/run` installs it).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::netns::{NetNs, unique};
use support::sts::{Helper, agent_credentials, moto_in};
use support::{Agent, agent_bin, py_script, python, wait_until};

const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
const IMAGE: &str = "imds-e2e/busybox";

/// One daemon at a time: each costs a second of both cores to start.
static SERIAL: Mutex<()> = Mutex::new(());

/// containerd and dockerd in a namespace of their own.
struct Docker {
    ns: NetNs,
    dir: tempfile::TempDir,
    containerd: Option<Child>,
    dockerd: Option<Child>,
    cgroup_parent: String,
}

fn nsenter(ns: &NetNs) -> Command {
    // nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup
    // file systems Docker and the agent need.
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", ns.name));
    cmd
}

fn log_file(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).expect("a log file"))
}

impl Docker {
    fn start() -> Docker {
        assert!(
            Command::new("dockerd")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "dockerd is not installed: run `bash .ci/run` (apt-get install docker.io busybox-static)"
        );
        let ns = NetNs::new("dk");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("containerd.toml"),
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\naddress = \"{sock}\"\n",
                root = d.join("containerd-root").display(),
                state = d.join("containerd-state").display(),
                sock = d.join("containerd.sock").display(),
            ),
        )
        .unwrap();
        std::fs::write(d.join("daemon.json"), "{}").unwrap();
        let containerd = nsenter(&ns)
            .arg("containerd")
            .arg("--config")
            .arg(d.join("containerd.toml"))
            .stdout(log_file(&d.join("containerd.log")))
            .stderr(log_file(&d.join("containerd.err")))
            .spawn()
            .expect("starting containerd");
        let cgroup_parent = format!("/imds-e2e-{}", unique("d"));
        let mut docker = Docker {
            ns,
            dir,
            containerd: Some(containerd),
            dockerd: None,
            cgroup_parent,
        };
        wait_until("containerd's socket", Duration::from_secs(30), || {
            docker.path("containerd.sock").exists()
        });
        let d = docker.dir.path();
        let dockerd = nsenter(&docker.ns)
            .arg("dockerd")
            .arg(format!(
                "--containerd={}",
                d.join("containerd.sock").display()
            ))
            .arg(format!("--data-root={}", d.join("data").display()))
            .arg(format!("--exec-root={}", d.join("exec").display()))
            .arg(format!("--pidfile={}", d.join("docker.pid").display()))
            .arg(format!("--config-file={}", d.join("daemon.json").display()))
            .arg(format!("--host=unix://{}", d.join("docker.sock").display()))
            .arg(format!("--cgroup-parent={}", docker.cgroup_parent))
            .args([
                "--iptables=false",
                "--ip-forward=false",
                "--userland-proxy=false",
            ])
            .stdout(log_file(&d.join("dockerd.log")))
            .stderr(log_file(&d.join("dockerd.err")))
            .spawn()
            .expect("starting dockerd");
        docker.dockerd = Some(dockerd);
        wait_until("dockerd", Duration::from_secs(30), || {
            docker.docker_ok(&["version"])
        });
        docker.import_image();
        docker
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn socket(&self) -> PathBuf {
        self.path("docker.sock")
    }

    /// `docker -H … ARGS`.
    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .output()
            .expect("running docker")
    }

    fn docker_ok(&self, args: &[&str]) -> bool {
        self.docker(args).status.success()
    }

    /// `docker ARGS`, which must succeed; its stdout.
    fn must(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}{}\ndockerd: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.path("dockerd.err")).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A two-megabyte image: the static busybox and nothing else.
    fn import_image(&self) {
        let rootfs = self.path("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static");
        for applet in ["sh", "nc", "printf", "sleep", "cat"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let tar = self.path("rootfs.tar");
        support::netns::run(
            "tar",
            &[
                "-C",
                &rootfs.display().to_string(),
                "-cf",
                &tar.display().to_string(),
                ".",
            ],
        );
        self.must(&[
            "import",
            "-c",
            "ENV PATH=/bin",
            &tar.display().to_string(),
            IMAGE,
        ]);
    }

    /// A request from inside container `name` (started by `sleeper`, so
    /// it has the host's Python): (status, body).
    fn request_from(&self, name: &str, path: &str) -> (u16, String) {
        let python = absolute_python().display().to_string();
        let script = py_script("get.py")
            .canonicalize()
            .unwrap()
            .display()
            .to_string();
        let url = format!("http://169.254.169.254{path}");
        let out = self.must(&["exec", name, &python, &script, &url]);
        let report: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
        match report["status"].as_u64() {
            Some(status) => (
                status as u16,
                report["body"].as_str().unwrap_or_default().to_owned(),
            ),
            None => (0, report.to_string()),
        }
    }

    /// Starts a container that sleeps, with the host's Python mounted;
    /// returns its id.
    fn sleeper(&self, name: &str, args: &[&str]) -> String {
        let mounts = python_mounts();
        let mut all = vec!["run", "-d", "--name", name];
        all.extend(mounts.iter().map(String::as_str));
        all.extend_from_slice(args);
        all.extend_from_slice(&[IMAGE, "sleep", "600"]);
        self.must(&all)
    }

    fn ip_of(&self, name: &str) -> String {
        self.must(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", name])
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        for child in [self.dockerd.take(), self.containerd.take()]
            .into_iter()
            .flatten()
        {
            stop(child);
        }
        // What they leave behind: directories at fixed paths (removed only
        // if empty: a real daemon's are not), dockerd's netns mount, and the
        // containers' (now empty) cgroups in every hierarchy.
        for dir in [
            "/run/containerd/s",
            "/run/containerd",
            "/run/docker/plugins",
            "/run/docker",
        ] {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = Command::new("umount")
            .arg(self.path("exec/netns/default"))
            .stderr(Stdio::null())
            .status();
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let parent = h.path().join(self.cgroup_parent.trim_start_matches('/'));
                if let Ok(children) = std::fs::read_dir(&parent) {
                    for child in children.flatten().filter(|c| c.path().is_dir()) {
                        let _ = std::fs::remove_dir(child.path());
                    }
                }
                let _ = std::fs::remove_dir(&parent);
            }
        }
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The agent in Docker's namespace, watching it, with moto for STS.
struct Setup {
    docker: Docker,
    _moto: Helper,
    agent: Agent,
    _dir: tempfile::TempDir,
}

fn setup(rules: &str) -> Setup {
    setup_with(rules, "[\"*\", \"arn:aws:iam::123456789012:role/**\"]")
}

/// `setup`, with `attribution.allowed_env_roles = allowed`.
fn setup_with(rules: &str, allowed: &str) -> Setup {
    let docker = Docker::start();
    let moto = moto_in(&docker.ns);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("roles.d")).unwrap();
    std::fs::write(dir.path().join("roles.d/10-test.toml"), rules).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nmode = \"alias\"\n\
             [privileges]\nuser = \"61003\"\n\
             [attribution]\ndocker = true\ndocker_socket = \"{socket}\"\nallowed_env_roles = {allowed}\n\
             [instance]\naccount_id = \"123456789012\"\n\
             [credentials]\nsource = \"sts\"\nendpoint = \"{sts}\"\nduration_seconds = 900\nfirst_fetch_wait_ms = 5000\n\
             [roles]\ndir = \"{roles}\"\n",
            socket = docker.socket().display(),
            sts = moto.url,
            roles = dir.path().join("roles.d").display(),
        ),
    )
    .unwrap();
    let mut cmd = nsenter(&docker.ns);
    cmd.arg(agent_bin())
        .args(["run", "--log-level", "imds_agent=debug,info", "--config"])
        .arg(&config);
    agent_credentials(&mut cmd);
    let agent = Agent::start_run(cmd);
    agent.wait_for_log("watching Docker");
    Setup {
        docker,
        _moto: moto,
        agent,
        _dir: dir,
    }
}

impl Setup {
    /// Waits until the agent has registered container `name` (from
    /// Docker's event stream, in its own time).
    fn wait_registered(&self, name: &str) {
        self.agent
            .wait_for_log(&format!("container registered container={name} "));
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // The table and the address go with the namespace; nothing to clean
        // on the host.
    }
}

const LABEL_RULE: &str = "[[rule]]\ncontainer_label = { team = \"blue\" }\nrole = \"role-blue\"\n";

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn containers_get_the_role_their_environment_names() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup(LABEL_RULE);
    let d = &s.docker;
    d.sleeper("env-a", &["-e", "IAM_ROLE=role-env-a"]);
    d.sleeper(
        "env-b",
        &[
            "-e",
            "IAM_ROLE=arn:aws:iam::123456789012:role/team/role-env-b",
        ],
    );
    d.sleeper("plain", &[]);
    d.sleeper(
        "blue",
        &["--label", "team=blue", "-e", "IAM_ROLE=role-env-ignored"],
    );
    d.sleeper("bad-env", &["-e", "IAM_ROLE=not a role!"]);
    // The 404s below mean something only for registered containers (an
    // unregistered one gets 404 too).
    for name in ["env-a", "env-b", "plain", "blue", "bad-env"] {
        s.wait_registered(name);
    }
    let got = d.request_from("env-a", ROLES);
    assert_eq!(got, (200, "role-env-a".to_owned()), "{}", s.agent.logs());
    let got = d.request_from("env-b", ROLES);
    assert_eq!(got, (200, "role-env-b".to_owned()), "{}", s.agent.logs());
    assert_eq!(
        d.request_from("blue", ROLES),
        (200, "role-blue".to_owned()),
        "a rule beats the environment"
    );
    assert_eq!(
        d.request_from("plain", ROLES).0,
        404,
        "no IAM_ROLE, no rule, no default: no role"
    );
    assert_eq!(d.request_from("bad-env", ROLES).0, 404);
    let (status, body) = d.request_from("env-a", &format!("{ROLES}role-env-a"));
    assert_eq!(status, 200, "{body}");
    let a: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (_, body) = d.request_from("env-b", &format!("{ROLES}role-env-b"));
    let b: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(a["AccessKeyId"], b["AccessKeyId"]);
    assert_eq!(
        d.request_from("env-a", &format!("{ROLES}role-env-b")).0,
        404
    );
    let logs = s.agent.logs();
    assert!(
        logs.contains("container registered") && logs.contains("container=env-a"),
        "{logs}"
    );
    assert!(
        logs.contains("ignoring the container's role variable"),
        "{logs}"
    );

    // A real SDK inside the container: botocore.
    let report = botocore_in(d, "env-a");
    assert_eq!(report["method"], "iam-role", "{report}");
    assert_eq!(report["access_key"], a["AccessKeyId"], "{report}");
}

/// The tests' Python as an absolute path (`python3` is looked up in PATH).
fn absolute_python() -> PathBuf {
    let python = python();
    if python.is_absolute() {
        return python;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(&python))
        .find(|p| p.exists())
        .expect("python3 in PATH")
}

/// `-v` options that make the host's Python, the tests' virtualenv (which
/// holds botocore) and tests/py visible, read-only, at the same paths.
fn python_mounts() -> Vec<String> {
    let python = absolute_python();
    let real = std::fs::canonicalize(&python).unwrap();
    // The interpreter's installation (`…/versions/3.11.7`, or `/usr`).
    let prefix = real.parent().and_then(Path::parent).unwrap().to_owned();
    let venv = python.parent().and_then(Path::parent).unwrap().to_owned();
    let scripts = py_script("").canonicalize().unwrap();
    let mut paths: Vec<PathBuf> = ["/usr", "/lib", "/lib64", "/etc/ssl"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    paths.extend([prefix, venv, scripts]);
    paths
        .iter()
        .flat_map(|p| ["-v".to_owned(), format!("{0}:{0}:ro", p.display())])
        .collect()
}

/// botocore_client.py in container `name` (started by `sleeper`).
fn botocore_in(d: &Docker, name: &str) -> serde_json::Value {
    let python = absolute_python().display().to_string();
    let script = py_script("botocore_client.py")
        .canonicalize()
        .unwrap()
        .display()
        .to_string();
    let out = d.must(&[
        "exec",
        "-e",
        "AWS_CONFIG_FILE=/dev/null",
        "-e",
        "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
        name,
        &python,
        &script,
        "http://169.254.169.254/",
    ]);
    serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{out}: {e}"))
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn a_container_in_a_freed_address_never_gets_the_previous_role() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup("");
    let d = &s.docker;
    let mut previous: Option<(String, String)> = None;
    for round in 0..4 {
        let name = format!("round-{round}");
        let role = format!("role-round-{round}");
        d.sleeper(&name, &["-e", &format!("IAM_ROLE={role}")]);
        let ip = d.ip_of(&name);
        if let Some((old_ip, old_role)) = &previous {
            assert_eq!(&ip, old_ip, "Docker reused the address at once");
            // Its very first request, registered yet or not: never the
            // previous container's role.
            let (_, body) = d.request_from(&name, ROLES);
            assert_ne!(&body, old_role, "round {round}");
        }
        s.wait_registered(&name);
        assert_eq!(d.request_from(&name, ROLES), (200, role.clone()));
        d.must(&["rm", "-f", &name]);
        previous = Some((ip, role));
    }
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn host_network_containers_are_told_apart_by_cgroup() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup(LABEL_RULE);
    let d = &s.docker;
    d.sleeper(
        "host-one",
        &["--network", "host", "-e", "IAM_ROLE=role-host-one"],
    );
    d.sleeper(
        "host-two",
        &["--network", "host", "-e", "IAM_ROLE=role-host-two"],
    );
    d.sleeper("host-blue", &["--network", "host", "--label", "team=blue"]);
    for name in ["host-one", "host-two", "host-blue"] {
        s.wait_registered(name);
    }
    assert_eq!(
        d.request_from("host-one", ROLES),
        (200, "role-host-one".to_owned())
    );
    assert_eq!(
        d.request_from("host-two", ROLES),
        (200, "role-host-two".to_owned())
    );
    assert_eq!(
        d.request_from("host-blue", ROLES),
        (200, "role-blue".to_owned())
    );
    assert_eq!(
        d.request_from("host-one", &format!("{ROLES}role-host-two"))
            .0,
        404
    );
    let logs = s.agent.wait_for_log("by cgroup");
    assert!(logs.contains("container host-one"), "{logs}");
    // A container that stops takes its role with it.
    d.must(&["rm", "-f", "host-two"]);
    s.agent.wait_for_log("container gone container=host-two ");
}

/// The user a test hands a cgroup subtree to.
const ATTACKER: u32 = 4242;

/// Every way a local user or a container could pass for another container,
/// each performed:
/// - a cgroup the attacker makes in its own subtree, named after a running
///   container's id (which any user reads from `/proc/<pid>/cgroup`), as
///   the cgroupfs driver names it (`<id>`) and as systemd's does
///   (`docker-<id>.scope`): before, the name alone made it that container;
/// - a `uid = 0` rule and a container whose process is root;
/// - a sidecar in the victim's network namespace (`--network
///   container:victim`): before, it got the victim's role by address;
/// - `docker kill -s HUP` (a routine reload), which leaves the container
///   running: before, the agent forgot the container until its next event.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn no_one_passes_for_a_container() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = setup_with(
        "[[rule]]\nuid = 0\nrole = \"role-root\"\n",
        "[\"role-victim\", \"app-*\"]",
    );
    let d = &s.docker;
    d.sleeper("victim", &["-e", "IAM_ROLE=role-victim"]);
    s.wait_registered("victim");
    let victim = || d.request_from("victim", ROLES);
    assert_eq!(victim(), (200, "role-victim".to_owned()));

    // A look-alike cgroup of the attacker's own.
    let pid = d.must(&["inspect", "-f", "{{.State.Pid}}", "victim"]);
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("the victim's cgroup v2 path");
    let id = path.rsplit('/').next().unwrap().to_owned();
    assert_eq!(id.len(), 64, "{path}");
    let own = support::cgroups::Cgroups::new(&["mine"]);
    own.delegate("mine", ATTACKER);
    for forged in [id.clone(), format!("docker-{id}.scope")] {
        let prefix = own.exec_prefix_as(&d.ns.name, "mine", &forged, ATTACKER);
        let got = support::python_get(&prefix, &format!("http://169.254.169.254{ROLES}"), "5");
        assert_eq!(got["uid"], ATTACKER, "{got}");
        assert_eq!(got["status"], 404, "{forged}: {got}\n{}", s.agent.logs());
        let by_name = support::python_get(
            &prefix,
            &format!("http://169.254.169.254{ROLES}role-victim"),
            "5",
        );
        assert_eq!(by_name["status"], 404, "{forged}: {by_name}");
    }

    // `uid = 0` is for processes on the host, not for a container's root.
    let host_root = support::python_get(
        &[
            "nsenter".to_owned(),
            format!("--net=/run/netns/{}", d.ns.name),
        ],
        &format!("http://169.254.169.254{ROLES}"),
        "5",
    );
    assert_eq!(host_root["body"], "role-root", "{host_root}");
    d.sleeper("host-root", &["--network", "host"]);
    s.wait_registered("host-root");
    assert_eq!(
        d.request_from("host-root", ROLES).0,
        404,
        "a container's root matched a uid rule"
    );

    // A sidecar in the victim's network: an address can't tell them apart,
    // so neither gets a role by it.
    d.sleeper("sidecar", &["--network", "container:victim"]);
    s.wait_registered("sidecar");
    assert_eq!(
        d.request_from("sidecar", ROLES).0,
        404,
        "{}",
        s.agent.logs()
    );
    assert_eq!(victim().0, 404);
    d.must(&["rm", "-f", "sidecar"]);
    s.agent.wait_for_log("container gone container=sidecar ");
    assert_eq!(victim(), (200, "role-victim".to_owned()));

    // `app-*` allows names in the agent's own account, not a name like it
    // in another: no role, and STS is never asked for it.
    d.sleeper("greedy", &["-e", "IAM_ROLE=app-x@111111111111"]);
    s.wait_registered("greedy");
    assert_eq!(d.request_from("greedy", ROLES).0, 404);
    assert_eq!(d.request_from("greedy", &format!("{ROLES}app-x")).0, 404);
    assert!(
        !s.agent.logs().contains("role/app-x"),
        "STS was asked for another account's role:\n{}",
        s.agent.logs()
    );

    // A signal the container survives changes nothing.
    let registered = || {
        s.agent
            .logs()
            .matches("container registered container=victim ")
            .count()
    };
    let before = registered();
    d.must(&["kill", "-s", "HUP", "victim"]);
    wait_until(
        "the victim inspected again after its kill event",
        Duration::from_secs(15),
        || registered() > before,
    );
    assert_eq!(victim(), (200, "role-victim".to_owned()));
    assert!(
        !s.agent.logs().contains("container gone container=victim "),
        "{}",
        s.agent.logs()
    );
}
