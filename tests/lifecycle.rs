//! The credentials lifecycle end to end, as an operator runs the agent:
//! `run` with cgroup attribution (on loopback, `host.mode = "off"`),
//! `roles.default` and sessions named after workloads, STS from moto
//! through the counting proxy, and real botocore and aws-config clients in
//! real cgroups. Every workload's first call gets credentials; a workload
//! that goes quiet past its SDK's refresh window refreshes from the cache;
//! a bootstrap re-post or a profile switch under load is never seen by a
//! workload; a handed-in MFA code refreshes every role at once.
//!
//! Needs root (cgroups). Nothing is sent to 169.254.169.254.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::cgroups::Cgroups;
use support::sts::{StsProxy, agent_credentials};
use support::{Agent, admin_request, agent_bin, py_script, python, rust_sdk, wait_for_showing};

/// The agent's user.
const AGENT_UID: &str = "61004";

/// An agent's config, its cgroup tree (read as a host's root, so
/// `system.slice/web.service` is a system unit) and its STS.
struct Host {
    cgroups: Cgroups,
    proxy: StsProxy,
    dir: tempfile::TempDir,
}

impl Host {
    /// `credentials` and `rest` go into `[credentials]` and after
    /// `[roles]`; the defaults are the agent's own.
    fn new(credentials: &str, rest: &str) -> Host {
        Host::with_sts(credentials, rest, false)
    }

    /// `new`, with moto itself for STS when `direct` (no counting proxy:
    /// half the Python work per call; calls are counted from the agent's
    /// log).
    fn with_sts(credentials: &str, rest: &str, direct: bool) -> Host {
        let cgroups = Cgroups::new(&[]);
        let proxy = StsProxy::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("roles.d")).unwrap();
        let config = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\
             [host]\nmode = \"off\"\n\
             [privileges]\nuser = \"{AGENT_UID}\"\n\
             [attribution]\ncgroups = true\ncgroup_root = \"{root}\"\n\
             [instance]\naccount_id = \"123456789012\"\n\
             [credentials]\nsource = \"sts\"\nendpoint = \"{sts}\"\n{credentials}\n\
             [roles]\ndir = \"{roles}\"\ndefault = \"app\"\n{rest}",
            root = cgroups.dir("").display(),
            sts = if direct {
                support::sts::moto()
            } else {
                proxy.url()
            },
            roles = dir.path().join("roles.d").display(),
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        Host {
            cgroups,
            proxy,
            dir,
        }
    }

    fn start(&self) -> Agent {
        let mut cmd = Command::new(agent_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(self.dir.path().join("config.toml"));
        agent_credentials(&mut cmd);
        let agent = Agent::start_run(cmd);
        agent.wait_ready_or_waiting();
        agent
    }

    /// Makes cgroup `path` (`system.slice/web.service`), as root: what
    /// systemd does for a unit.
    fn cgroup(&self, path: &str) -> PathBuf {
        let dir = self.cgroups.dir(path);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A command prefix that runs a program in cgroup `path`.
    fn in_cgroup(&self, path: &str) -> Vec<String> {
        let procs = self.cgroup(path).join("cgroup.procs");
        vec![
            "sh".into(),
            "-c".into(),
            format!("echo $$ > {} && exec \"$@\"", procs.display()),
            "sh".into(),
        ]
    }

    /// The `AssumeRole` calls STS saw, by session name.
    fn assumed_by_session(&self) -> BTreeMap<String, usize> {
        let mut sessions = BTreeMap::new();
        for call in self.proxy.calls() {
            if call["action"] == "AssumeRole" {
                let name = call["params"]["RoleSessionName"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned();
                *sessions.entry(name).or_default() += 1;
            }
        }
        sessions
    }
}

impl Agent {
    /// Waits until the admin socket answers (`status` may say "not ready"
    /// while roles wait for a base or a code).
    fn wait_ready_or_waiting(&self) {
        wait_for_showing(
            "the admin socket to answer",
            Duration::from_secs(30),
            || {
                let out = self.cli(&["status"], "");
                match out.status.code() {
                    Some(0 | 1) => Ok(()),
                    _ => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
                }
            },
        );
    }

    fn endpoint(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The engine's status of every role, from the admin socket.
    fn roles(&self) -> Vec<serde_json::Value> {
        let (status, body) = admin_request(&self.socket, "GET", "/status", None);
        assert_eq!(status, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        body["sts"]["roles"].as_array().cloned().unwrap_or_default()
    }

    /// The status of the role whose session is `session`.
    fn session(&self, session: &str) -> Option<serde_json::Value> {
        self.roles()
            .into_iter()
            .find(|r| r["session_name"] == session)
    }
}

/// Runs a Python helper with `args`, returning its one JSON line.
fn helper(prefix: &[String], script: &str, args: &[&str]) -> serde_json::Value {
    let (program, rest) = match prefix.split_first() {
        Some((first, rest)) => (first.clone(), rest.to_vec()),
        None => (python().display().to_string(), Vec::new()),
    };
    let mut cmd = Command::new(program);
    cmd.args(rest);
    if !prefix.is_empty() {
        cmd.arg(python());
    }
    cmd.arg(py_script(script)).args(args);
    support::only_imds_credentials(&mut cmd);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{script}: {stdout}: {e}"))
}

/// The credentials STS issued, by session, from the agent's log.
fn issued_by_session(agent: &Agent) -> BTreeMap<String, usize> {
    let mut sessions = BTreeMap::new();
    for line in agent.logs().lines() {
        if line.contains("STS issued credentials")
            && let Some(session) = line.split(" session=").nth(1)
            && let Some(session) = session.split_whitespace().next()
        {
            *sessions.entry(session.to_owned()).or_default() += 1;
        }
    }
    sessions
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Not a test of its own: the Rust SDK client `rust_sdk` starts.
#[test]
#[ignore = "a client process that the tests start"]
fn rust_sdk_client() {
    support::rust_sdk_child();
}

/// A hundred system units appear and each makes its first call at once,
/// with the agent's defaults: a hundred successes (botocore: one attempt,
/// a one-second timeout), one AssumeRole per session; and aws-config's
/// first call, one attempt, too.
#[test]
fn a_hundred_new_units_each_get_credentials_on_their_first_call() {
    let host = Host::with_sts("", "", true);
    let agent = host.start();
    // A running host: the agent has made calls to STS before (moto's first
    // calls are slow), and one unit runs.
    let warm = helper(
        &host.in_cgroup("system.slice/warm.service"),
        "botocore_client.py",
        &[&agent.endpoint()],
    );
    assert_eq!(warm["method"], "iam-role", "{warm}");
    // Made by the clients as they start, as systemd makes a unit's.
    let dirs: Vec<String> = (0..100)
        .map(|i| {
            host.cgroups
                .dir(&format!("system.slice/app-{i}.service"))
                .display()
                .to_string()
        })
        .collect();
    // Started over two seconds, as a host's units start when it boots or
    // scales (a unit's cgroup exists from its start): moto, a Python STS
    // sharing two cores with the clients, answers some 60 calls a second
    // (STS answers hundreds; all at once, moto's queue alone outlasts
    // botocore's timeout).
    let mut args = vec![agent.endpoint(), "2".to_owned()];
    args.extend(dirs.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let reports = helper(&[], "botocore_many.py", &args);
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 100);
    let failed: Vec<&serde_json::Value> = reports
        .iter()
        .filter(|r| r["method"] != "iam-role" || !r["access_key"].is_string())
        .collect();
    let logs = agent.logs();
    let about: Vec<&str> = failed
        .iter()
        .filter_map(|r| r["cgroup"].as_str()?.rsplit('/').next())
        .collect();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| {
            about.iter().any(|unit| {
                l.contains(&format!("{unit} "))
                    || l.contains(&format!("{unit}\""))
                    || l.ends_with(*unit)
            })
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 100 first calls failed: {failed:?}\nwhat the agent logged of them:\n{}",
        failed.len(),
        lines.join("\n")
    );
    let mut ms: Vec<f64> = reports.iter().map(|r| r["ms"].as_f64().unwrap()).collect();
    ms.sort_by(f64::total_cmp);
    eprintln!(
        "first credentials of 100 new units: p50 {} ms, p99 {} ms",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99)
    );
    let sessions = issued_by_session(&agent);
    for i in 0..100 {
        assert_eq!(
            sessions.get(&format!("app-{i}.service")),
            Some(&1),
            "one AssumeRole for app-{i}.service: {sessions:?}"
        );
    }
    assert_eq!(sessions.values().sum::<usize>(), 101, "{sessions:?}");
    for i in 0..3 {
        let unit = format!("system.slice/rust-{i}.service");
        let report = rust_sdk(
            &host.in_cgroup(&unit),
            "rust_sdk_client",
            &agent.endpoint(),
            true,
        );
        assert!(report["access_key"].is_string(), "{report}");
        let issued = issued_by_session(&agent);
        assert_eq!(issued.get(&format!("rust-{i}.service")), Some(&1));
    }
}

/// A workload the agent does not prefetch for (a cgroup that is no unit)
/// goes quiet for longer than idle_ttl, then its SDK refreshes: the
/// credentials come from the cache at once, with no new STS call, because
/// its cgroup still lives. Once the cgroup is gone, so is the entry.
#[test]
fn a_quiet_workload_refreshes_from_the_cache_while_it_lives() {
    let host = Host::new("duration_seconds = 900\nidle_ttl_seconds = 5\n", "");
    let agent = host.start();
    let report = helper(
        &host.in_cgroup("batch/job-1"),
        "botocore_refresh.py",
        &[&agent.endpoint(), "12"],
    );
    assert!(report["error"].is_null(), "{report}\n{}", agent.logs());
    assert_eq!(
        report["first"], report["second"],
        "from the cache: {report}"
    );
    assert!(
        report["refresh_ms"].as_f64().unwrap() < 500.0,
        "no wait for STS: {report}"
    );
    assert_eq!(host.assumed_by_session().get("job-1"), Some(&1));
    // The workload is gone: its cgroup is removed, a walk of the tree
    // notices (a request from a new cgroup asks for one), and the entry
    // goes.
    std::fs::remove_dir(host.cgroups.dir("batch/job-1")).unwrap();
    let other = support::python_get(
        &host.in_cgroup("batch/job-2"),
        &format!(
            "{}latest/meta-data/iam/security-credentials/",
            agent.endpoint()
        ),
        "5",
    );
    assert_eq!(other["status"], 200, "{other}");
    wait_for_showing(
        "job-1's credentials to be dropped",
        Duration::from_secs(30),
        || match agent.session("job-1") {
            None => Ok(()),
            Some(status) => Err(status),
        },
    );
}

/// Workloads ask for their credentials without pause while the agent's own
/// identity changes under them: `rotate` is called twice mid-load. Every
/// answer is a credentials document, and the keys move to the new identity.
fn rotation_under_load(host: &Host, agent: &Agent, rotate: &dyn Fn(usize), new_key: &str) {
    let cgroups = ["system.slice/web.service", "batch/nightly"];
    // Both have credentials before the load starts.
    for cgroup in cgroups {
        let first = support::python_get(
            &host.in_cgroup(cgroup),
            &format!(
                "{}latest/meta-data/iam/security-credentials/app",
                agent.endpoint()
            ),
            "5",
        );
        assert!(
            first["body"].as_str().unwrap().contains("Success"),
            "{first}"
        );
    }
    let port = agent.addr.port().to_string();
    let loads: Vec<std::thread::JoinHandle<serde_json::Value>> = cgroups
        .iter()
        .map(|cgroup| {
            let prefix = host.in_cgroup(cgroup);
            let port = port.clone();
            std::thread::spawn(move || {
                helper(&prefix, "creds_loop.py", &["127.0.0.1", &port, "app", "6"])
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    rotate(1);
    std::thread::sleep(Duration::from_millis(1500));
    rotate(2);
    for (cgroup, load) in cgroups.iter().zip(loads) {
        let report = load.join().unwrap();
        let codes = report["codes"].as_object().unwrap();
        assert_eq!(
            codes.keys().collect::<Vec<_>>(),
            vec!["Success"],
            "{cgroup}: {report}\n{}",
            agent.logs()
        );
        assert!(report["requests"].as_u64().unwrap() > 20, "{report}");
        assert!(
            report["keys"].as_array().unwrap().len() >= 2,
            "{cgroup} saw the rotation: {report}"
        );
    }
    let last = host
        .proxy
        .calls()
        .into_iter()
        .rfind(|c| c["action"] == "AssumeRole")
        .unwrap();
    assert_eq!(last["key"], new_key);
}

#[test]
fn a_bootstrap_re_posted_under_load_is_never_seen_by_workloads() {
    let host = Host::new("base = \"bootstrap\"\n", "");
    let agent = host.start();
    let post = |n: usize| {
        let body = format!(
            "{{\"AccessKeyId\": \"AKIABOOTSTRAP{n:07}\", \"SecretAccessKey\": \"bootstrap-{n}\"}}"
        );
        let out = agent.cli(&["bootstrap"], &body);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    post(0);
    rotation_under_load(&host, &agent, &post, "AKIABOOTSTRAP0000002");
}

#[test]
fn a_profile_switch_under_load_is_never_seen_by_workloads() {
    let host = Host::new(
        "base = \"profiles\"\nprofile = \"p0\"\n",
        "[profiles.p0]\naccess_key_id = \"AKIAPROFILE000000000\"\nsecret_access_key = \"s0\"\n\
         [profiles.p1]\naccess_key_id = \"AKIAPROFILE000000001\"\nsecret_access_key = \"s1\"\n\
         [profiles.p2]\naccess_key_id = \"AKIAPROFILE000000002\"\nsecret_access_key = \"s2\"\n",
    );
    let agent = host.start();
    let switch = |n: usize| {
        let out = agent.cli(&["profile", "use", &format!("p{n}")], "");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    rotation_under_load(&host, &agent, &switch, "AKIAPROFILE000000002");
}

/// A person's MFA session ends while three units hold credentials; their
/// refreshes wait for a code. The code handed in is used at once: one
/// GetSessionToken, and every role refreshed, long before error_ttl.
#[test]
fn a_code_handed_in_refreshes_every_role_at_once() {
    let host = Host::new(
        "base = \"profiles\"\nduration_seconds = 1800\nerror_ttl_seconds = 3600\n",
        "[profiles.dev]\naccess_key_id = \"AKIADEVELOPER0000001\"\nsecret_access_key = \"devsecret\"\n\
         mfa_serial = \"arn:aws:iam::123456789012:mfa/dev\"\n",
    );
    let units = ["a.service", "b.service", "c.service"];
    for unit in units {
        host.cgroup(&format!("system.slice/{unit}"));
    }
    let agent = host.start();
    // MFA sessions that end 320 s after they begin: reused by every role
    // for their first 20 s (a session is reused while it has over 5
    // minutes left).
    host.proxy
        .set_offset_of(320 - 43_200, Some(&["GetSessionToken"]));
    let code = |code: &str| {
        let out = agent.cli(&["mfa"], &format!("{code}\n"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    code("111111");
    let keys = |agent: &Agent| -> Vec<String> {
        units
            .iter()
            .map(|u| {
                agent.session(u).map_or(String::new(), |r| {
                    r["access_key_suffix"].as_str().unwrap_or("").to_owned()
                })
            })
            .collect()
    };
    let first = wait_for_showing("every unit's credentials", Duration::from_secs(15), || {
        let keys = keys(&agent);
        if keys.iter().all(|k| !k.is_empty()) {
            Ok(keys)
        } else {
            Err(format!("{:?}", agent.roles()))
        }
    });
    assert_eq!(host.proxy.count("GetSessionToken"), 1);
    // Past the session's reuse: refreshes need a new code.
    std::thread::sleep(Duration::from_secs(21));
    assert!(agent.cli(&["refresh"], "").status.success());
    wait_for_showing(
        "every refresh to wait for a code",
        Duration::from_secs(15),
        || {
            let roles = agent.roles();
            let waiting = roles
                .iter()
                .filter(|r| r["error"].as_str().is_some_and(|e| e.contains("MFA code")))
                .count();
            if waiting == units.len() {
                Ok(())
            } else {
                Err(format!("{roles:?}"))
            }
        },
    );
    assert_eq!(keys(&agent), first, "served on meanwhile");
    code("222222");
    wait_for_showing(
        "every role refreshed with the new code",
        Duration::from_secs(5),
        || {
            let now = keys(&agent);
            if now.iter().zip(&first).all(|(n, f)| n != f && !n.is_empty()) {
                Ok(())
            } else {
                Err(format!("{:?}", agent.roles()))
            }
        },
    );
    let sessions: Vec<serde_json::Value> = host
        .proxy
        .calls()
        .into_iter()
        .filter(|c| c["action"] == "GetSessionToken")
        .collect();
    assert_eq!(sessions.len(), 2, "one session call per code: {sessions:?}");
    assert_eq!(sessions[1]["params"]["TokenCode"], "222222");
}
