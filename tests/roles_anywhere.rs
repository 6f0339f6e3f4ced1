//! The Roles Anywhere test service is right: a client nobody here wrote
//! (PyPI's iam-rolesanywhere-session) gets credentials from it with every
//! kind of good certificate, and every bad certificate, wrong parameter
//! and tampered request is refused as the service refuses it.

mod support;

use std::process::Command;
use std::sync::Arc;
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

/// A key the agent signs with.
type Key = Arc<dyn Signer>;

/// `imds-agent dev` on config `text`, with no credentials of its own but
/// what the config gives, and `env` besides.
fn dev_agent(text: &str, env: &[(&str, String)]) -> Agent {
    let (dir, path) = config_file(text);
    let mut cmd = Command::new(agent_bin());
    cmd.args(["dev", "--port", "0", "--config"]).arg(&path);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    support::only_imds_credentials(&mut cmd);
    let agent = Agent::start(cmd);
    // The agent has read the file: the directory may go.
    drop(dir);
    agent
}

/// A config on a Roles Anywhere base served by `service` (STS at `sts`):
/// `files` names the certificate and key, `credentials` adds to
/// `[credentials]`, and every workload gets role `default`.
fn ra_config(
    sts: &str,
    service: &Service,
    pki: &Pki,
    files: &str,
    credentials: &str,
    default: &str,
) -> String {
    format!(
        "[instance]\naccount_id = \"123456789012\"\n\
         [credentials]\nsource = \"sts\"\nbase = \"roles-anywhere\"\nendpoint = \"{sts}\"\n{credentials}\
         [credentials.roles_anywhere]\n{files}\
         trust_anchor_arn = \"{TRUST_ANCHOR}\"\nprofile_arn = \"{PROFILE}\"\n\
         role_arn = \"{ROLE}\"\nendpoint = \"127.0.0.1:{port}\"\nca_bundle = \"{ca}\"\n\
         [roles]\ndefault = \"{default}\"\n",
        port = service.port(),
        ca = pki.path("ca.pem"),
    )
}

/// The config of a key in a PKCS#11 token (`module`, `uri`) for
/// certificate `cert`, with the PIN in `pin`.
fn token_config(
    service: &Service,
    pki: &Pki,
    cert: &str,
    module: &str,
    uri: &str,
    pin: &std::path::Path,
) -> String {
    let files = format!(
        "certificate = \"{cert}\"\nprivate_key = \"{uri}\"\npkcs11_module = \"{module}\"\n\
         private_key_passphrase_file = \"{}\"\n",
        pin.display()
    );
    ra_config(sts::moto(), service, pki, &files, "", "app")
}

/// The service's last refusal once the agent says it is not ready.
fn certificate_error_when_not_ready(agent: &Agent, what: &str) -> String {
    support::wait_for_showing(what, Duration::from_secs(15), || {
        let out = agent.cli(&["status"], "");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        match status["sts"]["certificate"]["error"].as_str() {
            Some(e) if out.status.code() == Some(1) => Ok(e.to_owned()),
            _ => Err(status),
        }
    })
}

/// Waits, refreshing, until the service has issued one more session than
/// it had when this was called.
fn wait_for_a_new_session(agent: &Agent, service: &Service, what: &str) {
    let issued = || {
        service
            .calls()
            .iter()
            .filter(|c| c["status"] == 201)
            .count()
    };
    let before = issued();
    support::wait_for_showing(what, Duration::from_secs(40), || {
        refresh_soon(agent);
        match issued() {
            n if n > before => Ok(()),
            n => Err(n),
        }
    });
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
    let rsa: Arc<dyn Signer> = Arc::new(SoftKey::rsa(&pem_der(&pki.path("rsa.key"))).unwrap());
    let p256: Arc<dyn Signer> =
        Arc::new(SoftKey::ecdsa_p256(&pem_der(&pki.path("p256.key"))).unwrap());
    let p384: Arc<dyn Signer> =
        Arc::new(SoftKey::ecdsa_p384(&pem_der(&pki.path("p384.key"))).unwrap());
    let inter = vec![pem_der(&pki.path("inter.pem"))];
    let cases: [(&str, &Key, &[Vec<u8>]); 3] = [
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
            Arc::clone(key),
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
        Arc::clone(&rsa),
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
    let untrusted: Arc<dyn Signer> =
        Arc::new(SoftKey::ecdsa_p256(&pem_der(&pki.path("untrusted.key"))).unwrap());
    let cert = pem_der(&pki.path("untrusted.pem"));
    let refused = create_session(
        &https,
        &host,
        REGION,
        &params,
        &cert,
        &[],
        untrusted,
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
        Arc::clone(&rsa),
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
    let files = format!(
        "certificate = \"{}\"\nchain = \"{}\"\nprivate_key = \"{}\"\n",
        pki.path("p256.pem"),
        pki.path("inter.pem"),
        pki.path("p256.key"),
    );
    let config = ra_config(proxy.url(), &service, &pki, &files, "", "app");
    let agent = dev_agent(&config, &[]);
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
    // `session clear` drops the cached session too (after a revocation,
    // say): the next fetch asks Roles Anywhere again.
    let sessions = || {
        service
            .calls()
            .iter()
            .filter(|c| c["status"] == 201)
            .count()
    };
    let before = sessions();
    assert!(agent.cli(&["session", "clear"], "").status.success());
    let got = botocore(&format!("http://{}", agent.addr), &[], &[]);
    assert_eq!(got["method"], "iam-role", "{got}");
    assert_eq!(sessions(), before + 1, "{:?}", service.calls());
    drop(agent);

    // A role the profile does not allow: the service's words in status,
    // and not ready.
    let agent = dev_agent(&config.replace(ROLE, OTHER_ROLE), &[]);
    let why = certificate_error_when_not_ready(&agent, "the refusal in status");
    assert!(why.contains("does not allow"), "{why}");
    // A refusal, retried after error_ttl_seconds: not an outage.
    let out = agent.cli(&["status"], "");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = status["sts"]["roles"][0]["error"].as_str().unwrap_or("");
    assert!(
        error.starts_with("AssumeRoleUnauthorizedAccess"),
        "{status}"
    );
    drop(agent);

    // An expired certificate: the agent starts (it may be renewed while it
    // runs), asks nothing of the service, says why in status, and is not
    // ready; workloads get an error, not keys.
    let expired = config
        .replace(&pki.path("p256.pem"), &pki.path("expired.pem"))
        .replace(&pki.path("p256.key"), &pki.path("expired.key"))
        .replace(&format!("chain = \"{}\"\n", pki.path("inter.pem")), "");
    let agent = dev_agent(&expired, &[]);
    let why = certificate_error_when_not_ready(&agent, "the expired certificate in status");
    assert!(why.contains("expired.pem is expired"), "{why}");
    let got = botocore(&format!("http://{}", agent.addr), &[], &[]);
    assert_eq!(got["method"], serde_json::Value::Null, "{got}");
    let calls = service.calls();
    assert!(
        !calls.iter().any(|c| c["serial"] == pki.serials["expired"]),
        "{calls:?}"
    );
}

/// `mode = "direct"`: a host with one role is served the Roles Anywhere
/// session itself, with no AssumeRole at all.
#[test]
fn a_host_with_one_role_is_served_the_session_itself() {
    let pki = Pki::new();
    let service = Service::start(&pki, sts::moto());
    let proxy = StsProxy::start();
    let files = format!(
        "certificate = \"{}\"\nprivate_key = \"{}\"\n",
        pki.path("rsa.pem"),
        pki.path("rsa.key"),
    );
    let config = ra_config(
        proxy.url(),
        &service,
        &pki,
        &files,
        "mode = \"direct\"\n",
        "host-base",
    );
    let agent = dev_agent(&config, &[]);
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
    // Sessions the STS client's cache keeps for 15 to 20 s (it renews
    // 10 s before the end, less up to 5 s of jitter).
    let service = Service::start_with(&pki, sts::moto(), &["--session-seconds", "30"]);
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
    let import = |label: &str| {
        let id = if label == "p256" { "01" } else { "02" };
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
    };
    for label in ["p256", "p384"] {
        import(label);
    }
    let pin = tokens.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    for label in ["p256", "p384"] {
        let config = token_config(
            &service,
            &pki,
            &pki.path(&format!("{label}.pem")),
            MODULE,
            &format!("pkcs11:token=imds-test;object={label}"),
            &pin,
        )
        .replace(
            "private_key =",
            &format!("chain = \"{}\"\nprivate_key =", pki.path("inter.pem")),
        );
        let agent = dev_agent(&config, &[("SOFTHSM2_CONF", conf.display().to_string())]);
        let got = botocore(&format!("http://{}", agent.addr), &[], &[]);
        assert_eq!(
            got["method"],
            "iam-role",
            "{label}: {got}\n{}",
            agent.logs()
        );
        agent.wait_for_log("Roles Anywhere issued a session");
        // The certificate is renewed for the same key in the token: the
        // key's session is kept (a second login to the token is refused),
        // and the next CreateSession is signed with it.
        let cert = pki.path(&format!("{label}.pem"));
        let renewed = format!("{cert}.renewed");
        std::fs::copy(&cert, &renewed).unwrap();
        std::fs::rename(&renewed, &cert).unwrap();
        let out = agent.cli(&["status"], "");
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            status["sts"]["certificate"]["reload_error"].is_null(),
            "{label}: {status}"
        );
        wait_for_a_new_session(&agent, &service, "a new session signed by the token");
        // The token loses the key's object (deleted and imported again, as
        // a token reset would): the agent's handle is stale, and the next
        // signature opens a new session and finds the key again.
        let p11 = |args: &[&str]| {
            Command::new("pkcs11-tool")
                .env("SOFTHSM2_CONF", &conf)
                .args(["--module", MODULE, "--token-label", "imds-test"])
                .args(["--login", "--pin", "1234"])
                .args(args)
                .output()
                .unwrap()
        };
        for kind in ["privkey", "pubkey"] {
            p11(&["--delete-object", "--type", kind, "--label", label]);
        }
        import(label);
        wait_for_a_new_session(
            &agent,
            &service,
            "a session signed after the token lost the key",
        );
        assert!(
            agent.logs().contains("the token dropped the session"),
            "{label}: {}",
            agent.logs()
        );
    }
}

/// A client process the tests start (the Rust SDK's IMDS provider).
#[test]
#[ignore = "a client process that the tests start"]
fn rust_sdk_client() {
    support::rust_sdk_child();
}

/// Asks `agent` to refresh every role, and gives it a moment: a new
/// session is only made once the cached one is due.
fn refresh_soon(agent: &Agent) {
    assert!(agent.cli(&["refresh"], "").status.success());
    std::thread::sleep(Duration::from_millis(500));
}

/// Replaces `to` with a copy of `from` as rotation tools do (a new file
/// renamed over the old), owned by `uid`, mode 600.
fn install(from: &str, to: &std::path::Path, uid: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::os::unix::fs::chown(&tmp, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// The agent as a host runs it (`run`, cgroup attribution, privileges
/// dropped) with no keys at all: two workloads in two cgroups get their own
/// roles, which botocore, the Rust SDK and STS's GetCallerIdentity see,
/// every AssumeRole signed with the Roles Anywhere session. Then, while it
/// serves: the certificate is rotated (status shows the new one at once,
/// the next session is signed with it), a rotation to an expired
/// certificate is refused and shows in status, and with the service down
/// the cached credentials are served on and the outage shows.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root: `cargo xtask test` runs it"
)]
fn workloads_get_their_own_roles_and_the_certificate_rotates_under_them() {
    const AGENT_UID: u32 = 61006;
    let pki = Pki::new();
    // A session the STS client's cache keeps for 15 to 20 s (it renews
    // 10 s before the end, less up to 5 s of jitter): every fetch after
    // that needs a new one.
    let service = Service::start_with(&pki, sts::moto(), &["--session-seconds", "30"]);
    let proxy = StsProxy::start();
    let cgroups = support::cgroups::Cgroups::new(&["a", "b"]);
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(AGENT_UID), Some(AGENT_UID)).unwrap();
    let (cert, key) = (dir.path().join("host.pem"), dir.path().join("host.key"));
    install(&pki.path("p256.pem"), &cert, AGENT_UID);
    install(&pki.path("p256.key"), &key, AGENT_UID);
    std::fs::create_dir(dir.path().join("roles.d")).unwrap();
    std::fs::write(
        dir.path().join("roles.d/10-test.toml"),
        format!(
            "[[rule]]\ncgroup = \"{a}\"\nrole = \"role-a\"\n\n\
             [[rule]]\ncgroup = \"{b}\"\nrole = \"role-b@210987654321\"\n",
            a = cgroups.path("a"),
            b = cgroups.path("b"),
        ),
    )
    .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[host]\nmode = \"off\"\n\
             [privileges]\nuser = \"{AGENT_UID}\"\n\
             [attribution]\ncgroups = true\ncgroup_root = \"{root}\"\n\
             [instance]\naccount_id = \"123456789012\"\n\
             [credentials]\nsource = \"sts\"\nbase = \"roles-anywhere\"\nendpoint = \"{sts}\"\nduration_seconds = 900\n\
             [credentials.roles_anywhere]\ncertificate = \"{cert}\"\nchain = \"{chain}\"\n\
             private_key = \"{key}\"\ntrust_anchor_arn = \"{TRUST_ANCHOR}\"\nprofile_arn = \"{PROFILE}\"\n\
             role_arn = \"{ROLE}\"\nendpoint = \"127.0.0.1:{port}\"\nca_bundle = \"{ca}\"\n\
             [roles]\ndir = \"{roles}\"\n",
            root = cgroups.root().display(),
            sts = proxy.url(),
            cert = cert.display(),
            chain = pki.path("inter.pem"),
            key = key.display(),
            port = service.port(),
            ca = pki.path("ca.pem"),
            roles = dir.path().join("roles.d").display(),
        ),
    )
    .unwrap();
    // The test's PKI directory is root's: the agent reads the chain and the
    // CA there after it has dropped root.
    for name in ["", "inter.pem", "ca.pem"] {
        let path = pki.dir.path().join(name);
        let mode = if name.is_empty() { 0o755 } else { 0o644 };
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let mut cmd = Command::new(agent_bin());
    cmd.arg("run").arg("--config").arg(&config);
    support::only_imds_credentials(&mut cmd);
    let agent = Agent::start_run(cmd);
    agent.wait_ready();
    let url = agent.url();
    let in_cgroup = |name: &str| -> Vec<String> {
        let procs = cgroups.dir(name).join("cgroup.procs");
        vec![
            "sh".into(),
            "-c".into(),
            format!("echo $$ > {} && exec \"$@\"", procs.display()),
            "sh".into(),
        ]
    };
    let client = |name: &str| {
        let prefix = in_cgroup(name);
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        support::botocore_with(&url, &prefix, &[], &[sts::moto()])
    };
    let mut served = std::collections::BTreeMap::new();
    for (name, arn_part) in [
        ("a", "123456789012:assumed-role/role-a/"),
        ("b", "210987654321:assumed-role/role-b/"),
    ] {
        let got = client(name);
        assert_eq!(got["method"], "iam-role", "{name}: {got}\n{}", agent.logs());
        let arn = got["caller_arn"].as_str().unwrap_or_default();
        assert!(arn.contains(arn_part), "{name}: {arn}");
        let key = got["access_key"].as_str().unwrap().to_owned();
        let sdk = support::rust_sdk(&in_cgroup(name), "rust_sdk_client", &url, false);
        assert_eq!(
            sdk["access_key"].as_str(),
            Some(key.as_str()),
            "{name}: {sdk}"
        );
        served.insert(name, key);
    }
    assert_ne!(served["a"], served["b"]);
    // Both roles were assumed with one session: the STS client's cache
    // holds it.
    let sessions_made: Vec<serde_json::Value> = service
        .calls()
        .into_iter()
        .filter(|c| c["status"] == 201)
        .collect();
    assert_eq!(sessions_made.len(), 1, "{sessions_made:?}");
    assert!(proxy.count("AssumeRole") >= 2, "{:?}", proxy.calls());
    // Outside both cgroups: no role.
    let none = support::python_get(
        &["env".to_owned()],
        &format!("{url}/latest/meta-data/iam/security-credentials/"),
        "5",
    );
    assert_eq!(none["status"], 404, "{none}");
    // Every AssumeRole was signed with a Roles Anywhere session.
    let sessions: Vec<String> = agent
        .logs()
        .lines()
        .filter(|l| l.contains("Roles Anywhere issued a session"))
        .filter_map(|l| l.split("access_key_suffix=").nth(1))
        .filter_map(|s| s.split_whitespace().next())
        .map(|s| s.trim_matches('"').to_owned())
        .collect();
    assert!(!sessions.is_empty(), "{}", agent.logs());
    for call in proxy.calls().iter().filter(|c| c["action"] == "AssumeRole") {
        let signer = call["key"].as_str().unwrap_or("");
        assert!(
            sessions.iter().any(|s| signer.ends_with(s)),
            "AssumeRole signed with {signer}, not a Roles Anywhere session ({sessions:?})"
        );
    }
    let status = |agent: &Agent| -> serde_json::Value {
        let out = agent.cli(&["status"], "");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(
        status(&agent)["sts"]["certificate"]["serial"],
        pki.serials["p256"]
    );

    // A rule file that asks for more than chaining allows is refused when
    // it is reloaded (the rules in force stay), saying why.
    std::fs::write(
        dir.path().join("roles.d/20-long.toml"),
        format!(
            "[[rule]]\ncgroup = \"{}\"\nrole = \"role-long\"\nduration_seconds = 7200\n",
            cgroups.path("b")
        ),
    )
    .unwrap();
    support::wait_for_showing("the long rule refused", Duration::from_secs(10), || {
        let now = status(&agent);
        match now["rules"]["refused"].as_str() {
            Some(why) if why.contains("20-long.toml") && why.contains("one hour") => Ok(()),
            _ => Err(now),
        }
    });
    assert_eq!(status(&agent)["rules"]["rules"], 2);
    std::fs::remove_file(dir.path().join("roles.d/20-long.toml")).unwrap();

    // Rotation while serving: status shows the new certificate at once...
    install(&pki.path("rotated.pem"), &cert, AGENT_UID);
    install(&pki.path("rotated.key"), &key, AGENT_UID);
    let now = status(&agent);
    assert_eq!(
        now["sts"]["certificate"]["serial"], pki.serials["rotated"],
        "{now}"
    );
    assert!(now["sts"]["certificate"]["reload_error"].is_null(), "{now}");
    // ...and the next session is signed with it.
    support::wait_for_showing(
        "a session with the rotated certificate",
        Duration::from_secs(40),
        || {
            refresh_soon(&agent);
            let calls = service.calls();
            match calls.last() {
                Some(c) if c["serial"] == pki.serials["rotated"] && c["status"] == 201 => Ok(()),
                _ => Err(serde_json::Value::from(calls)),
            }
        },
    );
    support::wait_for_showing("role-a refreshed", Duration::from_secs(20), || {
        let got = client("a");
        match got["access_key"].as_str() {
            Some(k) if k != served["a"] => Ok(()),
            _ => Err(got),
        }
    });
    let got = client("a");
    assert!(
        got["caller_arn"]
            .as_str()
            .unwrap_or("")
            .contains("assumed-role/role-a/"),
        "{got}"
    );

    // A rotation to an expired certificate (and its key) is not taken.
    install(&pki.path("expired.pem"), &cert, AGENT_UID);
    install(&pki.path("expired.key"), &key, AGENT_UID);
    let now = status(&agent);
    let c = &now["sts"]["certificate"];
    assert_eq!(c["serial"], pki.serials["rotated"], "{now}");
    let why = c["reload_error"].as_str().unwrap_or("");
    assert!(why.contains("expired") && why.contains("kept"), "{now}");
    let metrics = agent.cli(&["metrics"], "");
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("\nimds_certificate_reload_failed 1\n"),
        "{metrics}"
    );

    // The service goes down: what is cached is served on, and status says
    // why nothing new comes.
    drop(service);
    let why = support::wait_for_showing("the outage in status", Duration::from_secs(40), || {
        refresh_soon(&agent);
        let now = status(&agent);
        match now["sts"]["certificate"]["error"].as_str() {
            Some(e) if e.contains("could not be reached") => Ok(now),
            _ => Err(now),
        }
    });
    let role_a = why["sts"]["roles"]
        .as_array()
        .and_then(|r| {
            r.iter()
                .find(|r| r["role"].as_str().is_some_and(|n| n.contains("role-a")))
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(role_a["valid"], true, "{why}");
    // An outage, retried with backoff: not a refusal.
    assert!(
        role_a["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("ServiceUnavailable")),
        "{why}"
    );
    // What was cached when the session ran out is what is served, refresh
    // or not.
    let cached = client("a");
    assert_eq!(cached["method"], "iam-role", "{cached}");
    refresh_soon(&agent);
    let got = client("a");
    assert_eq!(got["access_key"], cached["access_key"], "{got}");
    assert_eq!(
        role_a["access_key_suffix"].as_str(),
        cached["access_key"].as_str().map(|k| &k[k.len() - 4..]),
        "{why}"
    );
    let logs = agent.logs();
    assert!(!logs.contains("SecretAccessKey"), "no secret in the log");
}

/// swtpm, a software TPM 2.0 of the test's own (its state and socket in a
/// temporary directory), killed on drop.
#[cfg(feature = "pkcs11")]
struct SoftwareTpm {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

#[cfg(feature = "pkcs11")]
impl SoftwareTpm {
    fn start() -> SoftwareTpm {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        std::fs::create_dir(dir.path().join("store")).unwrap();
        let socket = dir.path().join("swtpm.sock");
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.path().join("state").display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}.ctrl", socket.display()))
            .stdout(std::process::Stdio::null())
            // It says so each time a client goes.
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting swtpm");
        let tpm = SoftwareTpm { child, dir };
        support::wait_until("swtpm's socket", Duration::from_secs(10), || {
            socket.exists()
        });
        tpm
    }

    /// What tpm2-pkcs11 (in the agent too) and the tpm2 tools need to find
    /// it, and where the token's store is.
    fn env(&self) -> [(&'static str, String); 3] {
        let tcti = format!(
            "swtpm:path={}",
            self.dir.path().join("swtpm.sock").display()
        );
        [
            ("TPM2_PKCS11_TCTI", tcti.clone()),
            ("TPM2TOOLS_TCTI", tcti),
            (
                "TPM2_PKCS11_STORE",
                self.dir.path().join("store").display().to_string(),
            ),
        ]
    }

    /// Runs `program` against it, asserting success.
    fn run(&self, program: &str, args: &[&str]) {
        let out = Command::new(program)
            .envs(self.env())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(out.status.success(), "{program} {args:?}: {out:?}");
    }

    /// Unloads what a client left in the TPM: with no resource manager, a
    /// killed client's objects and sessions stay, and swtpm holds three.
    fn flush(&self) {
        for what in ["-t", "-l", "-s"] {
            self.run("tpm2_flushcontext", &[what]);
        }
    }
}

#[cfg(feature = "pkcs11")]
impl Drop for SoftwareTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A key made in a TPM 2.0 (swtpm) that never leaves it, reached through
/// tpm2-pkcs11 on the same PKCS#11 path as any token: a P-256 and an
/// RSA-2048 key, each with a certificate from the test CA, get sessions and
/// botocore gets credentials.
#[cfg(feature = "pkcs11")]
#[test]
fn keys_in_a_tpm_get_sessions() {
    // Debian's multiarch directory.
    let module = format!(
        "/usr/lib/{}-linux-gnu/pkcs11/libtpm2_pkcs11.so",
        std::env::consts::ARCH
    );
    let module = module.as_str();
    for needed in [
        module,
        "/usr/bin/swtpm",
        "/usr/bin/pkcs11-tool",
        "/usr/bin/tpm2_flushcontext",
    ] {
        assert!(
            std::path::Path::new(needed).exists(),
            "{needed} is missing (Debian: swtpm libtpm2-pkcs11-1 tpm2-tools opensc; `bash .ci/run` installs them)"
        );
    }
    let pki = Pki::new();
    let service = Service::start(&pki, sts::moto());
    let tpm = SoftwareTpm::start();
    let p11 = |args: &[&str]| {
        let mut all = vec!["--module", module];
        all.extend(args);
        tpm.run("pkcs11-tool", &all);
    };
    p11(&["--init-token", "--label", "imds-tpm", "--so-pin", "5678"]);
    p11(&[
        "--token-label",
        "imds-tpm",
        "--login",
        "--login-type",
        "so",
        "--so-pin",
        "5678",
        "--init-pin",
        "--pin",
        "1234",
    ]);
    // tpm2-pkcs11 leaves the token's primary key loaded.
    tpm.run("tpm2_flushcontext", &["-t"]);
    for (label, id, kind) in [
        ("host-ec", "01", "EC:prime256v1"),
        ("host-rsa", "02", "rsa:2048"),
    ] {
        p11(&[
            "--token-label",
            "imds-tpm",
            "--login",
            "--pin",
            "1234",
            "--keypairgen",
            "--key-type",
            kind,
            "--label",
            label,
            "--id",
            id,
        ]);
        // The public half, for the CA to certify.
        let public = pki.dir.path().join(format!("{label}.pub.der"));
        let public_arg = public.display().to_string();
        p11(&[
            "--token-label",
            "imds-tpm",
            "--read-object",
            "--type",
            "pubkey",
            "--id",
            id,
            "-o",
            &public_arg,
        ]);
        let out = Command::new(python())
            .arg(py_script("ra_pki.py"))
            .arg(pki.dir.path())
            .args(["leaf", label, &public_arg])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let pin = tpm.dir.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    for label in ["host-ec", "host-rsa"] {
        tpm.flush();
        let config = token_config(
            &service,
            &pki,
            &pki.path(&format!("{label}.pem")),
            module,
            &format!("pkcs11:token=imds-tpm;object={label}"),
            &pin,
        );
        let env: Vec<(&str, String)> = tpm.env().into_iter().collect();
        let agent = dev_agent(&config, &env);
        let got = botocore(&format!("http://{}", agent.addr), &[], &[]);
        assert_eq!(
            got["method"],
            "iam-role",
            "{label}: {got}\n{}",
            agent.logs()
        );
        agent.wait_for_log("Roles Anywhere issued a session");
        let calls = service.calls();
        let serial = pki_serial(&pki.path(&format!("{label}.pem")));
        assert!(
            calls
                .iter()
                .any(|c| c["status"] == 201 && c["serial"] == serial.as_str()),
            "{label}: {calls:?}"
        );
    }
}

/// A certificate's serial number in decimal, as the service reports it.
#[cfg(feature = "pkcs11")]
fn pki_serial(path: &str) -> String {
    imds_agent::creds::roles_anywhere::der::cert_info(&pem_der(path))
        .unwrap()
        .serial
}
