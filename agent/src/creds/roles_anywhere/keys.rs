//! The certificate, its chain and its private key, from PEM files as CAs
//! hand them out: certificates (`CERTIFICATE` blocks, leaf first in the
//! certificate file, issuers in the chain file) and a key as PKCS#8
//! (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
//! The key must be the certificate's: a mismatched pair is refused here,
//! with a message that says so, not by the service later.

use std::time::SystemTime;

use base64::Engine as _;

use super::der::{self, CertInfo, DerError, OCTET_STRING, element};
use super::sign::{SignError, SoftKey};

/// Why the certificate or key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: no PEM block {1:?} in it")]
    NoBlock(String, &'static str),
    #[error("{0}: a PEM block is not base64")]
    BadBase64(String),
    #[error("{0}: {1}")]
    Certificate(String, DerError),
    #[error("{0}: {1}")]
    Key(String, SignError),
    #[error("{0}: {1}")]
    Unsupported(String, &'static str),
    #[error("the private key in {key} is not the key of the certificate in {cert}")]
    Mismatch { key: String, cert: String },
}

/// One PEM block: its label and DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub label: String,
    pub der: Vec<u8>,
}

/// Every PEM block of `text` (`origin` names it in errors).
pub fn blocks(origin: &str, text: &str) -> Result<Vec<Block>, KeyError> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        for line in lines.by_ref() {
            let line = line.trim();
            if line == end {
                break;
            }
            // Encrypted PKCS#1 carries headers (`Proc-Type: …`).
            if line.contains(':') {
                return Err(KeyError::Unsupported(
                    origin.to_owned(),
                    "an encrypted PKCS#1/SEC1 key (\"Proc-Type\"): convert it to encrypted PKCS#8 (openssl pkcs8 -topk8)",
                ));
            }
            b64.push_str(line);
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| KeyError::BadBase64(origin.to_owned()))?;
        out.push(Block {
            label: label.to_owned(),
            der,
        });
    }
    Ok(out)
}

/// A certificate: its DER and what the agent reads from it.
pub type Cert = (Vec<u8>, CertInfo);

/// The certificates of `text`, in order, each read (`origin` names it).
pub fn certificates(origin: &str, text: &str) -> Result<Vec<Cert>, KeyError> {
    let certs: Vec<Cert> = blocks(origin, text)?
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| {
            let info =
                der::cert_info(&b.der).map_err(|e| KeyError::Certificate(origin.to_owned(), e))?;
            Ok((b.der, info))
        })
        .collect::<Result<_, KeyError>>()?;
    if certs.is_empty() {
        return Err(KeyError::NoBlock(origin.to_owned(), "CERTIFICATE"));
    }
    Ok(certs)
}

const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// The private key of `text` (`origin` names it), for a certificate whose
/// key is `cert`'s; `passphrase` decrypts an encrypted PKCS#8 key.
pub fn private_key(
    origin: &str,
    text: &str,
    passphrase: Option<&[u8]>,
    cert: &CertInfo,
) -> Result<SoftKey, KeyError> {
    let unsupported = |what| KeyError::Unsupported(origin.to_owned(), what);
    let key_error = |e| KeyError::Key(origin.to_owned(), e);
    let block = blocks(origin, text)?
        .into_iter()
        .find(|b| b.label.ends_with("PRIVATE KEY"))
        .ok_or_else(|| KeyError::NoBlock(origin.to_owned(), "PRIVATE KEY"))?;
    let is_rsa = cert.key_algorithm == RSA_ENCRYPTION;
    let is_ec = cert.key_algorithm == EC_PUBLIC_KEY;
    let p384 = is_ec && cert.key_curve.as_deref() == Some(P384);
    if is_ec && !p384 && cert.key_curve.as_deref() != Some(P256) {
        return Err(unsupported(
            "an EC key on a curve other than P-256 and P-384",
        ));
    }
    if !is_rsa && !is_ec {
        return Err(unsupported("a certificate whose key is neither RSA nor EC"));
    }
    let pkcs8 = |der: &[u8]| pkcs8_key(der, cert);
    let key = match block.label.as_str() {
        "PRIVATE KEY" => pkcs8(&block.der).map_err(key_error)?,
        "ENCRYPTED PRIVATE KEY" => {
            let passphrase = passphrase.ok_or_else(|| {
                unsupported(
                    "an encrypted key, and no passphrase is configured (private_key_passphrase_file or private_key_passphrase_credential)",
                )
            })?;
            let encrypted = pkcs8::EncryptedPrivateKeyInfo::try_from(block.der.as_slice())
                .map_err(|_| unsupported("a malformed encrypted PKCS#8 key"))?;
            if !kdf_is_bounded(&encrypted.encryption_algorithm) {
                return Err(unsupported(
                    "an encrypted key whose key derivation costs more than the agent allows (PBKDF2 over 10 million iterations, or scrypt over 256 MiB or p=4)",
                ));
            }
            let decrypted = encrypted.decrypt(passphrase).map_err(|_| {
                unsupported(
                    "an encrypted key the passphrase does not open (or an unsupported cipher)",
                )
            })?;
            pkcs8(decrypted.as_bytes()).map_err(key_error)?
        }
        "RSA PRIVATE KEY" if is_rsa => SoftKey::rsa(&block.der).map_err(key_error)?,
        "EC PRIVATE KEY" if p384 => {
            let (private, _) =
                sec1_parts(&block.der).ok_or_else(|| unsupported("a malformed SEC1 key"))?;
            SoftKey::ecdsa_p384(&private).map_err(key_error)?
        }
        "EC PRIVATE KEY" if is_ec => {
            let (private, public) =
                sec1_parts(&block.der).ok_or_else(|| unsupported("a malformed SEC1 key"))?;
            let public = public.ok_or_else(|| {
                unsupported("a SEC1 key without its public key: convert it to PKCS#8")
            })?;
            SoftKey::ecdsa_p256_parts(&private, &public).map_err(key_error)?
        }
        _ => return Err(unsupported("a key of another kind than the certificate's")),
    };
    if key.public_key() != cert.public_key {
        return Err(KeyError::Mismatch {
            key: origin.to_owned(),
            cert: "the certificate".to_owned(),
        });
    }
    Ok(key)
}

/// Whether decrypting with `scheme` takes bounded time and memory: the
/// decoder takes any iteration count, and a key file of 2^32 PBKDF2
/// iterations (or a huge scrypt) would hold a thread for hours.
fn kdf_is_bounded(scheme: &pkcs8::pkcs5::EncryptionScheme<'_>) -> bool {
    use pkcs8::pkcs5::{EncryptionScheme, pbes2::Kdf};
    match scheme {
        EncryptionScheme::Pbes2(params) => match &params.kdf {
            Kdf::Pbkdf2(p) => p.iteration_count <= 10_000_000,
            // Memory is 128·r·N bytes: at most 256 MiB.
            Kdf::Scrypt(p) => {
                p.parallelization <= 4
                    && p.block_size <= 16
                    && p.cost_parameter
                        .saturating_mul(128 * u64::from(p.block_size))
                        <= 256 << 20
            }
            _ => false,
        },
        // PBES1 is refused by `decrypt` anyway.
        _ => true,
    }
}

/// Whether `cert`'s key is RSA (else EC).
pub fn is_rsa(cert: &CertInfo) -> bool {
    cert.key_algorithm == RSA_ENCRYPTION
}

/// A PKCS#8 key of the kind of `cert`'s.
fn pkcs8_key(der: &[u8], cert: &CertInfo) -> Result<SoftKey, SignError> {
    if cert.key_algorithm == RSA_ENCRYPTION {
        SoftKey::rsa(der)
    } else if cert.key_curve.as_deref() == Some(P384) {
        SoftKey::ecdsa_p384(der)
    } else {
        SoftKey::ecdsa_p256(der)
    }
}

/// The certificates (leaf first) and key of PKCS#12 file `der` (`origin`
/// names it), opened with `password` (empty if none).
pub fn pkcs12(
    origin: &str,
    der: &[u8],
    password: Option<&[u8]>,
) -> Result<(Vec<Cert>, SoftKey), KeyError> {
    let unsupported = |what| KeyError::Unsupported(origin.to_owned(), what);
    let password = std::str::from_utf8(password.unwrap_or_default())
        .map_err(|_| unsupported("a PKCS#12 password that is not UTF-8"))?;
    let store = p12_keystore::KeyStore::from_pkcs12(
        der,
        password,
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .map_err(|_| {
        unsupported("a PKCS#12 file the password does not open (or with legacy RC2/3DES encryption: re-export it with AES)")
    })?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or_else(|| unsupported("a PKCS#12 file without a private key and its certificate"))?;
    let certs: Vec<Cert> = chain
        .certs()
        .iter()
        .map(|c| {
            let info = der::cert_info(c.as_der())
                .map_err(|e| KeyError::Certificate(origin.to_owned(), e))?;
            Ok((c.as_der().to_vec(), info))
        })
        .collect::<Result<_, KeyError>>()?;
    let leaf = certs
        .first()
        .ok_or_else(|| KeyError::NoBlock(origin.to_owned(), "CERTIFICATE"))?;
    let key = pkcs8_key(chain.key().as_der(), &leaf.1)
        .map_err(|e| KeyError::Key(origin.to_owned(), e))?;
    if key.public_key() != leaf.1.public_key {
        return Err(KeyError::Mismatch {
            key: origin.to_owned(),
            cert: origin.to_owned(),
        });
    }
    Ok((certs, key))
}

/// Whether `signer` holds the key of certificate `cert`: a signature it
/// makes checks out with the certificate's public key (for keys whose
/// public half the agent can't read, such as a token's).
pub fn signs_for(signer: &dyn super::sign::Signer, cert: &CertInfo) -> Result<bool, SignError> {
    use ring::signature::{ECDSA_P256_SHA256_ASN1, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
    let message = b"imds-agent: is this key the certificate's?";
    let signature = signer.sign(message)?;
    if cert.key_algorithm == RSA_ENCRYPTION {
        let key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &cert.public_key);
        return Ok(key.verify(message, &signature).is_ok());
    }
    if cert.key_curve.as_deref() == Some(P384) {
        use p384::ecdsa::signature::hazmat::PrehashVerifier as _;
        let (Ok(key), Ok(signature)) = (
            p384::ecdsa::VerifyingKey::from_sec1_bytes(&cert.public_key),
            p384::ecdsa::DerSignature::from_bytes(&signature),
        ) else {
            return Ok(false);
        };
        // SHA-256 prehash, as the signer signs.
        let digest = ring::digest::digest(&ring::digest::SHA256, message);
        return Ok(key.verify_prehash(digest.as_ref(), &signature).is_ok());
    }
    let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &cert.public_key);
    Ok(key.verify(message, &signature).is_ok())
}

/// SEC1's private scalar and public point (when present).
fn sec1_parts(der: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let (tag, seq, _) = element(der).ok()?;
    if tag != der::SEQUENCE {
        return None;
    }
    let (tag, version, rest) = element(seq).ok()?;
    if tag != der::INTEGER || version != [1] {
        return None;
    }
    let (tag, private, mut rest) = element(rest).ok()?;
    if tag != OCTET_STRING {
        return None;
    }
    let mut public = None;
    while !rest.is_empty() {
        let (tag, contents, after) = element(rest).ok()?;
        if tag == 0xa1 {
            let (tag, bits, _) = element(contents).ok()?;
            if tag == der::BIT_STRING && bits.first() == Some(&0) {
                public = Some(bits[1..].to_vec());
            }
        }
        rest = after;
    }
    Some((private.to_vec(), public))
}

/// Whether `cert` is valid at `now`, and if not, why.
pub fn validity(cert: &CertInfo, now: SystemTime) -> Result<(), &'static str> {
    if now < cert.not_before {
        return Err("not valid yet");
    }
    if now >= cert.not_after {
        return Err("expired");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
