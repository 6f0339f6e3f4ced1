//! The Rust SDK's own IMDS client and credentials provider (aws-config)
//! against the agent: a real SDK that never falls back to IMDSv1.

mod support;

use std::time::{Duration, SystemTime};

use aws_config::imds::client::Client;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::ProvideCredentials;
use support::Agent;

fn provider_config() -> ProviderConfig {
    let http = aws_smithy_http_client::Builder::new().build_http();
    ProviderConfig::without_region().with_http_client(http)
}

fn imds_client(agent: &Agent) -> Client {
    Client::builder()
        .configure(&provider_config())
        .endpoint(agent.url())
        .expect("endpoint")
        .build()
}

async fn check_credentials(agent: &Agent) {
    let provider = ImdsCredentialsProvider::builder()
        .configure(&provider_config())
        .imds_client(imds_client(agent))
        .build();
    let creds = provider
        .provide_credentials()
        .await
        .expect("credentials from the agent");
    assert_eq!(creds.access_key_id(), "ASIAIMDSAGENTDEMO000");
    assert_eq!(
        creds.secret_access_key(),
        "imdsAgentDemoSecretKeyNotValidAnywhere00"
    );
    assert!(creds.session_token().is_some_and(|t| t.starts_with("IQoJ")));
    let expiry = creds.expiry().expect("an expiry");
    let left = expiry.duration_since(SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(15 * 60),
        "at least 15 minutes left: {left:?}"
    );
}

#[tokio::test]
async fn credentials_with_tokens_optional() {
    let agent = Agent::dev(&[]);
    check_credentials(&agent).await;
    let logs = agent.wait_for_log("imds_version=\"v2\"");
    assert!(
        logs.contains("credentials request") && logs.contains("imds_version=\"v2\""),
        "{logs}"
    );
}

#[tokio::test]
async fn credentials_with_tokens_required() {
    let agent = Agent::dev(&["--http-tokens", "required"]);
    check_credentials(&agent).await;
}

#[tokio::test]
async fn metadata_through_the_sdk_client() {
    let agent = Agent::dev(&["--http-tokens", "required"]);
    let client = imds_client(&agent);
    let region = client
        .get("/latest/meta-data/placement/region")
        .await
        .expect("region");
    assert_eq!(region.as_ref(), "us-east-1");
    let doc = client
        .get("/latest/dynamic/instance-identity/document")
        .await
        .expect("identity document");
    let doc: serde_json::Value = serde_json::from_str(doc.as_ref()).unwrap();
    assert_eq!(doc["accountId"], "123456789012");
    let missing = client.get("/latest/meta-data/nope").await;
    assert!(missing.is_err(), "404 is an error for the SDK");
}

#[tokio::test]
async fn region_provider_reads_the_agent() {
    let agent = Agent::dev(&[]);
    let region = aws_config::imds::region::ImdsRegionProvider::builder()
        .configure(&provider_config())
        .imds_client(imds_client(&agent))
        .build()
        .region()
        .await;
    assert_eq!(region.map(|r| r.to_string()).as_deref(), Some("us-east-1"));
}
