//! Roles Anywhere as a credentials provider: the agent's own credentials
//! for every STS call, from `CreateSession`, cached and refreshed like any
//! provider's by the STS client's identity cache (so never on a
//! workload's request). The certificate, chain and key are read again when
//! their files change (cert-manager, step-ca, Vault, certbot rotate them
//! in place); a bad new set keeps the last good one in force, with an
//! error in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials as SdkCredentials;
use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError};

use super::client::{SessionParams, connector, create_session};
use super::der::CertInfo;
use super::keys::{self, KeyError};
use super::sign::Signer;

/// Warn when the certificate expires within this.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 86_400);

/// Where the agent's certificate and key are, and what to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The certificate (PEM), or with `pkcs12` the PKCS#12 file that holds
    /// the certificate, its chain and the key.
    pub certificate: PathBuf,
    pub pkcs12: bool,
    pub chain: Option<PathBuf>,
    pub private_key: PathBuf,
    /// Where an encrypted key's passphrase (or a token's PIN) is, never
    /// the config itself.
    pub passphrase: Option<Passphrase>,
    /// The key is in a PKCS#11 token (`private_key` is then unused).
    pub token: Option<Token>,
    /// `host[:port]` of the service (HTTPS).
    pub endpoint: String,
    pub region: String,
    /// Extra CAs to trust for the endpoint (PEM), beside the system's.
    pub ca_bundle: Option<PathBuf>,
    pub session: SessionParams,
}

/// A key in a PKCS#11 token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// `pkcs11:token=…;object=…`.
    pub uri: String,
}

/// Where a key's passphrase is read from, when the key is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passphrase {
    /// A file (its whole content, less a final newline).
    File(PathBuf),
    /// A systemd credential (`LoadCredential=`/`LoadCredentialEncrypted=`):
    /// the file of that name in `$CREDENTIALS_DIRECTORY`.
    Credential(String),
}

impl Passphrase {
    fn path(&self) -> Result<PathBuf, StartError> {
        match self {
            Passphrase::File(path) => Ok(path.clone()),
            Passphrase::Credential(name) => std::env::var_os("CREDENTIALS_DIRECTORY")
                .map(|dir| PathBuf::from(dir).join(name))
                .ok_or_else(|| StartError::NoCredentials(name.clone())),
        }
    }

    fn read(&self) -> Result<Vec<u8>, StartError> {
        let path = self.path()?;
        let mut bytes =
            std::fs::read(&path).map_err(|e| StartError::Read(path.display().to_string(), e))?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        Ok(bytes)
    }
}

/// The certificate, chain and key in force, and the files' state they were
/// read from.
#[derive(Debug)]
struct Material {
    certificate: Vec<u8>,
    info: CertInfo,
    chain: Vec<Vec<u8>>,
    key: Arc<dyn Signer>,
    stamps: Vec<Stamp>,
}

/// What says a file changed: its inode, size and modification time.
type Stamp = Option<(u64, u64, SystemTime)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    // Followed: a Kubernetes secret volume swaps a symlink.
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.len(), meta.modified().ok()?))
}

/// The provider.
#[derive(Debug, Clone)]
pub struct RolesAnywhere {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    connector: aws_smithy_http_client::Connector,
    material: Mutex<Option<Arc<Material>>>,
    /// Why the last session could not be had (`None` after a success).
    last_error: Mutex<Option<String>>,
}

/// The certificate in force and the service's last word, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateStatus {
    /// Its file.
    pub certificate: String,
    /// Its serial number (decimal).
    pub serial: Option<String>,
    /// When it expires.
    pub expires: Option<String>,
    /// Seconds until then (0 once expired).
    pub expires_in_seconds: Option<u64>,
    /// Why the last session could not be had.
    pub error: Option<String>,
}

/// Why the provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    #[error(
        "the key's passphrase is the systemd credential {0:?}, but $CREDENTIALS_DIRECTORY is not set (LoadCredential= in the unit)"
    )]
    NoCredentials(String),
    #[error("the key in the token: {0}")]
    Token(String),
    #[error("{0} is not the key of the certificate in {1}")]
    NotTheCertificates(String, String),
    #[error("the HTTPS client for Roles Anywhere: {0}")]
    Https(String),
}

impl RolesAnywhere {
    /// Reads the certificate, chain and key now (a bad set is an error at
    /// start, not at the first STS call).
    pub fn new(settings: Settings) -> Result<Self, StartError> {
        let ca = match &settings.ca_bundle {
            Some(path) => Some(
                std::fs::read(path).map_err(|e| StartError::Read(path.display().to_string(), e))?,
            ),
            None => None,
        };
        let connector = connector(ca.as_deref()).map_err(|e| StartError::Https(e.to_string()))?;
        let material = load(&settings)?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                connector,
                material: Mutex::new(Some(Arc::new(material))),
                last_error: Mutex::new(None),
            }),
        })
    }

    /// The certificate in force.
    pub fn certificate(&self) -> Option<CertInfo> {
        self.lock().as_ref().map(|m| m.info.clone())
    }

    /// What `status` shows.
    pub fn status(&self, now: SystemTime) -> CertificateStatus {
        let info = self.certificate();
        CertificateStatus {
            certificate: self.inner.settings.certificate.display().to_string(),
            serial: info.as_ref().map(|i| i.serial.clone()),
            expires: info.as_ref().map(|i| crate::timefmt::iso8601(i.not_after)),
            expires_in_seconds: info.as_ref().map(|i| {
                i.not_after
                    .duration_since(now)
                    .unwrap_or_default()
                    .as_secs()
            }),
            error: self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn set_error(&self, error: Option<String>) {
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = error;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Material>>> {
        self.inner
            .material
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The material to sign with: read again if a file changed (and kept
    /// if what is there now is not usable).
    fn current(&self) -> Option<Arc<Material>> {
        let settings = &self.inner.settings;
        let now_stamps = stamps(settings);
        let held = self.lock().clone();
        if let Some(held) = &held
            && held.stamps == now_stamps
        {
            return Some(Arc::clone(held));
        }
        match load(settings) {
            Ok(material) => {
                tracing::info!(
                    certificate = %settings.certificate.display(),
                    serial = %material.info.serial,
                    expires = %crate::timefmt::iso8601(material.info.not_after),
                    "Roles Anywhere certificate and key read"
                );
                let material = Arc::new(material);
                *self.lock() = Some(Arc::clone(&material));
                Some(material)
            }
            Err(error) => {
                tracing::error!(%error, "the new Roles Anywhere certificate or key can't be used: keeping the last good ones");
                // Not tried again until the files change once more.
                if let Some(held) = &held {
                    let kept = Material {
                        certificate: held.certificate.clone(),
                        info: held.info.clone(),
                        chain: held.chain.clone(),
                        key: Arc::clone(&held.key),
                        stamps: now_stamps,
                    };
                    let kept = Arc::new(kept);
                    *self.lock() = Some(Arc::clone(&kept));
                    return Some(kept);
                }
                None
            }
        }
    }

    async fn session(&self) -> Result<SdkCredentials, CredentialsError> {
        let result = self.try_session().await;
        self.set_error(result.as_ref().err().map(|e| {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                message = format!("{message}: {cause}");
                source = cause.source();
            }
            message
        }));
        result
    }

    async fn try_session(&self) -> Result<SdkCredentials, CredentialsError> {
        let material = self.current().ok_or_else(|| {
            CredentialsError::not_loaded("no usable Roles Anywhere certificate and key")
        })?;
        let now = SystemTime::now();
        if let Err(why) = keys::validity(&material.info, now) {
            return Err(CredentialsError::invalid_configuration(format!(
                "the Roles Anywhere certificate {} is {why}",
                self.inner.settings.certificate.display()
            )));
        }
        if material.info.not_after < now + EXPIRY_WARNING {
            tracing::warn!(
                certificate = %self.inner.settings.certificate.display(),
                expires = %crate::timefmt::iso8601(material.info.not_after),
                "the Roles Anywhere certificate expires within a week: renew it"
            );
        }
        let settings = &self.inner.settings;
        let issued = create_session(
            &self.inner.connector,
            &settings.endpoint,
            &settings.region,
            &settings.session,
            &material.certificate,
            &material.chain,
            &*material.key,
            now,
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "Roles Anywhere gave no session");
            if e.is_transient() {
                CredentialsError::provider_timed_out(Duration::ZERO)
            } else {
                CredentialsError::provider_error(e)
            }
        })?;
        tracing::info!(
            access_key_suffix = %issued.keys.key_suffix(),
            expiration = %crate::timefmt::iso8601(issued.expiration),
            "Roles Anywhere issued a session"
        );
        let token = issued.keys.session_token.expose().to_owned();
        Ok(SdkCredentials::new(
            issued.keys.access_key_id.clone(),
            issued.keys.secret_access_key.expose(),
            Some(token),
            Some(issued.expiration),
            "roles-anywhere",
        ))
    }
}

fn stamps(settings: &Settings) -> Vec<Stamp> {
    let mut out = vec![stamp(&settings.certificate), stamp(&settings.private_key)];
    if let Some(chain) = &settings.chain {
        out.push(stamp(chain));
    }
    out
}

fn read(path: &Path) -> Result<String, StartError> {
    std::fs::read_to_string(path).map_err(|e| StartError::Read(path.display().to_string(), e))
}

fn load(settings: &Settings) -> Result<Material, StartError> {
    // Stamped before reading: a change while reading is seen next time.
    let stamps = stamps(settings);
    let passphrase = match &settings.passphrase {
        Some(source) => Some(source.read()?),
        None => None,
    };
    if settings.pkcs12 {
        let path = &settings.certificate;
        let der =
            std::fs::read(path).map_err(|e| StartError::Read(path.display().to_string(), e))?;
        let (mut certs, key) =
            keys::pkcs12(&path.display().to_string(), &der, passphrase.as_deref())?;
        let (certificate, info) = certs.remove(0);
        return Ok(Material {
            certificate,
            info,
            chain: certs.into_iter().map(|(der, _)| der).collect(),
            key: Arc::new(key),
            stamps,
        });
    }
    if let Some(token) = &settings.token {
        let cert_origin = settings.certificate.display().to_string();
        let mut certs = keys::certificates(&cert_origin, &read(&settings.certificate)?)?;
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
        let pin = passphrase.ok_or_else(|| {
            StartError::Token("no PIN is configured (private_key_passphrase_file or private_key_passphrase_credential)".into())
        })?;
        let key = open_token(token, &pin, &info)?;
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
            stamps,
        });
    }
    let cert_origin = settings.certificate.display().to_string();
    let mut certs = keys::certificates(&cert_origin, &read(&settings.certificate)?)?;
    let (certificate, info) = certs.remove(0);
    // Issuers after the leaf in the certificate file count as its chain.
    let mut chain: Vec<Vec<u8>> = certs.into_iter().map(|(der, _)| der).collect();
    if let Some(path) = &settings.chain {
        let origin = path.display().to_string();
        chain.extend(
            keys::certificates(&origin, &read(path)?)?
                .into_iter()
                .map(|(der, _)| der),
        );
    }
    let key_origin = settings.private_key.display().to_string();
    let key = keys::private_key(
        &key_origin,
        &read(&settings.private_key)?,
        passphrase.as_deref(),
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
        stamps,
    })
}

#[cfg(feature = "pkcs11")]
fn open_token(token: &Token, pin: &[u8], info: &CertInfo) -> Result<Arc<dyn Signer>, StartError> {
    let pin =
        std::str::from_utf8(pin).map_err(|_| StartError::Token("the PIN is not UTF-8".into()))?;
    let algorithm = if keys::is_rsa(info) {
        super::sign::Algorithm::Rsa
    } else {
        super::sign::Algorithm::Ecdsa
    };
    super::pkcs11::TokenKey::open(&token.module, &token.uri, pin, algorithm)
        .map(|k| Arc::new(k) as Arc<dyn Signer>)
        .map_err(|e| StartError::Token(e.to_string()))
}

#[cfg(not(feature = "pkcs11"))]
fn open_token(token: &Token, _: &[u8], _: &CertInfo) -> Result<Arc<dyn Signer>, StartError> {
    Err(StartError::Token(format!(
        "{} needs PKCS#11, and this build has none (cargo feature \"pkcs11\")",
        token.uri
    )))
}

impl ProvideCredentials for RolesAnywhere {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(self.session())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/creds/roles_anywhere/testdata")
            .join(name)
    }

    fn settings(dir: &Path) -> Settings {
        Settings {
            certificate: dir.join("host.pem"),
            pkcs12: false,
            chain: None,
            private_key: dir.join("host.key"),
            passphrase: None,
            token: None,
            endpoint: "127.0.0.1:1".into(),
            region: "eu-west-1".into(),
            ca_bundle: None,
            session: SessionParams {
                trust_anchor_arn: "arn:aws:rolesanywhere:eu-west-1:1:trust-anchor/a".into(),
                profile_arn: "arn:aws:rolesanywhere:eu-west-1:1:profile/p".into(),
                role_arn: "arn:aws:iam::1:role/r".into(),
                duration: Duration::from_secs(900),
                session_name: None,
            },
        }
    }

    /// Replaces `name` in `dir` as rotation tools do: a new file renamed
    /// over the old one.
    fn install(dir: &Path, name: &str, from: &str) {
        let tmp = dir.join(format!(".{name}.new"));
        std::fs::copy(testdata(from), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }

    #[test]
    fn a_rotated_pair_is_picked_up_and_a_broken_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "host.pem", "ec-sec1.crt.pem");
        install(dir.path(), "host.key", "ec-sec1.pem");
        let provider = RolesAnywhere::new(settings(dir.path())).unwrap();
        let first = provider.current().unwrap();
        assert!(
            Arc::ptr_eq(&first, &provider.current().unwrap()),
            "unchanged: not read again"
        );
        // Rotated to an RSA pair.
        install(dir.path(), "host.pem", "rsa-pem.crt.pem");
        install(dir.path(), "host.key", "rsa-pkcs1.pem");
        let rotated = provider.current().unwrap();
        assert_ne!(rotated.info.serial, first.info.serial);
        assert_eq!(rotated.key.algorithm(), super::super::sign::Algorithm::Rsa);
        // Half a rotation (the certificate without its key): the last good
        // pair stays in force.
        install(dir.path(), "host.pem", "ec-sec1.crt.pem");
        let kept = provider.current().unwrap();
        assert_eq!(kept.info.serial, rotated.info.serial);
        // The key follows: the new pair is used.
        install(dir.path(), "host.key", "ec-sec1.pem");
        assert_eq!(provider.current().unwrap().info.serial, first.info.serial);
    }

    #[test]
    fn an_encrypted_key_opens_with_its_passphrase_file() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "host.pem", "rsa-pem.crt.pem");
        install(dir.path(), "host.key", "rsa-encrypted.pem");
        std::fs::write(dir.path().join("pass"), "secret\n").unwrap();
        let mut s = settings(dir.path());
        let e = RolesAnywhere::new(s.clone()).unwrap_err().to_string();
        assert!(e.contains("no passphrase"), "{e}");
        s.passphrase = Some(Passphrase::File(dir.path().join("pass")));
        let provider = RolesAnywhere::new(s.clone()).unwrap();
        assert!(provider.certificate().is_some());
        std::fs::write(dir.path().join("pass"), "wrong").unwrap();
        let e = RolesAnywhere::new(s).unwrap_err().to_string();
        assert!(e.contains("does not open"), "{e}");
    }

    #[test]
    fn a_pkcs12_file_holds_it_all() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "host.p12", "ec.p12");
        std::fs::write(dir.path().join("pass"), "secret\n").unwrap();
        let mut s = settings(dir.path());
        s.certificate = dir.path().join("host.p12");
        s.private_key = dir.path().join("host.p12");
        s.pkcs12 = true;
        s.passphrase = Some(Passphrase::File(dir.path().join("pass")));
        let provider = RolesAnywhere::new(s.clone()).unwrap();
        let expected = keys::certificates(
            "ec-sec1.crt.pem",
            &std::fs::read_to_string(testdata("ec-sec1.crt.pem")).unwrap(),
        )
        .unwrap()
        .remove(0)
        .1;
        assert_eq!(provider.certificate().unwrap(), expected);
        std::fs::write(dir.path().join("pass"), "wrong").unwrap();
        let e = RolesAnywhere::new(s.clone()).unwrap_err().to_string();
        assert!(e.contains("password does not open"), "{e}");
        // No password at all.
        install(dir.path(), "host.p12", "rsa-nopass.p12");
        s.passphrase = None;
        let provider = RolesAnywhere::new(s).unwrap();
        assert_eq!(
            provider.current().unwrap().key.algorithm(),
            super::super::sign::Algorithm::Rsa
        );
    }

    #[test]
    fn a_bad_pair_at_start_is_an_error_that_names_the_files() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "host.pem", "ec-sec1.crt.pem");
        install(dir.path(), "host.key", "rsa-pkcs1.pem");
        let e = RolesAnywhere::new(settings(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("host.key"), "{e}");
        let missing = tempfile::tempdir().unwrap();
        let e = RolesAnywhere::new(settings(missing.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("host.pem"), "{e}");
    }
}
