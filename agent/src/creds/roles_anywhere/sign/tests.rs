//! The signer against SigV4's published example and against the public
//! keys of test certificates (`testdata/`: made with openssl for these
//! tests only, valid for nothing).

use std::time::{Duration, UNIX_EPOCH};

use ring::signature::{ECDSA_P256_SHA256_ASN1, RSA_PKCS1_2048_8192_SHA256};

use super::*;

const EC_CERT: &[u8] = include_bytes!("../testdata/ec-p256.crt.der");
const EC_KEY: &[u8] = include_bytes!("../testdata/ec-p256.pk8");
const RSA_CERT: &[u8] = include_bytes!("../testdata/rsa.crt.der");
const RSA_KEY: &[u8] = include_bytes!("../testdata/rsa-pkcs1.der");

/// AWS's worked example of SigV4 (IAM `ListUsers`, 2015-08-30): the same
/// canonical request and string to sign, but for the algorithm's name.
#[test]
fn the_published_sigv4_example() {
    let headers = [
        (
            "Content-Type".to_owned(),
            " application/x-www-form-urlencoded;  charset=utf-8".to_owned(),
        ),
        ("Host".to_owned(), "iam.amazonaws.com".to_owned()),
        ("X-Amz-Date".to_owned(), "20150830T123600Z".to_owned()),
    ];
    let (canonical, signed) = canonical_request(
        "GET",
        "/",
        &[("Version", "2010-05-08"), ("Action", "ListUsers")],
        &headers,
        b"",
    );
    assert_eq!(
        canonical,
        "GET\n/\nAction=ListUsers&Version=2010-05-08\n\
         content-type:application/x-www-form-urlencoded; charset=utf-8\n\
         host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
         content-type;host;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(signed, "content-type;host;x-amz-date");
    let to_sign = string_to_sign(
        Algorithm::Rsa,
        "20150830T123600Z",
        "20150830/us-east-1/iam/aws4_request",
        &canonical,
    );
    assert_eq!(
        to_sign,
        "AWS4-X509-RSA-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\n\
         f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
    );
}

#[test]
fn query_encoding_is_sigv4s() {
    assert_eq!(
        canonical_query(&[
            (
                "trustAnchorArn",
                "arn:aws:rolesanywhere:eu-west-1:1:trust-anchor/a b"
            ),
            ("profileArn", "x~y_z.-"),
        ]),
        "profileArn=x~y_z.-&trustAnchorArn=arn%3Aaws%3Arolesanywhere%3Aeu-west-1%3A1%3Atrust-anchor%2Fa%20b"
    );
    assert_eq!(canonical_query(&[]), "");
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name}"))
}

/// Signs a request with `key`, then checks it as the service would: the
/// canonical request rebuilt from the headers sent, the signature checked
/// with the certificate's public key.
fn signed_and_checked(
    key: &dyn Signer,
    cert: &[u8],
    public_key: &[u8],
    verify: &'static dyn ring::signature::VerificationAlgorithm,
) -> Vec<(String, String)> {
    let chain = vec![b"not really a CA".to_vec(), b"nor this".to_vec()];
    let body = br#"{"durationSeconds":3600,"profileArn":"p","roleArn":"r","trustAnchorArn":"t"}"#;
    let request = Request {
        host: "rolesanywhere.eu-west-1.amazonaws.com",
        query: &[],
        body,
        region: "eu-west-1",
        time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        certificate: cert,
        chain: &chain,
    };
    let headers = sign(&request, key).unwrap();
    assert_eq!(header(&headers, "x-amz-date"), "20231114T221320Z");
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(b64.decode(header(&headers, "x-amz-x509")).unwrap(), cert);
    assert_eq!(
        header(&headers, "x-amz-x509-chain"),
        format!("{},{}", b64.encode(&chain[0]), b64.encode(&chain[1]))
    );
    let auth = header(&headers, "authorization");
    let (algorithm, rest) = auth.split_once(' ').unwrap();
    assert_eq!(algorithm, key.algorithm().as_str());
    let fields: Vec<&str> = rest.split(", ").collect();
    let credential = fields[0].strip_prefix("Credential=").unwrap();
    let (serial, scope) = credential.split_once('/').unwrap();
    assert_eq!(serial, serial_decimal(cert).unwrap());
    assert_eq!(scope, "20231114/eu-west-1/rolesanywhere/aws4_request");
    let signed = fields[1].strip_prefix("SignedHeaders=").unwrap();
    assert_eq!(
        signed,
        "content-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain"
    );
    let signature = fields[2].strip_prefix("Signature=").unwrap();
    let signature: Vec<u8> = (0..signature.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&signature[i..i + 2], 16).unwrap())
        .collect();
    let sent: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| signed.split(';').any(|s| s == n))
        .cloned()
        .collect();
    let (canonical, _) = canonical_request("POST", "/sessions", &[], &sent, body);
    let to_sign = string_to_sign(key.algorithm(), "20231114T221320Z", scope, &canonical);
    let public = ring::signature::UnparsedPublicKey::new(verify, public_key);
    public
        .verify(to_sign.as_bytes(), &signature)
        .expect("the signature checks out");
    // One byte changed anywhere signed and it does not.
    let mut body_changed = body.to_vec();
    body_changed[5] ^= 1;
    let (canonical, _) = canonical_request("POST", "/sessions", &[], &sent, &body_changed);
    let to_sign = string_to_sign(key.algorithm(), "20231114T221320Z", scope, &canonical);
    assert!(public.verify(to_sign.as_bytes(), &signature).is_err());
    headers
}

#[test]
fn an_ecdsa_p256_signature_checks_out_with_the_certificates_key() {
    let key = SoftKey::ecdsa_p256(EC_KEY).unwrap();
    let public = key.public_key();
    let headers = signed_and_checked(&key, EC_CERT, &public, &ECDSA_P256_SHA256_ASN1);
    assert!(
        header(&headers, "authorization")
            .starts_with("AWS4-X509-ECDSA-SHA256 Credential=90144042682896311822508713865/")
    );
}

#[test]
fn an_rsa_signature_checks_out_with_the_certificates_key() {
    let key = SoftKey::rsa(RSA_KEY).unwrap();
    let public = key.public_key();
    let headers = signed_and_checked(&key, RSA_CERT, &public, &RSA_PKCS1_2048_8192_SHA256);
    assert!(header(&headers, "authorization").starts_with("AWS4-X509-RSA-SHA256 Credential=4242/"));
}

#[test]
fn keys_of_the_wrong_kind_are_refused_and_never_printed() {
    assert!(SoftKey::rsa(EC_KEY).is_err());
    assert!(SoftKey::ecdsa_p256(RSA_KEY).is_err());
    assert!(SoftKey::ecdsa_p256(b"garbage").is_err());
    let key = SoftKey::ecdsa_p256(EC_KEY).unwrap();
    let shown = format!("{key:?}");
    assert_eq!(shown, "SoftKey { algorithm: Ecdsa, .. }");
}
