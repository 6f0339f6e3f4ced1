//! botocore, the Python SDK's core, against the agent: the credential chain
//! and the region fetcher as they run on EC2.

mod support;

use support::{Agent, botocore};

#[test]
fn botocore_gets_credentials_and_region_with_tokens() {
    let agent = Agent::dev(&[]);
    let report = botocore(&format!("{}/", agent.url()), &[], &[]);
    assert_eq!(report["method"], "iam-role", "{report}");
    assert_eq!(report["access_key"], "ASIAIMDSAGENTDEMO000");
    assert_eq!(
        report["secret_key"],
        "imdsAgentDemoSecretKeyNotValidAnywhere00"
    );
    assert!(report["token"].as_str().unwrap().starts_with("IQoJ"));
    assert_eq!(report["region"], "us-east-1");
    let logs = agent.wait_for_log("credentials request");
    assert!(
        logs.contains("imds_version=\"v2\""),
        "botocore used a token:\n{logs}"
    );
}

#[test]
fn botocore_with_tokens_required() {
    let agent = Agent::dev(&["--http-tokens", "required"]);
    let report = botocore(&format!("{}/", agent.url()), &[], &[]);
    assert_eq!(report["method"], "iam-role", "{report}");
    assert_eq!(report["region"], "us-east-1");
}

#[test]
fn botocore_with_no_role_finds_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[credentials]\naccess_key_id = \"ASIAEXAMPLE123456789\"\nsecret_access_key = \"s\"\nsession_token = \"t\"\n",
    )
    .unwrap();
    let agent = Agent::dev(&["--config", path.to_str().unwrap()]);
    let report = botocore(&format!("{}/", agent.url()), &[], &[]);
    assert_eq!(report["method"], serde_json::Value::Null, "{report}");
}
