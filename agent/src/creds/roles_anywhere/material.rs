//! The certificate, chain and key the provider signs with, read from their
//! files and read again when the files change (cert-manager, step-ca,
//! Vault, certbot rotate them in place). A new set that can't be used (half
//! a rotation, a key that is not the certificate's, a certificate not
//! valid yet or already expired) leaves the last good one in force, with
//! the error kept for `status`, and is tried again every few minutes even
//! if no file changes (a token briefly absent, `$CREDENTIALS_DIRECTORY` not
//! mounted yet).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::der::CertInfo;
use super::keys::{self, KeyError};
use super::provider::{Passphrase, Settings, StartError, Token};
use super::sign::Signer;

/// How soon a set that could not be used is read again though no file
/// changed.
pub const RETRY_FAILED: Duration = Duration::from_secs(300);

/// How long a session waits for another call's reload (the session's own
/// deadline is 9 s).
const RELOAD_WAIT: Duration = Duration::from_secs(5);

/// The certificate, chain and key in force, and the files' state they were
/// read from.
#[derive(Debug)]
pub struct Material {
    pub certificate: Vec<u8>,
    pub info: CertInfo,
    pub chain: Vec<Vec<u8>>,
    pub key: Arc<dyn Signer>,
}

/// What says a file changed: its inode, size and modification time.
type Stamp = Option<(u64, u64, SystemTime)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    // Followed: a Kubernetes secret volume swaps a symlink.
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.len(), meta.modified().ok()?))
}

/// Every file the set is read from, the passphrase's (or PIN's) included:
/// a key re-encrypted with a new passphrase is often written before it. A
/// token's key has no file (`private_key` is its URI, not a path).
fn stamps(settings: &Settings) -> Vec<Stamp> {
    let mut out = vec![stamp(&settings.certificate)];
    if settings.token.is_none() {
        out.push(stamp(&settings.private_key));
    }
    if let Some(chain) = &settings.chain {
        out.push(stamp(chain));
    }
    if let Some(passphrase) = &settings.passphrase {
        out.push(passphrase.path().ok().and_then(|p| stamp(&p)));
    }
    out
}

/// The set in force and what became of the last look at the files.
#[derive(Debug, Default)]
struct State {
    held: Option<Arc<Material>>,
    /// The files' stamps when they were last read.
    seen: Vec<Stamp>,
    /// Why the files as they are now can't be used, and since when.
    failure: Option<(String, Instant)>,
}

/// The set in force, reloaded when its files change.
#[derive(Debug)]
pub struct Materials {
    settings: Settings,
    /// [`RETRY_FAILED`], in milliseconds (shorter in tests).
    pub(super) retry_after_failure_ms: std::sync::atomic::AtomicU64,
    state: Mutex<State>,
    /// One reload at a time (a token's session is not for two).
    reloading: Mutex<()>,
    /// The token's key, opened once for the life of the provider: its
    /// login belongs to the token, and a second login fails.
    token: Mutex<Option<Arc<dyn Signer>>>,
}

impl Materials {
    /// Reads the set now: an error if it can't be used.
    pub fn new(settings: Settings) -> Result<Self, StartError> {
        let this = Self {
            settings,
            retry_after_failure_ms: std::sync::atomic::AtomicU64::new(
                RETRY_FAILED.as_millis() as u64
            ),
            state: Mutex::new(State::default()),
            reloading: Mutex::new(()),
            token: Mutex::new(None),
        };
        let seen = stamps(&this.settings);
        let material = load(&this.settings, &this.token)?;
        *this.lock() = State {
            held: Some(Arc::new(material)),
            seen,
            failure: None,
        };
        Ok(this)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The set in force, without looking at the files.
    pub fn held(&self) -> Option<Arc<Material>> {
        self.lock().held.clone()
    }

    /// Why the files as they are now can't be used.
    pub fn reload_error(&self) -> Option<String> {
        self.lock().failure.as_ref().map(|(e, _)| e.clone())
    }

    /// The set to sign with at `now`: read again if a file changed, or if
    /// the last read failed a while ago. Blocking (files, key derivation,
    /// a token): called off the async workers. A reload that another call
    /// has had under way for [`RELOAD_WAIT`] is not waited for: the set in
    /// force is used.
    pub fn current(&self, now: SystemTime) -> Option<Arc<Material>> {
        match super::lock::lock_within(&self.reloading, RELOAD_WAIT) {
            Some(_one) => self.reload_if_changed(now),
            None => self.held(),
        }
    }

    /// `current`, unless a reload is under way: then the set in force, at
    /// once (`status` and the metrics must not wait on a slow token or
    /// key derivation).
    pub fn current_or_held(&self, now: SystemTime) -> Option<Arc<Material>> {
        match self.reloading.try_lock() {
            Ok(_one) => self.reload_if_changed(now),
            Err(std::sync::TryLockError::Poisoned(e)) => {
                let _one = e.into_inner();
                self.reload_if_changed(now)
            }
            Err(std::sync::TryLockError::WouldBlock) => self.held(),
        }
    }

    /// The reload itself; the caller holds `reloading`.
    fn reload_if_changed(&self, now: SystemTime) -> Option<Arc<Material>> {
        let seen = stamps(&self.settings);
        let held = {
            let st = self.lock();
            let retry = st.failure.as_ref().is_some_and(|(_, at)| {
                let ms = self
                    .retry_after_failure_ms
                    .load(std::sync::atomic::Ordering::Relaxed);
                at.elapsed() >= Duration::from_millis(ms)
            });
            if st.seen == seen && !retry {
                return st.held.clone();
            }
            st.held.clone()
        };
        let result = load(&self.settings, &self.token).and_then(|new| {
            // A valid certificate is not given up for one that is not: a
            // clock behind the CA's, or an old file put back.
            let valid = |m: &Material| keys::validity(&m.info, now).is_ok();
            match keys::validity(&new.info, now) {
                Err(why) if held.as_deref().is_some_and(valid) => Err(StartError::NotValid(
                    self.settings.certificate.display().to_string(),
                    new.info.serial.clone(),
                    why,
                )),
                _ => Ok(new),
            }
        });
        let mut st = self.lock();
        st.seen = seen;
        match result {
            Ok(material) => {
                tracing::info!(
                    certificate = %self.settings.certificate.display(),
                    serial = %material.info.serial,
                    expires = %crate::timefmt::iso8601(material.info.not_after),
                    "Roles Anywhere certificate and key read"
                );
                st.held = Some(Arc::new(material));
                st.failure = None;
            }
            Err(error) => {
                tracing::error!(%error, "the new Roles Anywhere certificate or key can't be used: keeping the last good ones");
                st.failure = Some((error.to_string(), Instant::now()));
            }
        }
        st.held.clone()
    }
}

/// A PEM file's text.
pub(super) fn read(path: &Path) -> Result<String, StartError> {
    let bytes = std::fs::read(path).map_err(|e| StartError::Read(path.display().to_string(), e))?;
    // Bytes outside the PEM blocks (comments, bag attributes) may be in
    // any encoding: only the blocks matter.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A leaf (DER), what it says, and its chain (DER).
type Certificates = (Vec<u8>, CertInfo, Vec<Vec<u8>>);

/// The leaf and the chain after it: issuers after the leaf in the
/// certificate file, then the chain file's.
fn certificates(settings: &Settings) -> Result<Certificates, StartError> {
    let origin = settings.certificate.display().to_string();
    let mut certs = keys::certificates(&origin, &read(&settings.certificate)?)?;
    let (certificate, info) = certs.remove(0);
    let mut chain: Vec<Vec<u8>> = certs.into_iter().map(|(der, _)| der).collect();
    if let Some(path) = &settings.chain {
        let origin = path.display().to_string();
        chain.extend(
            keys::certificates(&origin, &read(path)?)?
                .into_iter()
                .map(|(der, _)| der),
        );
    }
    Ok((certificate, info, chain))
}

fn load(
    settings: &Settings,
    token_slot: &Mutex<Option<Arc<dyn Signer>>>,
) -> Result<Material, StartError> {
    // Read only where it is used: a token's PIN only when it logs in.
    let passphrase = || match &settings.passphrase {
        Some(source) => source.read().map(Some),
        None => Ok(None),
    };
    if settings.pkcs12 {
        let path = &settings.certificate;
        let der =
            std::fs::read(path).map_err(|e| StartError::Read(path.display().to_string(), e))?;
        let (mut certs, key) =
            keys::pkcs12(&path.display().to_string(), &der, passphrase()?.as_deref())?;
        let (certificate, info) = certs.remove(0);
        return Ok(Material {
            certificate,
            info,
            chain: certs.into_iter().map(|(der, _)| der).collect(),
            key: Arc::new(key),
        });
    }
    let (certificate, info, chain) = certificates(settings)?;
    let cert_origin = settings.certificate.display().to_string();
    if let Some(token) = &settings.token {
        let key = {
            let mut slot = token_slot.lock().unwrap_or_else(|e| e.into_inner());
            match &*slot {
                Some(key) => Arc::clone(key),
                None => {
                    let source = settings.passphrase.clone().ok_or_else(|| {
                        StartError::Token("no PIN is configured (private_key_passphrase_file or private_key_passphrase_credential)".into())
                    })?;
                    let key = open_token(token, source, &info)?;
                    *slot = Some(Arc::clone(&key));
                    key
                }
            }
        };
        if !keys::signs_for(&*key, &info).map_err(|e| StartError::Token(e.to_string()))? {
            return Err(StartError::NotTheCertificates(
                token.uri.clone(),
                cert_origin,
            ));
        }
        return Ok(Material {
            certificate,
            info,
            chain,
            key,
        });
    }
    let key_origin = settings.private_key.display().to_string();
    let key = keys::private_key(
        &key_origin,
        &read(&settings.private_key)?,
        passphrase()?.as_deref(),
        &info,
    )
    .map_err(|e| match e {
        KeyError::Mismatch { key, .. } => KeyError::Mismatch {
            key,
            cert: cert_origin.clone(),
        },
        other => other,
    })?;
    Ok(Material {
        certificate,
        info,
        chain,
        key: Arc::new(key),
    })
}

#[cfg(feature = "pkcs11")]
fn open_token(
    token: &Token,
    pin: Passphrase,
    info: &CertInfo,
) -> Result<Arc<dyn Signer>, StartError> {
    // Read again at every login: it may change while the agent runs.
    let pin: super::pkcs11::PinSource = Arc::new(move || {
        let bytes = pin.read().map_err(|e| e.to_string())?;
        String::from_utf8(bytes).map_err(|_| "the PIN is not UTF-8".to_owned())
    });
    // The module is loaded from the path that was checked: nobody but
    // root can change what it resolves to.
    let module = super::files::trusted_module(&token.module)?;
    let algorithm = if keys::is_rsa(info) {
        super::sign::Algorithm::Rsa
    } else {
        super::sign::Algorithm::Ecdsa
    };
    super::pkcs11::TokenKey::open(&module, &token.uri, pin, algorithm)
        .map(|k| Arc::new(k) as Arc<dyn Signer>)
        .map_err(|e| StartError::Token(e.to_string()))
}

#[cfg(not(feature = "pkcs11"))]
fn open_token(token: &Token, _: Passphrase, _: &CertInfo) -> Result<Arc<dyn Signer>, StartError> {
    Err(StartError::Token(format!(
        "{} needs PKCS#11, and this build has none (cargo feature \"pkcs11\")",
        token.uri
    )))
}

impl Passphrase {
    /// The file it is in.
    pub fn path(&self) -> Result<PathBuf, StartError> {
        match self {
            Passphrase::File(path) => Ok(path.clone()),
            Passphrase::Credential(name) => std::env::var_os("CREDENTIALS_DIRECTORY")
                .map(|dir| PathBuf::from(dir).join(name))
                .ok_or_else(|| StartError::NoCredentials(name.clone())),
        }
    }

    /// Its bytes: the file's whole content less a final line ending.
    pub fn read(&self) -> Result<Vec<u8>, StartError> {
        let path = self.path()?;
        let mut bytes =
            std::fs::read(&path).map_err(|e| StartError::Read(path.display().to_string(), e))?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_uri_is_not_a_file_to_watch() {
        let settings = Settings {
            certificate: PathBuf::from("/etc/pki/host.pem"),
            pkcs12: false,
            chain: None,
            // Relative: stat-ing it would look in the working directory,
            // where another user might make a file of that name.
            private_key: PathBuf::from("pkcs11:token=t;object=k"),
            passphrase: Some(Passphrase::File(PathBuf::from("/etc/pki/pin"))),
            token: Some(Token {
                module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
                uri: "pkcs11:token=t;object=k".into(),
            }),
            endpoint: String::new(),
            region: String::new(),
            ca_bundle: None,
            session: super::super::client::SessionParams {
                trust_anchor_arn: String::new(),
                profile_arn: String::new(),
                role_arn: String::new(),
                duration: Duration::from_secs(900),
                session_name: None,
            },
        };
        // The certificate and the PIN file.
        assert_eq!(stamps(&settings).len(), 2);
        let file_key = Settings {
            token: None,
            ..settings
        };
        assert_eq!(stamps(&file_key).len(), 3);
    }
}
