//! Keys in every PEM form CAs hand out, against their certificates
//! (`testdata/`, made with openssl for these tests only).

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::creds::roles_anywhere::sign::Signer as _;

fn data(name: &str) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/creds/roles_anywhere/testdata/"
    );
    std::fs::read_to_string(format!("{path}{name}")).unwrap()
}

fn cert(name: &str) -> CertInfo {
    certificates(name, &data(name)).unwrap().remove(0).1
}

#[test]
fn every_supported_form_loads_and_signs() {
    for (key, crt) in [
        ("ec-sec1.pem", "ec-sec1.crt.pem"),
        ("ec-pkcs8.pem", "ec-sec1.crt.pem"),
        ("rsa-pkcs1.pem", "rsa-pem.crt.pem"),
        ("rsa-pkcs8.pem", "rsa-pem.crt.pem"),
        ("rsa-encrypted.pem", "rsa-pem.crt.pem"),
        ("p384.pem", "p384.crt.pem"),
        ("p384-pkcs8.pem", "p384.crt.pem"),
    ] {
        let info = cert(crt);
        let loaded = private_key(key, &data(key), Some(b"secret"), &info)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(!loaded.sign(b"to sign").unwrap().is_empty(), "{key}");
        assert!(signs_for(&loaded, &info).unwrap(), "{key} signs for {crt}");
        let other = if crt == "rsa-pem.crt.pem" {
            "ec-sec1.crt.pem"
        } else {
            "rsa-pem.crt.pem"
        };
        assert!(
            !signs_for(&loaded, &cert(other)).unwrap(),
            "{key} does not sign for {other}"
        );
    }
}

#[test]
fn what_cannot_be_used_says_why() {
    let rsa = cert("rsa-pem.crt.pem");
    let ec = cert("ec-sec1.crt.pem");
    let err = |key: &str, info: &CertInfo| {
        private_key(key, &data(key), None, info)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("rsa-pkcs1.pem", &ec),
        "rsa-pkcs1.pem: a key of another kind than the certificate's"
    );
    assert!(err("rsa-pkcs8.pem", &ec).contains("not a P-256 key"));
    assert!(err("ec-sec1-nopub.pem", &ec).contains("convert it to PKCS#8"));
    assert!(err("rsa-encrypted.pem", &rsa).contains("no passphrase"));
    let wrong = private_key(
        "rsa-encrypted.pem",
        &data("rsa-encrypted.pem"),
        Some(b"wrong"),
        &rsa,
    );
    assert!(wrong.unwrap_err().to_string().contains("does not open"));
    assert!(err("p384.pem", &ec).contains("not a P-256 key"));
    // Another RSA key than the certificate's.
    let other = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/creds/roles_anywhere/testdata/rsa-pkcs1.der"
    ))
    .unwrap();
    let pem = format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(other)
    );
    assert_eq!(
        private_key("other.pem", &pem, None, &rsa).unwrap_err(),
        KeyError::Mismatch {
            key: "other.pem".into(),
            cert: "the certificate".into()
        }
    );
    assert_eq!(
        certificates("empty.pem", "no pem here")
            .unwrap_err()
            .to_string(),
        "empty.pem: no PEM block \"CERTIFICATE\" in it"
    );
    assert!(matches!(
        certificates(
            "bad.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"
        ),
        Err(KeyError::BadBase64(_))
    ));
    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
    assert!(
        private_key("legacy.pem", legacy, None, &rsa)
            .unwrap_err()
            .to_string()
            .contains("encrypted PKCS#1")
    );
}

#[test]
fn a_chain_file_keeps_its_order_and_validity_is_checked() {
    let chain = format!("{}{}", data("ec-sec1.crt.pem"), data("rsa-pem.crt.pem"));
    let certs = certificates("chain.pem", &chain).unwrap();
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[0].1, cert("ec-sec1.crt.pem"));
    let info = &certs[0].1;
    assert_eq!(
        validity(info, info.not_before + Duration::from_secs(1)),
        Ok(())
    );
    assert_eq!(validity(info, UNIX_EPOCH), Err("not valid yet"));
    assert_eq!(validity(info, info.not_after), Err("expired"));
}
