//! Network namespaces for tests, deleted (with their veth pairs) on drop.
//! Only namespaces the test made are touched; the host's interfaces,
//! addresses and sysctls never are.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short name: interface names are limited to 15 bytes.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// Runs `ip <args>` and panics with its stderr if it fails.
pub fn ip(args: &[&str]) {
    run("ip", args);
}

/// Runs a command, panicking with its output on failure.
pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with `lo` up.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(prefix: &str) -> NetNs {
        let name = unique(prefix);
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// `ip netns exec <ns> <program> <args>` as a command prefix.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// Sets a sysctl inside this namespace only (`net.*` keys are per
    /// namespace).
    pub fn sysctl(&self, key_value: &str) {
        run(
            "ip",
            &["netns", "exec", &self.name, "sysctl", "-qw", key_value],
        );
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Connects `a` and `b` with a veth pair, addresses `a_addr` and `b_addr`
/// (CIDR), both ends up; the two interfaces' names.
pub fn link(a: &NetNs, a_addr: &str, b: &NetNs, b_addr: &str) -> (String, String) {
    let a_if = unique("va");
    let b_if = unique("vb");
    ip(&[
        "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
        &b.name,
    ]);
    a.ip(&["addr", "add", a_addr, "dev", &a_if]);
    b.ip(&["addr", "add", b_addr, "dev", &b_if]);
    a.ip(&["link", "set", &a_if, "up"]);
    b.ip(&["link", "set", &b_if, "up"]);
    (a_if, b_if)
}

/// A client namespace behind a veth from `host`, the host's end holding
/// `10.<subnet>.0.1/24` (or enslaved to a new `bridge` that holds it), the
/// client `10.<subnet>.0.2/24` with a route to `route` through the host.
pub fn client_behind(host: &NetNs, subnet: u8, bridge: Option<&str>, route: &str) -> NetNs {
    let client = NetNs::new("hk");
    let host_if = unique("vh");
    let client_if = unique("vk");
    ip(&[
        "link",
        "add",
        &host_if,
        "netns",
        &host.name,
        "type",
        "veth",
        "peer",
        "name",
        &client_if,
        "netns",
        &client.name,
    ]);
    let gateway = format!("10.{subnet}.0.1");
    let on = match bridge {
        Some(bridge) => {
            host.ip(&["link", "add", bridge, "type", "bridge"]);
            host.ip(&["link", "set", bridge, "up"]);
            host.ip(&["link", "set", &host_if, "master", bridge]);
            bridge
        }
        None => host_if.as_str(),
    };
    host.ip(&["addr", "add", &format!("{gateway}/24"), "dev", on]);
    host.ip(&["link", "set", &host_if, "up"]);
    client.ip(&[
        "addr",
        "add",
        &format!("10.{subnet}.0.2/24"),
        "dev",
        &client_if,
    ]);
    client.ip(&["link", "set", &client_if, "up"]);
    client.ip(&["route", "add", route, "via", &gateway]);
    client
}
