//! Roles Anywhere keys that never leave a PKCS#11 token (an HSM, SoftHSM2,
//! a TPM behind its PKCS#11 module): `private_key = "pkcs11:token=…;
//! object=…"` (RFC 7512), the module's path in the config, the PIN from a
//! file or a systemd credential. EC keys sign a SHA-256 digest computed
//! here (`CKM_ECDSA`, the token's r‖s turned into DER); RSA keys sign with
//! `CKM_SHA256_RSA_PKCS`.

use std::path::Path;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use ring::digest::{SHA256, digest};

use super::sign::{Algorithm, SignError, Signer};

/// The parts of a `pkcs11:` URI the agent uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
}

/// Why a token key can't be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0:?} is not a pkcs11: URI: {1}")]
    Uri(String, &'static str),
    #[error("the PKCS#11 module {0}: {1}")]
    Module(String, cryptoki::error::Error),
    #[error("no token matches {0}")]
    NoToken(String),
    #[error("the token refused the PIN: {0}")]
    Login(cryptoki::error::Error),
    #[error("the PIN: {0}")]
    Pin(String),
    #[error(
        "the token refused this PIN before: not tried again (a token locks after a few wrong PINs) until the PIN file changes"
    )]
    PinRefusedBefore,
    #[error("no private key matches {0} (or more than one does)")]
    NoKey(String),
    #[error("the token: {0}")]
    Token(cryptoki::error::Error),
}

/// `%XX` decoding of a URI component.
fn unescape(raw: &str, uri: &str) -> Result<Vec<u8>, TokenError> {
    let bad = || TokenError::Uri(uri.to_owned(), "a bad %-escape");
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Parses `pkcs11:token=…;object=…;id=%01;serial=…`. A PIN in the URI
/// (`pin-value`) is refused: it would sit in the config.
pub fn parse_uri(uri: &str) -> Result<Uri, TokenError> {
    let rest = uri
        .strip_prefix("pkcs11:")
        .ok_or_else(|| TokenError::Uri(uri.to_owned(), "it does not start with pkcs11:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if query.split('&').any(|q| q.starts_with("pin-value")) {
        return Err(TokenError::Uri(
            uri.to_owned(),
            "a PIN does not go in the URI: use the PIN file or systemd credential",
        ));
    }
    let mut out = Uri::default();
    for attribute in path.split(';').filter(|a| !a.is_empty()) {
        let (name, value) = attribute
            .split_once('=')
            .ok_or_else(|| TokenError::Uri(uri.to_owned(), "an attribute without a value"))?;
        let value = unescape(value, uri)?;
        let text = || {
            String::from_utf8(value.clone())
                .map_err(|_| TokenError::Uri(uri.to_owned(), "a name that is not UTF-8"))
        };
        match name {
            "token" => out.token = Some(text()?),
            "serial" => out.serial = Some(text()?),
            "object" => out.object = Some(text()?),
            "id" => out.id = Some(value),
            // Other attributes (manufacturer, model, type, slot-id…) narrow
            // nothing the agent needs.
            _ => {}
        }
    }
    if out.object.is_none() && out.id.is_none() {
        return Err(TokenError::Uri(
            uri.to_owned(),
            "name the key: object=LABEL or id=%XX",
        ));
    }
    Ok(out)
}

/// A private key in a token, and the session that signs with it.
///
/// One per provider, for the life of the agent: PKCS#11 login state
/// belongs to the token (per application), so logging in again from a
/// second session while the first is open fails with
/// `CKR_USER_ALREADY_LOGGED_IN`. A rotated certificate for the same key
/// reuses this; a session the token dropped (reset, removed, a network
/// HSM reconnecting) is opened again on the next signature.
pub struct TokenKey {
    algorithm: Algorithm,
    uri: Uri,
    uri_text: String,
    /// Where the PIN is read from when the token drops the session and the
    /// agent logs in again (it may have changed since).
    pin: PinSource,
    /// A PIN the token refused: never offered again (tokens lock after a
    /// few wrong ones).
    refused: Mutex<Option<String>>,
    /// One operation at a time per session (PKCS#11 sessions are not for
    /// concurrent use).
    open: Mutex<Open>,
    /// Kept loaded for as long as the session is used.
    context: Pkcs11,
}

/// Reads the token's PIN (its file or systemd credential) when it is needed.
pub type PinSource = std::sync::Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// A logged-in session and the key's handle in it.
struct Open {
    session: Session,
    key: ObjectHandle,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("algorithm", &self.algorithm)
            .field("uri", &self.uri_text)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// Opens the key `uri` names in module `module`, logging in with the
    /// PIN `pin` reads; `algorithm` is the certificate's.
    pub fn open(
        module: &Path,
        uri: &str,
        pin: PinSource,
        algorithm: Algorithm,
    ) -> Result<Self, TokenError> {
        let parsed = parse_uri(uri)?;
        let context =
            Pkcs11::new(module).map_err(|e| TokenError::Module(module.display().to_string(), e))?;
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::CryptokiAlreadyInitialized,
                _,
            )) => {}
            Err(e) => return Err(TokenError::Module(module.display().to_string(), e)),
        }
        let refused = Mutex::new(None);
        let open = connect(&context, &parsed, uri, &pin, &refused)?;
        Ok(Self {
            algorithm,
            uri: parsed,
            uri_text: uri.to_owned(),
            pin,
            refused,
            open: Mutex::new(open),
            context,
        })
    }

    fn sign_once(&self, open: &Open, message: &[u8]) -> Result<Vec<u8>, cryptoki::error::Error> {
        match self.algorithm {
            Algorithm::Ecdsa => {
                let digest = digest(&SHA256, message);
                open.session
                    .sign(&Mechanism::Ecdsa, open.key, digest.as_ref())
            }
            Algorithm::Rsa => open
                .session
                .sign(&Mechanism::Sha256RsaPkcs, open.key, message),
        }
    }
}

/// Finds the token, opens a session, logs in with the PIN `pin` reads
/// (unless the token refused that one before) and finds the key.
fn connect(
    context: &Pkcs11,
    uri: &Uri,
    text: &str,
    pin: &PinSource,
    refused: &Mutex<Option<String>>,
) -> Result<Open, TokenError> {
    let slots = context.get_slots_with_token().map_err(TokenError::Token)?;
    let slot = slots
        .into_iter()
        .find(|slot| {
            context.get_token_info(*slot).is_ok_and(|info| {
                uri.token
                    .as_deref()
                    .is_none_or(|t| info.label().trim_end() == t)
                    && uri
                        .serial
                        .as_deref()
                        .is_none_or(|s| info.serial_number().trim_end() == s)
            })
        })
        .ok_or_else(|| TokenError::NoToken(text.to_owned()))?;
    let session = context.open_ro_session(slot).map_err(TokenError::Token)?;
    let pin = pin().map_err(TokenError::Pin)?;
    let mut refused = refused.lock().unwrap_or_else(|e| e.into_inner());
    if refused.as_deref() == Some(pin.as_str()) {
        return Err(TokenError::PinRefusedBefore);
    }
    use cryptoki::error::{Error as Ck, RvError as Rv};
    match session.login(UserType::User, Some(&AuthPin::from(pin.clone()))) {
        // Another session of this process is logged in: so is this one.
        Ok(()) | Err(Ck::Pkcs11(Rv::UserAlreadyLoggedIn, _)) => {}
        // Locked or expired: the PIN may be right, and a locked token
        // counts no more tries.
        Err(e @ Ck::Pkcs11(Rv::PinIncorrect | Rv::PinInvalid | Rv::PinLenRange, _)) => {
            *refused = Some(pin);
            return Err(TokenError::Login(e));
        }
        Err(e) => return Err(TokenError::Login(e)),
    }
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let found = session.find_objects(&template).map_err(TokenError::Token)?;
    let [key] = found[..] else {
        return Err(TokenError::NoKey(text.to_owned()));
    };
    Ok(Open { session, key })
}

/// Whether the token lost the session (and a new one may work).
fn session_lost(error: &cryptoki::error::Error) -> bool {
    use cryptoki::error::RvError as Rv;
    matches!(
        error,
        cryptoki::error::Error::Pkcs11(
            Rv::SessionHandleInvalid
                | Rv::SessionClosed
                | Rv::DeviceRemoved
                | Rv::DeviceError
                | Rv::TokenNotPresent
                | Rv::UserNotLoggedIn
                | Rv::KeyHandleInvalid
                | Rv::ObjectHandleInvalid,
            _
        )
    )
}

/// DER `Ecdsa-Sig-Value` of a raw `r‖s` signature.
pub fn der_of_raw_ecdsa(raw: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let start = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        let mut v = bytes[start..].to_vec();
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = integer(r);
    body.extend(integer(s));
    let mut out = vec![0x30];
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(body.len() as u8);
    out.extend(body);
    out
}

impl Signer for TokenKey {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        // Waited for a while, not for ever: a token that hangs in one
        // signature must not pile up threads waiting behind it.
        let mut open = super::lock::lock_within(&self.open, std::time::Duration::from_secs(5))
            .ok_or_else(|| {
                SignError::Key("the token is still busy with an earlier signature".into())
            })?;
        let raw = match self.sign_once(&open, message) {
            Err(e) if session_lost(&e) => {
                tracing::warn!(error = %e, uri = %self.uri_text, "the token dropped the session: opening a new one");
                *open = connect(
                    &self.context,
                    &self.uri,
                    &self.uri_text,
                    &self.pin,
                    &self.refused,
                )
                    .map_err(|e| SignError::Key(e.to_string()))?;
                self.sign_once(&open, message)
            }
            other => other,
        }
        .map_err(|e| SignError::Key(format!("the token: {e}")))?;
        match self.algorithm {
            Algorithm::Ecdsa => {
                if raw.is_empty() || raw.len() % 2 != 0 || raw.len() > 132 {
                    return Err(SignError::Key(
                        "the token's ECDSA signature is malformed".into(),
                    ));
                }
                Ok(der_of_raw_ecdsa(&raw))
            }
            Algorithm::Rsa => Ok(raw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let uri =
            parse_uri("pkcs11:token=imds%20agent;object=host-key;id=%01%a2;type=private").unwrap();
        assert_eq!(uri.token.as_deref(), Some("imds agent"));
        assert_eq!(uri.object.as_deref(), Some("host-key"));
        assert_eq!(uri.id, Some(vec![0x01, 0xa2]));
        for bad in [
            "token=x;object=y",
            "pkcs11:token=x",
            "pkcs11:object=y?pin-value=1234",
            "pkcs11:object=%zz",
            "pkcs11:object",
        ] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn raw_ecdsa_signatures_become_der() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[63] = 0x01; // s is 1
        let der = der_of_raw_ecdsa(&raw);
        assert_eq!(&der[..4], &[0x30, 38, 0x02, 33]);
        assert_eq!(der[4], 0x00);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x01]);
        // P-384: 96 bytes, still short-form lengths.
        let der = der_of_raw_ecdsa(&[0x7f; 96]);
        assert_eq!(&der[..2], &[0x30, 100]);
    }
}
