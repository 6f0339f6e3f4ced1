//! SigV4-X509, the signature of Roles Anywhere's `CreateSession`, as
//! AWS's `aws_signing_helper` computes it (signer.go): SigV4's canonical
//! request and string to sign, with the certificate in `X-Amz-X509` (and
//! its chain in `X-Amz-X509-Chain`), the certificate's serial number (in
//! decimal) in place of an access key id, and the string to sign signed
//! with the certificate's private key over SHA-256, whatever the key:
//! RSASSA-PKCS1-v1_5 for RSA, DER-encoded ECDSA for EC keys.
//!
//! Pure functions of the request, the time and a `Signer`: no I/O.

use std::fmt::Write as _;
use std::time::SystemTime;

use base64::Engine as _;
use ring::digest::{SHA256, digest};

use super::der::{DerError, serial_decimal};
use crate::timefmt::amz_date;

/// The signing name of the service.
pub const SERVICE: &str = "rolesanywhere";

/// The path of `CreateSession` (the helper signs it as is).
pub const PATH: &str = "/sessions";

/// The signature algorithm, named after the key's type (the digest is
/// SHA-256 for every key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rsa,
    /// ECDSA (P-256 or P-384) over SHA-256, the signature DER-encoded.
    Ecdsa,
}

impl Algorithm {
    /// Its name in `Authorization` and the string to sign.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rsa => "AWS4-X509-RSA-SHA256",
            Algorithm::Ecdsa => "AWS4-X509-ECDSA-SHA256",
        }
    }
}

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The certificate could not be read.
    #[error(transparent)]
    Certificate(#[from] DerError),
    /// The key refused to sign (a token error, a key that does not fit).
    #[error("the private key could not sign: {0}")]
    Key(String),
}

/// A private key that signs with SHA-256.
pub trait Signer: std::fmt::Debug + Send + Sync {
    /// The key's algorithm.
    fn algorithm(&self) -> Algorithm;
    /// The signature of `message` (hashed with SHA-256 by the signer).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// A `CreateSession` request to sign.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `Host`, with the port when it is not the scheme's.
    pub host: &'a str,
    /// Query parameters (the helper sends the three ARNs there; an empty
    /// query puts everything in the body).
    pub query: &'a [(&'a str, &'a str)],
    /// The JSON body.
    pub body: &'a [u8],
    /// The region of the endpoint.
    pub region: &'a str,
    /// The signing time.
    pub time: SystemTime,
    /// The leaf certificate, DER.
    pub certificate: &'a [u8],
    /// The intermediate certificates, DER, leaf's issuer first.
    pub chain: &'a [Vec<u8>],
}

/// The headers to send (`Authorization` last). `Content-Length` is not
/// among them: it is not signed.
pub fn sign(
    request: &Request<'_>,
    signer: &dyn Signer,
) -> Result<Vec<(String, String)>, SignError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let serial = serial_decimal(request.certificate)?;
    let date = amz_date(request.time);
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("host".to_owned(), request.host.to_owned()),
        ("x-amz-date".to_owned(), date.clone()),
        ("x-amz-x509".to_owned(), b64.encode(request.certificate)),
    ];
    if !request.chain.is_empty() {
        let chain: Vec<String> = request.chain.iter().map(|c| b64.encode(c)).collect();
        headers.push(("x-amz-x509-chain".to_owned(), chain.join(",")));
    }
    let (canonical, signed_headers) =
        canonical_request("POST", PATH, request.query, &headers, request.body);
    let scope = format!("{}/{}/{SERVICE}/aws4_request", &date[..8], request.region);
    let algorithm = signer.algorithm();
    let to_sign = string_to_sign(algorithm, &date, &scope, &canonical);
    let signature = hex(&signer.sign(to_sign.as_bytes())?);
    headers.push((
        "authorization".to_owned(),
        format!(
            "{} Credential={serial}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            algorithm.as_str()
        ),
    ));
    Ok(headers)
}

/// SigV4's canonical request, and the signed-headers list: every header
/// given, names lower-cased and sorted, values trimmed with inner runs of
/// spaces collapsed.
pub fn canonical_request(
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(String, String)],
    body: &[u8],
) -> (String, String) {
    let mut headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            (name.to_ascii_lowercase(), value)
        })
        .collect();
    headers.sort();
    let mut out = format!("{method}\n{path}\n{}\n", canonical_query(query));
    for (name, value) in &headers {
        let _ = writeln!(out, "{name}:{value}");
    }
    let signed: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
    let signed = signed.join(";");
    let _ = write!(out, "\n{signed}\n{}", hex(digest(&SHA256, body).as_ref()));
    (out, signed)
}

/// The query, percent-encoded as SigV4 does (unreserved characters kept,
/// everything else `%XX`), sorted by name then value.
pub fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `<algorithm>\n<X-Amz-Date>\n<scope>\n<hex SHA-256 of the canonical
/// request>`.
pub fn string_to_sign(algorithm: Algorithm, date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "{}\n{date}\n{scope}\n{}",
        algorithm.as_str(),
        hex(digest(&SHA256, canonical.as_bytes()).as_ref())
    )
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A private key in the agent's memory: RSA or ECDSA P-256 (ring), or
/// ECDSA P-384 (RustCrypto: ring signs P-384 only over SHA-384, and
/// SigV4-X509 signs SHA-256 with every key).
pub struct SoftKey {
    key: SoftKeyKind,
}

enum SoftKeyKind {
    Rsa(ring::rsa::KeyPair),
    EcdsaP256(ring::signature::EcdsaKeyPair),
    EcdsaP384(p384::ecdsa::SigningKey),
}

impl std::fmt::Debug for SoftKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("SoftKey")
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

impl SoftKey {
    /// An RSA key from PKCS#8 or PKCS#1 DER.
    pub fn rsa(der: &[u8]) -> Result<Self, SignError> {
        let key = ring::rsa::KeyPair::from_pkcs8(der)
            .or_else(|_| ring::rsa::KeyPair::from_der(der))
            .map_err(|e| SignError::Key(format!("not an RSA key ring can use: {e}")))?;
        Ok(Self {
            key: SoftKeyKind::Rsa(key),
        })
    }

    /// A P-384 key from PKCS#8 DER, or SEC1's private scalar.
    pub fn ecdsa_p384(pkcs8_or_scalar: &[u8]) -> Result<Self, SignError> {
        use p384::pkcs8::DecodePrivateKey as _;
        let key = p384::ecdsa::SigningKey::from_pkcs8_der(pkcs8_or_scalar)
            .or_else(|_| p384::ecdsa::SigningKey::from_slice(pkcs8_or_scalar))
            .map_err(|_| SignError::Key("not a P-384 key".to_owned()))?;
        Ok(Self {
            key: SoftKeyKind::EcdsaP384(key),
        })
    }

    /// A P-256 key from SEC1's parts: the private scalar and the
    /// uncompressed public point.
    pub fn ecdsa_p256_parts(private: &[u8], public: &[u8]) -> Result<Self, SignError> {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            private,
            public,
            &rng,
        )
        .map_err(|e| SignError::Key(format!("not a P-256 key: {e}")))?;
        Ok(Self {
            key: SoftKeyKind::EcdsaP256(key),
        })
    }

    /// The public key, as a certificate carries it: an RSAPublicKey (DER)
    /// or an uncompressed EC point.
    pub fn public_key(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        match &self.key {
            SoftKeyKind::Rsa(key) => key.public_key().as_ref().to_vec(),
            SoftKeyKind::EcdsaP256(key) => key.public_key().as_ref().to_vec(),
            SoftKeyKind::EcdsaP384(key) => key
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        }
    }

    /// A P-256 key from PKCS#8 DER.
    pub fn ecdsa_p256(pkcs8: &[u8]) -> Result<Self, SignError> {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8,
            &rng,
        )
        .map_err(|e| SignError::Key(format!("not a P-256 key: {e}")))?;
        Ok(Self {
            key: SoftKeyKind::EcdsaP256(key),
        })
    }
}

impl Signer for SoftKey {
    fn algorithm(&self) -> Algorithm {
        match self.key {
            SoftKeyKind::Rsa(_) => Algorithm::Rsa,
            SoftKeyKind::EcdsaP256(_) | SoftKeyKind::EcdsaP384(_) => Algorithm::Ecdsa,
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let rng = ring::rand::SystemRandom::new();
        match &self.key {
            SoftKeyKind::Rsa(key) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &rng,
                    message,
                    &mut signature,
                )
                .map_err(|e| SignError::Key(e.to_string()))?;
                Ok(signature)
            }
            SoftKeyKind::EcdsaP256(key) => key
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|e| SignError::Key(e.to_string())),
            SoftKeyKind::EcdsaP384(key) => {
                use p384::ecdsa::signature::hazmat::PrehashSigner as _;
                let digest = digest(&SHA256, message);
                let signature: p384::ecdsa::Signature = key
                    .sign_prehash(digest.as_ref())
                    .map_err(|e| SignError::Key(e.to_string()))?;
                Ok(signature.to_der().as_bytes().to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests;
