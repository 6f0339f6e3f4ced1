//! The Roles Anywhere test service is right: a client nobody here wrote
//! (PyPI's iam-rolesanywhere-session) gets credentials from it with every
//! kind of good certificate, and every bad certificate, wrong parameter
//! and tampered request is refused as the service refuses it.

mod support;

use std::process::Command;

use support::roles_anywhere::{OTHER_ROLE, PROFILE, Pki, REGION, ROLE, Service, TRUST_ANCHOR};
use support::{py_script, python, sts};

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
    let outcomes: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).unwrap();
    let outcome = |case: &str| outcomes[case].as_str().unwrap_or("").to_owned();
    for good in ["rsa", "p256 with chain", "p384 with chain", "as signed"] {
        assert_eq!(outcome(good), "ok", "{good}: {outcomes:?}");
    }
    for (bad, status) in [
        ("p256 without its chain", "403"),
        ("expired", "403"),
        ("not yet valid", "403"),
        ("untrusted", "403"),
        ("a CA as leaf", "403"),
        ("wrong profile", "404"),
        ("role not allowed", "403"),
    ] {
        let got = outcome(bad);
        assert!(
            got.starts_with("refused ") && got.contains(&format!("HTTP {status}")),
            "{bad}: {got}"
        );
    }
    let tampered: Vec<(&String, &serde_json::Value)> = outcomes
        .iter()
        .filter(|(case, _)| case.contains("flipped") || *case == "serial changed")
        .collect();
    // Every signed header but host (two places each), the body, the
    // signature and the serial.
    assert!(tampered.len() >= 9, "{outcomes:?}");
    for (case, got) in tampered {
        assert_eq!(got, "refused 403", "{case}");
    }
}
