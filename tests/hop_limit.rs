//! `--hop-limit` (EC2's HttpPutResponseHopLimit) with a real router in
//! between: client namespace → router namespace → agent namespace. The
//! token response leaves the agent with the configured IP TTL; with a limit
//! of 1 the router drops it, so the client never gets a token and (in
//! `optional` mode) falls back to IMDSv1, exactly as on EC2. This is also
//! the IMDSv1-fallback test of botocore, and shows that the Rust SDK, which
//! never falls back, gets nothing.
//!
//! Needs root (network namespaces); everything it creates is inside its own
//! namespaces and removed at the end.

mod support;

use std::process::Command;

use support::netns::{NetNs, link};
use support::{Agent, agent_bin, botocore, rust_sdk};

const AGENT_IP: &str = "10.77.1.1";

struct Topology {
    agent: NetNs,
    _router: NetNs,
    client: NetNs,
}

fn topology() -> Topology {
    let agent = NetNs::new("ha");
    let router = NetNs::new("hr");
    let client = NetNs::new("hc");
    link(&agent, "10.77.1.1/24", &router, "10.77.1.2/24");
    link(&router, "10.77.2.1/24", &client, "10.77.2.2/24");
    router.sysctl("net.ipv4.ip_forward=1");
    agent.ip(&["route", "add", "10.77.2.0/24", "via", "10.77.1.2"]);
    client.ip(&["route", "add", "default", "via", "10.77.2.1"]);
    Topology {
        agent,
        _router: router,
        client,
    }
}

fn agent_in(ns: &NetNs, hop_limit: &str, http_tokens: &str) -> Agent {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, agent_bin(), "dev"])
        .args(["--listen", &format!("{AGENT_IP}:80")])
        .args([
            "--hop-limit",
            hop_limit,
            "--http-tokens",
            http_tokens,
            "--log-level",
            "debug",
        ]);
    Agent::start(cmd)
}

fn botocore_from(t: &Topology) -> serde_json::Value {
    let prefix = t.client.exec_prefix();
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    botocore(&format!("http://{AGENT_IP}/"), &prefix, &[])
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn hop_limit_1_behind_a_router_falls_back_to_imdsv1() {
    let t = topology();
    let agent = agent_in(&t.agent, "1", "optional");
    let report = botocore_from(&t);
    assert_eq!(report["method"], "iam-role", "{report}");
    assert_eq!(report["access_key"], "ASIAIMDSAGENTDEMO000");
    let logs = agent.wait_for_log("credentials request");
    assert!(
        logs.contains("class=\"token\""),
        "the PUT reached the agent:\n{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("credentials request") && l.contains("imds_version=\"v1\"")),
        "credentials were fetched without a token:\n{logs}"
    );
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("credentials request") && l.contains("imds_version=\"v2\"")),
        "{logs}"
    );
    let sdk = rust_sdk_from(&t);
    assert!(
        sdk["error"].is_string(),
        "the Rust SDK never falls back to v1: {sdk}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn hop_limit_2_lets_the_token_through_one_router() {
    let t = topology();
    let agent = agent_in(&t.agent, "2", "optional");
    let report = botocore_from(&t);
    assert_eq!(report["method"], "iam-role", "{report}");
    let logs = agent.wait_for_log("credentials request");
    assert_eq!(report["region"], "us-east-1", "{logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains("credentials request") && l.contains("imds_version=\"v2\"")),
        "{logs}"
    );
    let sdk = rust_sdk_from(&t);
    assert_eq!(sdk["access_key"], "ASIAIMDSAGENTDEMO000", "{sdk}");
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn hop_limit_1_with_tokens_required_gives_nothing_behind_a_router() {
    let t = topology();
    let _agent = agent_in(&t.agent, "1", "required");
    let report = botocore_from(&t);
    assert_eq!(report["method"], serde_json::Value::Null, "{report}");
}

/// The Rust SDK's credentials provider inside the client namespace.
fn rust_sdk_from(t: &Topology) -> serde_json::Value {
    let endpoint = format!("http://{AGENT_IP}");
    rust_sdk(&t.client.exec_prefix(), "rust_sdk_client", &endpoint, true)
}

/// Not a test of its own: the Rust SDK client `rust_sdk_from` starts.
#[test]
#[ignore = "a client process that the tests start"]
fn rust_sdk_client() {
    support::rust_sdk_child();
}
