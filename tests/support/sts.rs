//! A real STS for the tests (moto_server, from PyPI) and a proxy in front of
//! it that counts calls and injects faults (tests/py/sts_proxy.py).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use super::{py_script, python, raw};

/// A Python helper process, killed on drop.
pub struct Helper {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(script: &str, args: &[&str], stderr: Stdio) -> Helper {
    start_in(&[], script, args, stderr)
}

/// Starts `script` behind `wrapper` (`ip netns exec NS`) on a port it
/// picks itself (port 0: no other test can take it in between), waiting for
/// its ready line, which names the port.
fn start_in(wrapper: &[String], script: &str, args: &[&str], stderr: Stdio) -> Helper {
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut cmd = Command::new(program);
            cmd.args(rest).arg(python());
            cmd
        }
        None => Command::new(python()),
    };
    let mut child = cmd
        .arg(py_script(script))
        .arg("0")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {script}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reading the ready line");
    let port: u16 = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{script} did not start: {line:?}"));
    Helper {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// moto_server, shared by the tests of one test binary (it exits when the
/// binary does).
pub fn moto() -> &'static str {
    static MOTO: OnceLock<(Helper, String)> = OnceLock::new();
    &MOTO
        .get_or_init(|| {
            // moto logs every request; the tests read the proxy instead.
            let helper = start("run_moto.py", &[], Stdio::null());
            let url = helper.url.clone();
            (helper, url)
        })
        .1
}

/// Gives an agent's command its own credentials for STS (fixed keys that
/// moto accepts) through the environment, the standard chain's first
/// source, and nothing else to read.
pub fn agent_credentials(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        )
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL_STS")
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
}

/// A moto_server of its own inside network namespace `ns` (on its
/// 127.0.0.1), for an agent that runs there.
pub fn moto_in(ns: &super::netns::NetNs) -> Helper {
    start_in(&ns.exec_prefix(), "run_moto.py", &[], Stdio::null())
}

/// The counting, fault-injecting proxy in front of moto.
pub struct StsProxy {
    helper: Helper,
    /// The command prefix that enters its network namespace (empty: the
    /// test's own): its control API is reached through it too.
    wrapper: Vec<String>,
    /// Its own moto, when it runs in another namespace.
    _moto: Option<Helper>,
}

impl StsProxy {
    pub fn start() -> StsProxy {
        StsProxy {
            helper: start("sts_proxy.py", &[moto()], Stdio::inherit()),
            wrapper: Vec::new(),
            _moto: None,
        }
    }

    /// A proxy and a moto of its own behind `wrapper` (`nsenter -t PID -n
    /// --`): in the network namespace of a machine, for an agent there.
    pub fn start_behind(wrapper: &[String]) -> StsProxy {
        let moto = start_in(wrapper, "run_moto.py", &[], Stdio::null());
        StsProxy {
            helper: start_in(wrapper, "sts_proxy.py", &[&moto.url], Stdio::inherit()),
            wrapper: wrapper.to_vec(),
            _moto: Some(moto),
        }
    }

    pub fn url(&self) -> &str {
        &self.helper.url
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.helper
            .url
            .trim_start_matches("http://")
            .parse()
            .unwrap()
    }

    /// Every call it saw.
    pub fn calls(&self) -> Vec<serde_json::Value> {
        if !self.wrapper.is_empty() {
            let reply = super::python_get(
                &self.wrapper,
                &format!("{}/__proxy/calls", self.helper.url),
                "10",
            );
            let body = reply["body"].as_str().unwrap_or_else(|| panic!("{reply}"));
            return serde_json::from_str(body).expect("calls as JSON");
        }
        let reply = raw(
            self.addr(),
            b"GET /__proxy/calls HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n",
        );
        serde_json::from_slice(&reply.body).expect("calls as JSON")
    }

    /// How many calls of `action` it saw.
    pub fn count(&self, action: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c["action"] == action)
            .count()
    }

    /// `pass`, `error500`, `throttle`, `denied` or `drop`, for `actions`
    /// (all when `None`), after `delay` seconds.
    pub fn set_mode(&self, mode: &str, actions: Option<&[&str]>, delay: f64) {
        let body =
            serde_json::json!({ "mode": mode, "actions": actions, "delay": delay }).to_string();
        let request = format!(
            "POST /__proxy/mode HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(raw(self.addr(), request.as_bytes()).status, 200);
    }
}

impl StsProxy {
    /// Makes GetSessionToken accept only the TOTP codes of `secret` (base32).
    pub fn check_totp(&self, secret: &str) {
        let body = serde_json::json!({ "secret": secret }).to_string();
        let request = format!(
            "POST /__proxy/totp HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(raw(self.addr(), request.as_bytes()).status, 200);
    }

    /// Moves every `<Expiration>` moto answers `seconds` later.
    pub fn set_offset(&self, seconds: u64) {
        self.set_offset_of(seconds as i64, None);
    }

    /// Moves the `<Expiration>` of `actions` (all when `None`) `seconds`
    /// later, or earlier when negative.
    pub fn set_offset_of(&self, seconds: i64, actions: Option<&[&str]>) {
        let body = serde_json::json!({ "seconds": seconds, "actions": actions }).to_string();
        let request = format!(
            "POST /__proxy/offset HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(raw(self.addr(), request.as_bytes()).status, 200);
    }
}
