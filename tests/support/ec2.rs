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
    /// The same on EC2's IPv6 address, `[fd00:ec2::254]:80`.
    fake_v6: Child,
}

impl FakeEc2 {
    /// Links a new namespace to `host` (10.99.0.1/30 ↔ 10.99.0.2/30, and
    /// fd99::1/64 ↔ fd99::2/64), routes 169.254.169.254 and fd00:ec2::254
    /// from `host` to it and starts the fake there, on both.
    pub fn beside(host: &NetNs) -> FakeEc2 {
        let upstream = NetNs::new("eu");
        let (host_if, upstream_if) = link(host, "10.99.0.1/30", &upstream, "10.99.0.2/30");
        host.ip(&["route", "add", "169.254.169.254/32", "via", "10.99.0.2"]);
        upstream.ip(&["addr", "add", "169.254.169.254/32", "dev", "lo"]);
        // Answers could find their way back to any client of the host.
        upstream.ip(&["route", "add", "default", "via", "10.99.0.1"]);
        // IPv6, without duplicate address detection (usable at once).
        host.ip(&["addr", "add", "fd99::1/64", "dev", &host_if, "nodad"]);
        upstream.ip(&["addr", "add", "fd99::2/64", "dev", &upstream_if, "nodad"]);
        upstream.ip(&["addr", "add", "fd00:ec2::254/128", "dev", "lo", "nodad"]);
        host.ip(&["-6", "route", "add", "fd00:ec2::254/128", "via", "fd99::2"]);
        upstream.ip(&["-6", "route", "add", "default", "via", "fd99::1"]);
        let fake = start_fake(&upstream, "169.254.169.254");
        let fake_v6 = start_fake(&upstream, "fd00:ec2::254");
        FakeEc2 {
            upstream,
            fake,
            fake_v6,
        }
    }

    /// Every request the fake got on 169.254.169.254, as `METHOD /path`.
    pub fn requests(&self) -> Vec<String> {
        self.requests_at("http://169.254.169.254")
    }

    /// Every request the fake got on [fd00:ec2::254].
    pub fn requests_v6(&self) -> Vec<String> {
        self.requests_at("http://[fd00:ec2::254]")
    }

    fn requests_at(&self, base: &str) -> Vec<String> {
        let seen = python_get(
            &self.upstream.exec_prefix(),
            &format!("{base}/__requests"),
            "5",
        );
        let list: Vec<(String, String)> =
            serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
        list.into_iter().map(|(m, p)| format!("{m} {p}")).collect()
    }
}

/// tests/py/fake_ec2_imds.py on `address`:80 in `upstream`, once ready.
fn start_fake(upstream: &NetNs, address: &str) -> Child {
    let mut fake = Command::new("ip")
        .args(["netns", "exec", &upstream.name])
        .arg(python())
        .arg(py_script("fake_ec2_imds.py"))
        .args([address, "80"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(fake.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the fake IMDS on {address}");
    fake
}

impl Drop for FakeEc2 {
    fn drop(&mut self) {
        for fake in [&mut self.fake, &mut self.fake_v6] {
            let _ = fake.kill();
            let _ = fake.wait();
        }
    }
}

/// A client namespace behind a bridge called `br-…` (a container
/// interface) in `host`, which has 10.98.0.1/24 on the bridge; the client
/// is 10.98.0.2/24 with its default route via the bridge.
pub fn bridged_client(host: &NetNs) -> NetNs {
    let bridge = format!("br-{}", unique("e"));
    super::netns::client_behind(host, 98, Some(&bridge), "default")
}
