//! A stand-in for EC2's IMDS and for a container on a bridge, in network
//! namespaces of the test's own.
//!
//! `FakeEc2::beside(host)` makes an "upstream" namespace linked to `host`
//! that answers on 169.254.169.254:80 (tests/py/fake_ec2_imds.py: IMDSv2
//! only, with instance credentials, identity credentials and user data that
//! must never be passed on) and records every request it gets.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use super::netns::{NetNs, link, unique};
use super::{py_script, python, python_get};

/// The fake IMDS and its namespace; killed and deleted on drop.
pub struct FakeEc2 {
    pub upstream: NetNs,
    fake: Child,
}

impl FakeEc2 {
    /// Links a new namespace to `host` (10.99.0.1/30 ↔ 10.99.0.2/30),
    /// routes 169.254.169.254 from `host` to it and starts the fake there.
    pub fn beside(host: &NetNs) -> FakeEc2 {
        let upstream = NetNs::new("eu");
        link(host, "10.99.0.1/30", &upstream, "10.99.0.2/30");
        host.ip(&["route", "add", "169.254.169.254/32", "via", "10.99.0.2"]);
        upstream.ip(&["addr", "add", "169.254.169.254/32", "dev", "lo"]);
        // Answers could find their way back to any client of the host.
        upstream.ip(&["route", "add", "default", "via", "10.99.0.1"]);
        let mut fake = Command::new("ip")
            .args(["netns", "exec", &upstream.name])
            .arg(python())
            .arg(py_script("fake_ec2_imds.py"))
            .args(["169.254.169.254", "80"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(fake.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        FakeEc2 { upstream, fake }
    }

    /// Every request the fake got, as `METHOD /path`.
    pub fn requests(&self) -> Vec<String> {
        let seen = python_get(
            &self.upstream.exec_prefix(),
            "http://169.254.169.254/__requests",
            "5",
        );
        let list: Vec<(String, String)> =
            serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
        list.into_iter().map(|(m, p)| format!("{m} {p}")).collect()
    }
}

impl Drop for FakeEc2 {
    fn drop(&mut self) {
        let _ = self.fake.kill();
        let _ = self.fake.wait();
    }
}

/// A client namespace behind a bridge called `br-…` (a container
/// interface) in `host`, which has 10.98.0.1/24 on the bridge; the client
/// is 10.98.0.2/24 with its default route via the bridge.
pub fn bridged_client(host: &NetNs) -> NetNs {
    let bridge = format!("br-{}", unique("e"));
    super::netns::client_behind(host, 98, Some(&bridge), "default")
}
