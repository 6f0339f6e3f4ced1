//! The Roles Anywhere test service is right: a client nobody here wrote
//! (PyPI's iam-rolesanywhere-session) gets credentials from it with every
//! kind of good certificate, and every bad certificate, wrong parameter
//! and tampered request is refused as the service refuses it.

mod support;

use std::process::Command;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use imds_agent::creds::roles_anywhere::client::{
    CreateSessionError, SessionParams, connector, create_session,
};
use imds_agent::creds::roles_anywhere::sign::{Signer, SoftKey};

use support::roles_anywhere::{OTHER_ROLE, PROFILE, Pki, REGION, ROLE, Service, TRUST_ANCHOR};
use support::sts::StsProxy;
use support::{Agent, agent_bin, botocore, config_file, py_script, python, sts};

#[test]
fn a_third_party_client_proves_the_test_service() {
    let pki = Pki::new();
    let service = Service::start(&pki, sts::moto());
    let port = service.port().to_string();
    let out = Command::new(python())
        .arg(py_script("rolesanywhere_proof.py"))
        .args([
            pki.dir.path().to_str().unwrap(),
            &port,
            REGION,
            TRUST_ANCHOR,
            PROFILE,
            ROLE,
            OTHER_ROLE,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let proof: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (sessions, tampered) = (&proof["sessions"], &proof["tampered"]);
    // Good leaves, and the look-alikes the tampering below swaps in (the
    // twin leaf, the intermediate's twin, 901 seconds): each of those is
    // a request the service grants on its own.
    for good in [
        "rsa",
        "p256 with chain",
        "p384 with chain",
        "rotated",
        "twin with chain",
        "p256 with the intermediate's twin",
        "p256 for 901 seconds",
        "as signed",
    ] {
        assert_eq!(sessions[good]["outcome"], "ok", "{good}: {proof}");
    }
    // Each bad leaf or parameter is refused, and for its own reason.
    for (bad, status, why) in [
        (
            "p256 without its chain",
            403,
            "Untrusted signing certificate",
        ),
        ("expired", 403, "has expired"),
        ("not yet valid", 403, "not yet valid"),
        ("untrusted", 403, "Untrusted signing certificate"),
        ("a CA as leaf", 403, "is a CA"),
        ("no keyUsage", 403, "no keyUsage"),
        ("intermediate without keyCertSign", 403, "keyCertSign"),
        ("pathLen exceeded", 403, "pathLen"),
        ("sha1", 403, "signed with SHA1"),
        ("wrong profile", 404, "no such profile"),
        ("role not allowed", 403, "does not allow"),
    ] {
        let got = &sessions[bad];
        assert_eq!(got["outcome"], "refused", "{bad}: {got}");
        assert_eq!(got["status"], status, "{bad}: {got}");
        assert_ne!(got["type"], "SignatureDoesNotMatch", "{bad}: {got}");
        let reason = got["reason"].as_str().unwrap_or("");
        assert!(reason.contains(why), "{bad}: {got}");
    }
    // One request the client signed, sent with one signed part changed to
    // a value the service would otherwise take: every signed header, the
    // body and the signature. Each is refused by the signature check and
    // by nothing else.
    let tampered = tampered.as_object().expect("the tampered cases");
    for (part, at_least) in [
        ("content-type ", 2),
        ("host ", 2),
        ("x-amz-date ", 2),
        ("x-amz-x509 swapped", 1),
        ("x-amz-x509-chain swapped", 1),
        ("body ", 1),
        ("signature ", 1),
    ] {
        let n = tampered.keys().filter(|c| c.starts_with(part)).count();
        assert!(n >= at_least, "{part}: {n} cases in {proof}");
    }
    for (case, got) in tampered {
        if case == "serial changed" {
            continue;
        }
        assert_eq!(got["outcome"], "refused", "{case}: {got}");
        assert_eq!(got["status"], 403, "{case}: {got}");
        assert_eq!(got["type"], "SignatureDoesNotMatch", "{case}: {got}");
    }
    // The credential's serial is not signed: the serial check catches it.
    let serial = &tampered["serial changed"];
    assert_eq!(serial["outcome"], "refused", "{serial}");
    assert_eq!(serial["status"], 403, "{serial}");
    assert!(
        serial["reason"]
            .as_str()
            .unwrap_or("")
            .contains("serial number"),
        "{serial}"
    );
}

/// The DER inside a PEM file (its first block).
fn pem_der(path: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// The agent's own signer and client get sessions from the test service
/// (RSA by the CA, P-256 and P-384 through the intermediate), and its refusals come
/// back as refusals, with the service's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_signer_gets_a_session() {
    let pki = Pki::new();
    let service = Service::start(&pki, sts::moto());
    let host = format!("127.0.0.1:{}", service.port());
    let https = connector(&[pem_der(&pki.path("ca.pem"))]).unwrap();
    let params = SessionParams {
        trust_anchor_arn: TRUST_ANCHOR.to_owned(),
        profile_arn: PROFILE.to_owned(),
        role_arn: ROLE.to_owned(),
        duration: Duration::from_secs(900),
        session_name: None,
    };
    let rsa = SoftKey::rsa(&pem_der(&pki.path("rsa.key"))).unwrap();
    let p256 = SoftKey::ecdsa_p256(&pem_der(&pki.path("p256.key"))).unwrap();
    let p384 = SoftKey::ecdsa_p384(&pem_der(&pki.path("p384.key"))).unwrap();
    let inter = vec![pem_der(&pki.path("inter.pem"))];
    let cases: [(&str, &dyn Signer, &[Vec<u8>]); 3] = [
        ("rsa", &rsa, &[]),
        ("p256", &p256, &inter),
        ("p384", &p384, &inter),
    ];
    for (leaf, key, chain) in cases {
        let cert = pem_der(&pki.path(&format!("{leaf}.pem")));
        let issued = create_session(
            &https,
            &host,
            REGION,
            &params,
            &cert,
            chain,
            key,
            SystemTime::now(),
        )
        .await
        .unwrap_or_else(|e| panic!("{leaf}: {e}"));
        assert!(issued.keys.access_key_id.starts_with("ASIA"), "{leaf}");
        assert!(issued.expiration > SystemTime::now() + Duration::from_secs(600));
        assert_eq!(issued.account_id.as_deref(), Some("123456789012"));
    }
    // Signed for another region: the service refuses the scope.
    let cert = pem_der(&pki.path("rsa.pem"));
    let refused = create_session(
        &https,
        &host,
        "us-east-1",
        &params,
        &cert,
        &[],
        &rsa,
        SystemTime::now(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&refused, CreateSessionError::Refused { status: 403, .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("region"), "{refused}");
    // Not trusted: refused with the service's words.
    let untrusted = SoftKey::ecdsa_p256(&pem_der(&pki.path("untrusted.key"))).unwrap();
    let cert = pem_der(&pki.path("untrusted.pem"));
    let refused = create_session(
        &https,
        &host,
        REGION,
        &params,
        &cert,
        &[],
        &untrusted,
        SystemTime::now(),
    )
    .await
    .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("Untrusted signing certificate"),
        "{refused}"
    );
    assert!(!refused.is_transient());
    // A clock far off: the signature has expired.
    let late = create_session(
        &https,
        &host,
        REGION,
        &params,
        &pem_der(&pki.path("rsa.pem")),
        &[],
        &rsa,
        SystemTime::now() - Duration::from_secs(3600),
    )
    .await
    .unwrap_err();
    assert!(late.to_string().contains("expired"), "{late}");
}

/// The agent with no keys at all: its own credentials come from the test
/// service (Roles Anywhere, a P-256 leaf and its intermediate), every
/// AssumeRole is signed with that session, and botocore gets a workload
/// role's credentials.
#[test]
fn the_agent_runs_on_roles_anywhere_with_no_keys() {
    let pki = Pki::new();
    let service = Service::start(&pki, sts::moto());
    let proxy = StsProxy::start();
    let config = format!(
        "[instance]\naccount_id = \"123456789012\"\n\
         [credentials]\nsource = \"sts\"\nbase = \"roles-anywhere\"\nendpoint = \"{sts}\"\n\
         [credentials.roles_anywhere]\ncertificate = \"{cert}\"\nchain = \"{chain}\"\n\
         private_key = \"{key}\"\ntrust_anchor_arn = \"{TRUST_ANCHOR}\"\nprofile_arn = \"{PROFILE}\"\n\
         role_arn = \"{ROLE}\"\nendpoint = \"127.0.0.1:{port}\"\nca_bundle = \"{ca}\"\n\
         [roles]\ndefault = \"app\"\n",
        sts = proxy.url(),
        cert = pki.path("p256.pem"),
        chain = pki.path("inter.pem"),
        key = pki.path("p256.key"),
        port = service.port(),
        ca = pki.path("ca.pem"),
    );
    let (_dir, path) = config_file(&config);
    let mut cmd = Command::new(agent_bin());
    cmd.args(["dev", "--port", "0", "--config"]).arg(&path);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    let agent = Agent::start(cmd);
    let got = botocore(&format!("http://{}", agent.addr), &[], &[]);
    assert_eq!(got["method"], "iam-role", "{got}\n{}", agent.logs());
    assert!(
        got["access_key"].as_str().unwrap_or("").starts_with("ASIA"),
        "{got}"
    );
    agent.wait_for_log("Roles Anywhere issued a session");
    let logs = agent.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("Roles Anywhere issued a session"))
        .unwrap();
    let suffix = line
        .split("access_key_suffix=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let calls = proxy.calls();
    let assumed: Vec<&serde_json::Value> = calls
        .iter()
        .filter(|c| c["action"] == "AssumeRole")
        .collect();
    assert!(!assumed.is_empty(), "{calls:?}");
    for call in assumed {
        let key = call["key"].as_str().unwrap_or("");
        assert!(
            key.ends_with(&suffix),
            "AssumeRole signed with {key}, not the session …{suffix}"
        );
    }
    assert!(!logs.contains("SecretAccessKey"), "no secret in the log");
    // status shows the certificate in force; metrics its expiry.
    let status = agent.cli(&["status"], "");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let cert = &status["sts"]["certificate"];
    assert_eq!(cert["serial"], pki.serials["p256"], "{status}");
    assert!(
        cert["expires_in_seconds"].as_u64().unwrap() > 86_400,
        "{status}"
    );
    assert!(cert["error"].is_null(), "{status}");
    assert!(
        status["sts"]["base"]
            .as_str()
            .unwrap()
            .starts_with("IAM Roles Anywhere"),
        "{status}"
    );
    let metrics = agent.cli(&["metrics"], "");
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("\nimds_certificate_expiry_seconds "),
        "{metrics}"
    );
    drop(agent);

    // A role the profile does not allow: the service's words in status,
    // and not ready.
    let refused = config.replace(ROLE, OTHER_ROLE);
    let (_dir, path) = config_file(&refused);
    let mut cmd = Command::new(agent_bin());
    cmd.args(["dev", "--port", "0", "--config"]).arg(&path);
    support::only_imds_credentials(&mut cmd);
    let agent = Agent::start(cmd);
    let why = support::wait_for_showing(
        "the refusal in status",
        std::time::Duration::from_secs(15),
        || {
            let out = agent.cli(&["status"], "");
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            match status["sts"]["certificate"]["error"].as_str() {
                Some(e) if out.status.code() == Some(1) => Ok(e.to_owned()),
                _ => Err(status),
            }
        },
    );
    assert!(why.contains("does not allow"), "{why}");
}

/// `mode = "direct"`: a host with one role is served the Roles Anywhere
/// session itself, with no AssumeRole at all.
#[test]
fn a_host_with_one_role_is_served_the_session_itself() {
    let pki = Pki::new();
    let service = Service::start(&pki, sts::moto());
    let proxy = StsProxy::start();
    let config = format!(
        "[instance]\naccount_id = \"123456789012\"\n\
         [credentials]\nsource = \"sts\"\nbase = \"roles-anywhere\"\nmode = \"direct\"\nendpoint = \"{sts}\"\n\
         [credentials.roles_anywhere]\ncertificate = \"{cert}\"\nprivate_key = \"{key}\"\n\
         trust_anchor_arn = \"{TRUST_ANCHOR}\"\nprofile_arn = \"{PROFILE}\"\n\
         role_arn = \"{ROLE}\"\nendpoint = \"127.0.0.1:{port}\"\nca_bundle = \"{ca}\"\n\
         [roles]\ndefault = \"host-base\"\n",
        sts = proxy.url(),
        cert = pki.path("rsa.pem"),
        key = pki.path("rsa.key"),
        port = service.port(),
        ca = pki.path("ca.pem"),
    );
    let (_dir, path) = config_file(&config);
    let mut cmd = Command::new(agent_bin());
    cmd.args(["dev", "--port", "0", "--config"]).arg(&path);
    support::only_imds_credentials(&mut cmd);
    let agent = Agent::start(cmd);
    let got = botocore(&format!("http://{}", agent.addr), &[], &[]);
    assert_eq!(got["method"], "iam-role", "{got}\n{}", agent.logs());
    let served = got["access_key"].as_str().unwrap_or("").to_owned();
    let line = agent.wait_for_log("Roles Anywhere issued a session");
    let logs = agent.logs();
    let issued = logs
        .lines()
        .find(|l| l.contains("Roles Anywhere issued a session"))
        .unwrap_or(&line);
    assert!(
        issued.contains(&format!(
            "access_key_suffix={}",
            &served[served.len() - 4..]
        )),
        "served {served}, issued: {issued}"
    );
    assert_eq!(proxy.count("AssumeRole"), 0, "{:?}", proxy.calls());
}

/// A key that never leaves a token: SoftHSM2 (with a token of its own in a
/// temporary directory) holds the P-256 and P-384 keys, and the agent, with
/// no keys and no key file, signs CreateSession through PKCS#11: botocore
/// gets credentials. (Debian 12's SoftHSM2 can't sign with RSA keys.)
#[cfg(feature = "pkcs11")]
#[test]
fn keys_in_softhsm_get_sessions() {
    const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
    assert!(
        std::path::Path::new(MODULE).exists(),
        "SoftHSM2 is not installed (Debian: softhsm2)"
    );
    let pki = Pki::new();
    let service = Service::start(&pki, sts::moto());
    let tokens = tempfile::tempdir().unwrap();
    let conf = tokens.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            tokens.path().display()
        ),
    )
    .unwrap();
    let softhsm = |args: &[&str]| {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "softhsm2-util {args:?}: {out:?}");
    };
    softhsm(&[
        "--init-token",
        "--free",
        "--label",
        "imds-test",
        "--pin",
        "1234",
        "--so-pin",
        "5678",
    ]);
    for (label, id) in [("p256", "01"), ("p384", "02")] {
        let key = pki.path(&format!("{label}.key"));
        softhsm(&[
            "--import",
            &key,
            "--token",
            "imds-test",
            "--label",
            label,
            "--id",
            id,
            "--pin",
            "1234",
        ]);
    }
    let pin = tokens.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    for label in ["p256", "p384"] {
        let config = format!(
            "[instance]\naccount_id = \"123456789012\"\n\
             [credentials]\nsource = \"sts\"\nbase = \"roles-anywhere\"\nendpoint = \"{sts}\"\n\
             [credentials.roles_anywhere]\ncertificate = \"{cert}\"\nchain = \"{chain}\"\n\
             private_key = \"pkcs11:token=imds-test;object={label}\"\npkcs11_module = \"{MODULE}\"\n\
             private_key_passphrase_file = \"{pin}\"\n\
             trust_anchor_arn = \"{TRUST_ANCHOR}\"\nprofile_arn = \"{PROFILE}\"\n\
             role_arn = \"{ROLE}\"\nendpoint = \"127.0.0.1:{port}\"\nca_bundle = \"{ca}\"\n\
             [roles]\ndefault = \"app\"\n",
            sts = sts::moto(),
            cert = pki.path(&format!("{label}.pem")),
            chain = pki.path("inter.pem"),
            pin = pin.display(),
            port = service.port(),
            ca = pki.path("ca.pem"),
        );
        let (_dir, path) = config_file(&config);
        let mut cmd = Command::new(agent_bin());
        cmd.args(["dev", "--port", "0", "--config"])
            .arg(&path)
            .env("SOFTHSM2_CONF", &conf);
        support::only_imds_credentials(&mut cmd);
        let agent = Agent::start(cmd);
        let got = botocore(&format!("http://{}", agent.addr), &[], &[]);
        assert_eq!(
            got["method"],
            "iam-role",
            "{label}: {got}\n{}",
            agent.logs()
        );
        agent.wait_for_log("Roles Anywhere issued a session");
    }
}
