//! The agent with `source = "sts"` against a real STS (moto), through a
//! proxy that counts calls and injects faults: real clients get assumed-role
//! credentials, concurrent first requests make one call, outages are ridden
//! out, MFA, bootstrap and profiles work through the CLI.

mod support;

use std::process::Command;
use std::time::Duration;

use support::sts::{StsProxy, agent_credentials, moto};
use support::{
    Agent, agent_bin, botocore, botocore_with, config_file, get, wait_for_showing, wait_until,
};

const ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/";

/// An agent in dev mode with `config`, its own credentials in the
/// environment (for the standard chain) and nothing else to read.
fn agent_with(config: &str) -> (Agent, tempfile::TempDir) {
    let (dir, path) = config_file(config);
    let mut cmd = Command::new(agent_bin());
    cmd.args(["dev", "--port", "0", "--config"]).arg(&path);
    agent_credentials(&mut cmd);
    (Agent::start(cmd), dir)
}

fn sts_config(proxy: &StsProxy, extra_credentials: &str, rest: &str) -> String {
    format!(
        "[instance]\naccount_id = \"123456789012\"\n\
         [credentials]\nsource = \"sts\"\nendpoint = \"{}\"\nduration_seconds = 900\nfirst_fetch_wait_ms = 3000\n{extra_credentials}\n{rest}",
        proxy.url()
    )
}

/// The credentials document for `role`, once it is not "being fetched"
/// (`ServiceUnavailable`): STS answers in its own time, and an SDK would
/// retry. These tests are about what comes after the first fetch.
fn creds_doc(agent: &Agent, role: &str) -> serde_json::Value {
    wait_for_showing(
        &format!("{role}'s credentials to be fetched"),
        Duration::from_secs(15),
        || {
            let reply = get(agent.addr, &format!("{ROLE_PATH}{role}"), &[]);
            assert_eq!(reply.status, 200, "{}", reply.text());
            let doc: serde_json::Value =
                serde_json::from_slice(&reply.body).expect("a JSON document");
            if doc["Code"] == "ServiceUnavailable" {
                Err(doc)
            } else {
                Ok(doc)
            }
        },
    )
}

/// Polls `f` for up to 15 s.
fn eventually(what: &str, f: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(15), f);
}

#[test]
fn real_clients_get_assumed_role_credentials() {
    let proxy = StsProxy::start();
    let (agent, _dir) = agent_with(&sts_config(&proxy, "", "[roles]\ndefault = \"app\"\n"));
    // botocore waits 1 s for IMDS: let the prefetch finish first.
    agent.wait_ready();
    let report = botocore_with(&format!("{}/", agent.url()), &[], &[], &[moto()]);
    assert_eq!(report["method"], "iam-role", "{report}");
    let arn = report["caller_arn"].as_str().expect("STS saw the caller");
    assert!(
        arn.starts_with("arn:aws:sts::123456789012:assumed-role/app/imds-agent-"),
        "{arn}"
    );
    let calls = proxy.calls();
    let assume: Vec<_> = calls
        .iter()
        .filter(|c| c["action"] == "AssumeRole")
        .collect();
    assert_eq!(assume.len(), 1, "{calls:?}");
    assert_eq!(
        assume[0]["params"]["RoleArn"],
        "arn:aws:iam::123456789012:role/app"
    );
    assert_eq!(assume[0]["params"]["DurationSeconds"], "900");
    assert_eq!(
        assume[0]["key"], "AKIAIOSFODNN7EXAMPLE",
        "signed with the agent's own keys"
    );
    let logs = agent.wait_for_log("STS issued credentials");
    assert!(logs.contains("STS issued credentials"), "{logs}");
    assert!(
        !logs.contains("wJalrXUtnFEMI"),
        "the base secret leaked into the log"
    );
}

#[tokio::test]
async fn the_rust_sdk_gets_assumed_role_credentials() {
    use aws_credential_types::provider::ProvideCredentials as _;
    let proxy = StsProxy::start();
    let (agent, _dir) = agent_with(&sts_config(&proxy, "", "[roles]\ndefault = \"app\"\n"));
    let config = aws_config::provider_config::ProviderConfig::without_region()
        .with_http_client(aws_smithy_http_client::Builder::new().build_http());
    let client = aws_config::imds::client::Client::builder()
        .configure(&config)
        .endpoint(agent.url())
        .unwrap()
        .build();
    let creds = aws_config::imds::credentials::ImdsCredentialsProvider::builder()
        .configure(&config)
        .imds_client(client)
        .build()
        .provide_credentials()
        .await
        .expect("credentials");
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new("us-east-1"))
            .endpoint_url(moto())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .credentials_provider(creds)
            .build(),
    );
    let who = sts
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity");
    let arn = who.arn().unwrap();
    assert!(
        arn.starts_with("arn:aws:sts::123456789012:assumed-role/app/imds-agent-"),
        "{arn}"
    );
}

#[test]
fn fifty_concurrent_first_requests_make_one_assume_role() {
    let proxy = StsProxy::start();
    // STS answers slowly, so every request arrives while the first fetch
    // (started by the agent's prefetch) is still under way.
    proxy.set_mode("pass", Some(&["AssumeRole"]), 1.0);
    let (agent, _dir) = agent_with(&sts_config(&proxy, "", "[roles]\ndefault = \"app\"\n"));
    let addr = agent.addr;
    let threads: Vec<_> = (0..50)
        .map(|_| std::thread::spawn(move || get(addr, &format!("{ROLE_PATH}app"), &[])))
        .collect();
    let keys: Vec<String> = threads
        .into_iter()
        .map(|t| {
            let reply = t.join().unwrap();
            assert_eq!(reply.status, 200);
            let doc: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
            assert_eq!(doc["Code"], "Success", "{doc}");
            doc["AccessKeyId"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "everyone got the same session"
    );
    assert_eq!(proxy.count("AssumeRole"), 1);
}

#[test]
fn an_sts_outage_is_ridden_out_on_cached_credentials() {
    let proxy = StsProxy::start();
    let (agent, _dir) = agent_with(&sts_config(&proxy, "", "[roles]\ndefault = \"app\"\n"));
    let first = creds_doc(&agent, "app")["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    // When they expire, as a timestamp an alert compares with time().
    let metrics = String::from_utf8_lossy(&agent.cli(&["metrics"], "").stdout).into_owned();
    let expiry: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("imds_credentials_expiry_timestamp_seconds{role=\"app\","))
        .and_then(|rest| rest.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no expiry gauge for app:\n{metrics}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now && expiry <= now + 900.0 + 60.0,
        "{expiry} against {now}"
    );
    for mode in ["error500", "throttle", "drop"] {
        proxy.set_mode(mode, None, 0.0);
        let before = proxy.count("AssumeRole");
        assert!(agent.cli(&["refresh"], "").status.success());
        eventually("a failed refresh", || proxy.count("AssumeRole") > before);
        eventually("the failure to be recorded", || {
            agent.cli(&["status"], "").status.code() == Some(0)
                && String::from_utf8_lossy(&agent.cli(&["status"], "").stdout)
                    .contains("\"sts_reachable\": false")
        });
        let served = creds_doc(&agent, "app");
        assert_eq!(served["Code"], "Success", "{mode}: {served}");
        assert_eq!(
            served["AccessKeyId"],
            first.as_str(),
            "{mode}: the cached keys are served"
        );
    }
    // Each failure counted by kind: the throttling apart from the rest.
    assert!(sts_calls(&agent, "AssumeRole", "throttled") >= 1.0);
    assert!(sts_calls(&agent, "AssumeRole", "error") >= 2.0);
    assert_eq!(sts_calls(&agent, "AssumeRole", "access_denied"), 0.0);
    // STS is back: the retry (with backoff) brings fresh credentials.
    proxy.set_mode("pass", None, 0.0);
    // Asked now, not at the end of the backoff (which grows with each
    // failure and can outlast the wait on a slow machine).
    assert!(agent.cli(&["refresh"], "").status.success());
    eventually("fresh credentials", || {
        creds_doc(&agent, "app")["AccessKeyId"] != first.as_str()
    });
    agent.wait_for_log("STS could not issue credentials");
}

#[test]
fn access_denied_is_a_clear_answer_not_a_crash() {
    let proxy = StsProxy::start();
    proxy.set_mode("denied", Some(&["AssumeRole"]), 0.0);
    let (agent, _dir) = agent_with(&sts_config(&proxy, "", "[roles]\ndefault = \"app\"\n"));
    let doc = creds_doc(&agent, "app");
    assert_eq!(doc["Code"], "AssumeRoleUnauthorizedAccess", "{doc}");
    let message = doc["Message"].as_str().unwrap();
    assert!(
        message.contains("AccessDenied") && message.contains("arn:aws:iam::123456789012:role/app"),
        "{message}"
    );
    assert!(doc.get("AccessKeyId").is_none());
    let report = botocore(&format!("{}/", agent.url()), &[], &[]);
    assert_eq!(
        report["method"],
        serde_json::Value::Null,
        "botocore finds no credentials: {report}"
    );
    // Many requests, one STS call: the refusal is cached.
    for _ in 0..20 {
        creds_doc(&agent, "app");
    }
    assert_eq!(proxy.count("AssumeRole"), 1);
    assert_eq!(
        agent.cli(&["status"], "").status.code(),
        Some(1),
        "not ready"
    );
    // What an operator alerts on: the refusal by kind, and not ready with
    // the reason.
    assert_eq!(sts_calls(&agent, "AssumeRole", "access_denied"), 1.0);
    assert_eq!(sts_calls(&agent, "AssumeRole", "success"), 0.0);
    let (status, body) = support::admin_request(&agent.socket, "GET", "/readyz", None);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with(
            "not ready:\n- role app has no valid credentials: AssumeRoleUnauthorizedAccess"
        ),
        "{body}"
    );
    let (status, body) = support::admin_request(&agent.socket, "GET", "/healthz", None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

/// `imds_sts_calls_total` of `action` and `outcome`, from the agent's
/// metrics.
fn sts_calls(agent: &Agent, action: &str, outcome: &str) -> f64 {
    let out = agent.cli(&["metrics"], "");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let prefix = format!("imds_sts_calls_total{{action=\"{action}\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
}

#[test]
fn bare_role_names_take_the_account_of_the_agents_own_credentials() {
    let proxy = StsProxy::start();
    let config = format!(
        "[credentials]\nsource = \"sts\"\nendpoint = \"{}\"\nfirst_fetch_wait_ms = 3000\n[roles]\ndefault = \"app\"\n",
        proxy.url()
    );
    let (agent, _dir) = agent_with(&config);
    creds_doc(&agent, "app");
    let calls = proxy.calls();
    let actions: Vec<&str> = calls
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["GetCallerIdentity", "AssumeRole"]);
    assert_eq!(
        calls[1]["params"]["RoleArn"],
        "arn:aws:iam::123456789012:role/app"
    );
}

#[test]
fn session_token_with_a_totp_secret() {
    let proxy = StsProxy::start();
    let config = sts_config(
        &proxy,
        "mode = \"session-token\"\nbase = \"profiles\"\n",
        "[profiles.dev]\naccess_key_id = \"AKIADEVELOPER0000001\"\nsecret_access_key = \"devsecret\"\n\
         mfa_serial = \"arn:aws:iam::123456789012:mfa/dev\"\nmfa_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\n\
         [roles]\ndefault = \"dev-session\"\n",
    );
    let (agent, _dir) = agent_with(&config);
    let doc = creds_doc(&agent, "dev-session");
    assert_eq!(doc["Code"], "Success", "{doc}");
    let calls = proxy.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call["action"], "GetSessionToken");
    assert_eq!(call["key"], "AKIADEVELOPER0000001");
    assert_eq!(
        call["params"]["SerialNumber"],
        "arn:aws:iam::123456789012:mfa/dev"
    );
    let code = call["params"]["TokenCode"].as_str().unwrap();
    let secret =
        imds_agent::creds::mfa::TotpSecret::parse("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
    let at = std::time::UNIX_EPOCH + Duration::from_secs_f64(call["at"].as_f64().unwrap());
    let step = imds_agent::creds::mfa::TotpSecret::step(at);
    let valid: Vec<String> = [step - 1, step, step + 1]
        .iter()
        .map(|s| secret.code_for_step(*s).expose().to_owned())
        .collect();
    assert!(
        valid.iter().any(|v| v == code),
        "{code} is not the TOTP code of the moment"
    );
}

#[test]
fn an_mfa_code_handed_in_on_the_command_line() {
    let proxy = StsProxy::start();
    let config = sts_config(
        &proxy,
        "base = \"profiles\"\n",
        "[profiles.dev]\naccess_key_id = \"AKIADEVELOPER0000001\"\nsecret_access_key = \"devsecret\"\n\
         mfa_serial = \"arn:aws:iam::123456789012:mfa/dev\"\n[roles]\ndefault = \"app\"\n",
    );
    let (agent, _dir) = agent_with(&config);
    let waiting = creds_doc(&agent, "app");
    assert_eq!(waiting["Code"], "AssumeRoleUnauthorizedAccess");
    assert!(
        waiting["Message"]
            .as_str()
            .unwrap()
            .contains("imds-agent mfa"),
        "{waiting}"
    );
    assert!(proxy.calls().is_empty(), "nothing is sent without a code");
    let bad = agent.cli(&["mfa", "12ab56"], "");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("exactly six digits"));
    // The code from stdin, as the README recommends: argv is visible to
    // every user in /proc.
    let ok = agent.cli(&["mfa"], "654321\n");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    eventually("credentials after the code", || {
        creds_doc(&agent, "app")["Code"] == "Success"
    });
    let calls = proxy.calls();
    assert_eq!(calls[0]["action"], "GetSessionToken");
    assert_eq!(calls[0]["params"]["TokenCode"], "654321");
    assert_eq!(calls[1]["action"], "AssumeRole");
    assert_ne!(
        calls[1]["key"], "AKIADEVELOPER0000001",
        "AssumeRole runs as the MFA session"
    );
}

#[test]
fn bootstrap_credentials_through_the_admin_socket() {
    let proxy = StsProxy::start();
    let (agent, _dir) = agent_with(&sts_config(
        &proxy,
        "base = \"bootstrap\"\n",
        "[roles]\ndefault = \"app\"\n",
    ));
    let waiting = creds_doc(&agent, "app");
    assert_eq!(waiting["Code"], "AssumeRoleUnauthorizedAccess");
    assert!(
        waiting["Message"]
            .as_str()
            .unwrap()
            .contains("imds-agent bootstrap"),
        "{waiting}"
    );
    assert_eq!(
        agent.cli(&["status"], "").status.code(),
        Some(1),
        "not ready before bootstrap"
    );

    let malformed = agent.cli(&["bootstrap"], "{\"AccessKeyId\": 5}");
    assert_eq!(malformed.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&malformed.stderr).contains("AccessKeyId"),
        "{malformed:?}"
    );

    let body = r#"{"AccessKeyId": "AKIABOOTSTRAPPED0001", "SecretAccessKey": "bootstrap-secret-never-shown"}"#;
    let ok = agent.cli(&["bootstrap"], body);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    eventually("credentials after bootstrap", || {
        creds_doc(&agent, "app")["Code"] == "Success"
    });
    assert_eq!(proxy.calls()[0]["key"], "AKIABOOTSTRAPPED0001");
    // The fetch's log line comes after its credentials are served.
    agent.wait_for_log("STS issued credentials");
    let status = agent.cli(&["status"], "");
    assert!(status.status.success());
    let everything = format!(
        "{}{}",
        String::from_utf8_lossy(&status.stdout),
        agent.logs()
    );
    assert!(
        !everything.contains("bootstrap-secret-never-shown"),
        "the secret can't be read back"
    );
    // No route reads them back.
    let read =
        imds_agent::admin::client::request(&agent.socket, "GET", "/bootstrap/creds", None).unwrap();
    assert_eq!(read.status, 405);
}

#[test]
fn switching_profiles_at_run_time() {
    let proxy = StsProxy::start();
    let config = sts_config(
        &proxy,
        "base = \"profiles\"\nprofile = \"work\"\n",
        "[profiles.work]\naccess_key_id = \"AKIAWORKWORKWORK0001\"\nsecret_access_key = \"w\"\nrole = \"work-role\"\n\
         [profiles.play]\naccess_key_id = \"AKIAPLAYPLAYPLAY0001\"\nsecret_access_key = \"p\"\nrole = \"play-role\"\n",
    );
    let (agent, _dir) = agent_with(&config);
    assert_eq!(get(agent.addr, ROLE_PATH, &[]).text(), "work-role");
    assert_eq!(creds_doc(&agent, "work-role")["Code"], "Success");
    let listed = agent.cli(&["profile", "list"], "");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("\"active\": \"work\""));
    let unknown = agent.cli(&["profile", "use", "nope"], "");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no profile named \"nope\""));
    let switched = agent.cli(&["profile", "use", "play"], "");
    assert!(
        switched.status.success(),
        "{}",
        String::from_utf8_lossy(&switched.stderr)
    );
    assert_eq!(get(agent.addr, ROLE_PATH, &[]).text(), "play-role");
    assert_eq!(
        get(agent.addr, &format!("{ROLE_PATH}work-role"), &[]).status,
        404
    );
    eventually("play-role credentials", || {
        creds_doc(&agent, "play-role")["Code"] == "Success"
    });
    let last = proxy
        .calls()
        .into_iter()
        .rfind(|c| c["action"] == "AssumeRole")
        .unwrap();
    assert_eq!(last["key"], "AKIAPLAYPLAYPLAY0001");
    assert_eq!(
        last["params"]["RoleArn"],
        "arn:aws:iam::123456789012:role/play-role"
    );
}

#[test]
fn an_unreachable_agent_is_exit_3() {
    let out = Command::new(agent_bin())
        .args(["status", "--socket", "/nonexistent/imds-agent.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the agent"));
}

/// Twenty hosts started together (agents started at once, on one STS) do
/// not call STS together: each first fetch of a role no workload needs yet
/// waits a random part of `prefetch_spread_seconds`, and a request does
/// not wait for it.
#[test]
fn agents_started_together_spread_their_first_calls() {
    const AGENTS: usize = 20;
    const WINDOW: f64 = 10.0;
    let proxy = StsProxy::start();
    let config = sts_config(
        &proxy,
        &format!("prefetch_spread_seconds = {WINDOW}"),
        "[roles]\ndefault = \"app\"\n",
    );
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let agents: Vec<(Agent, tempfile::TempDir)> = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..AGENTS)
            .map(|_| scope.spawn(|| agent_with(&config)))
            .collect();
        starting.into_iter().map(|t| t.join().unwrap()).collect()
    });
    wait_for_showing(
        "every agent's first call",
        Duration::from_secs(WINDOW as u64 + 20),
        || match proxy.count("AssumeRole") {
            n if n >= AGENTS => Ok(()),
            n => Err(n),
        },
    );
    let mut at: Vec<f64> = proxy
        .calls()
        .iter()
        .filter(|c| c["action"] == "AssumeRole")
        .map(|c| c["at"].as_f64().unwrap() - started)
        .collect();
    at.sort_by(f64::total_cmp);
    assert_eq!(at.len(), AGENTS, "one call per agent: {at:?}");
    println!("first AssumeRole of each agent, seconds after the start: {at:.1?}");
    // Spread over the window, not bunched at the start: 20 uniform draws
    // over 10 s span less than 4 s, or put 10 in one second, with odds
    // below one in a million.
    let span = at[AGENTS - 1] - at[0];
    assert!(span >= 4.0, "calls spread over {span:.1} s: {at:?}");
    let most_in_a_second = (0..AGENTS)
        .map(|i| at[i..].iter().take_while(|t| **t < at[i] + 1.0).count())
        .max()
        .unwrap();
    assert!(
        most_in_a_second < 10,
        "{most_in_a_second} calls in one second: {at:?}"
    );
    assert!(
        at[AGENTS - 1] <= WINDOW + 10.0,
        "every call within the window (and the agents' start): {at:?}"
    );
    // A request during the window is answered at once: its agent fetches
    // then, not at its spread time.
    let late = agent_with(&config);
    let before = proxy.count("AssumeRole");
    let doc = creds_doc(&late.0, "app");
    assert_eq!(doc["Code"], "Success", "{doc}");
    assert_eq!(proxy.count("AssumeRole"), before + 1);
    drop(agents);
}
