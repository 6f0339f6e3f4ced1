//! Roles Anywhere as a credentials provider: the agent's own credentials
//! for every STS call, from `CreateSession`, cached and refreshed like any
//! provider's by the STS client's identity cache (so never on a
//! workload's request). The files are read again when they change
//! (`material`); what could not be used shows in `status`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials as SdkCredentials;
use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError};

use super::client::{SessionParams, connector, create_session};
use super::der::CertInfo;
use super::keys::{self, KeyError};
use super::material::{Material, Materials, read};
use crate::creds::{SourceRefused, SourceUnavailable};

/// How long a session may take, the files, the signature and
/// CreateSession together: less than the STS call it is made for allows
/// (10 s), so that it ends with its own error.
const SESSION_DEADLINE: Duration = Duration::from_secs(9);

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

/// The provider.
#[derive(Debug, Clone)]
pub struct RolesAnywhere {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    materials: Materials,
    certificate: PathBuf,
    endpoint: String,
    region: String,
    session: SessionParams,
    connector: aws_smithy_http_client::Connector,
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
    /// Why the files as they are now are not used (the certificate above
    /// stays in force): a rotation that went wrong.
    pub reload_error: Option<String>,
}

/// Why the provider could not start (or a new set of files is not used).
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
    #[error("the new certificate in {0} (serial {1}) is {2}: the one in force is kept")]
    NotValid(String, String, &'static str),
    #[error("{0} can't be used: {1}")]
    Unsafe(String, String),
    #[error("the CA bundle {0}: {1}")]
    CaBundle(String, String),
}

impl RolesAnywhere {
    /// Reads the certificate, chain and key now (a bad set is an error at
    /// start, not at the first STS call), and logs what `files::check`
    /// warns of.
    pub fn new(settings: Settings) -> Result<Self, StartError> {
        let (provider, warnings) = Self::open(settings)?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        Ok(provider)
    }

    /// `new`, handing the warnings about the files back (`check-config`
    /// prints them).
    pub fn open(settings: Settings) -> Result<(Self, Vec<String>), StartError> {
        let warnings = super::files::check(&settings)?;
        let roots = match &settings.ca_bundle {
            Some(path) => keys::certificates(&path.display().to_string(), &read(path)?)?
                .into_iter()
                .map(|(der, _)| der)
                .collect(),
            None => Vec::new(),
        };
        let connector = connector(&roots).map_err(|e| {
            StartError::CaBundle(
                settings
                    .ca_bundle
                    .as_ref()
                    .map_or_else(String::new, |p| p.display().to_string()),
                e,
            )
        })?;
        let provider = Self {
            inner: Arc::new(Inner {
                certificate: settings.certificate.clone(),
                endpoint: settings.endpoint.clone(),
                region: settings.region.clone(),
                session: settings.session.clone(),
                materials: Materials::new(settings)?,
                connector,
                last_error: Mutex::new(None),
            }),
        };
        Ok((provider, warnings))
    }

    /// What decides the sessions it opens: the service, the session's
    /// parameters (role, profile, trust anchor, duration) and the
    /// certificate in force (`None` while there is none).
    pub fn fingerprint(&self) -> Option<String> {
        let certificate = self.certificate()?;
        Some(format!(
            "{} {} {:?} {}",
            self.inner.endpoint, self.inner.region, self.inner.session, certificate.serial
        ))
    }

    /// The certificate in force.
    pub fn certificate(&self) -> Option<CertInfo> {
        self.inner.materials.held().map(|m| m.info.clone())
    }

    /// The set to sign with, read again first if a file changed (on a
    /// blocking thread: key derivation and tokens take time). `quick`:
    /// what is in force if a reload is under way.
    async fn current(&self, now: SystemTime, quick: bool) -> Option<Arc<Material>> {
        let inner = Arc::clone(&self.inner);
        let read = tokio::task::spawn_blocking(move || match quick {
            true => inner.materials.current_or_held(now),
            false => inner.materials.current(now),
        });
        match read.await {
            Ok(material) => material,
            // A panic while reading: what was in force stays.
            Err(_) => self.inner.materials.held(),
        }
    }

    /// What `status` shows: the files are looked at first, so a rotated
    /// certificate shows (and is alerted on) before the next session.
    pub async fn status(&self, now: SystemTime) -> CertificateStatus {
        let info = self.current(now, true).await.map(|m| m.info.clone());
        CertificateStatus {
            certificate: self.inner.certificate.display().to_string(),
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
            reload_error: self.inner.materials.reload_error(),
        }
    }

    fn set_error(&self, error: Option<String>) {
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = error;
    }

    async fn session(&self) -> Result<SdkCredentials, CredentialsError> {
        // The STS call this runs in gives up after 10 s and drops it: say
        // so in status if that is how it ends.
        struct Unfinished<'a>(&'a RolesAnywhere, bool);
        impl Drop for Unfinished<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    self.0.set_error(Some(
                        "no session: CreateSession did not finish before the STS call gave up"
                            .to_owned(),
                    ));
                }
            }
        }
        let mut unfinished = Unfinished(self, false);
        let result = tokio::time::timeout(SESSION_DEADLINE, self.try_session())
            .await
            .unwrap_or_else(|_| {
                Err(CredentialsError::provider_error(SourceUnavailable(format!(
                    "no session in {SESSION_DEADLINE:?} (reading the files, signing and CreateSession)"
                ))))
            });
        unfinished.1 = true;
        self.set_error(result.as_ref().err().map(|e| crate::creds::source_chain(e)));
        result
    }

    async fn try_session(&self) -> Result<SdkCredentials, CredentialsError> {
        let now = SystemTime::now();
        let material = self.current(now, false).await.ok_or_else(|| {
            CredentialsError::not_loaded("no usable Roles Anywhere certificate and key")
        })?;
        if let Err(why) = keys::validity(&material.info, now) {
            return Err(CredentialsError::invalid_configuration(format!(
                "the Roles Anywhere certificate {} is {why}",
                self.inner.certificate.display()
            )));
        }
        if material.info.not_after < now + EXPIRY_WARNING {
            tracing::warn!(
                certificate = %self.inner.certificate.display(),
                expires = %crate::timefmt::iso8601(material.info.not_after),
                "the Roles Anywhere certificate expires within a week: renew it"
            );
        }
        let inner = &self.inner;
        let issued = create_session(
            &inner.connector,
            &inner.endpoint,
            &inner.region,
            &inner.session,
            &material.certificate,
            &material.chain,
            Arc::clone(&material.key),
            now,
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "Roles Anywhere gave no session");
            // Marked so that the STS calls made with it are retried as
            // what it is: an outage with backoff, a refusal after error_ttl.
            if e.is_transient() {
                CredentialsError::provider_error(SourceUnavailable(e.to_string()))
            } else {
                CredentialsError::provider_error(SourceRefused(e.to_string()))
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
    use std::path::Path;

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

    /// A directory with the encrypted RSA pair, and its passphrase file
    /// holding `passphrase`.
    fn encrypted_pair(passphrase: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "host.pem", "rsa-pem.crt.pem");
        install(dir.path(), "host.key", "rsa-encrypted.pem");
        let pass = dir.path().join("pass");
        std::fs::write(&pass, passphrase).unwrap();
        (dir, pass)
    }

    fn with_passphrase(dir: &Path, pass: &Path) -> Settings {
        Settings {
            passphrase: Some(Passphrase::File(pass.to_owned())),
            ..settings(dir)
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
        let first = provider.inner.materials.current(SystemTime::now()).unwrap();
        assert!(
            Arc::ptr_eq(
                &first,
                &provider.inner.materials.current(SystemTime::now()).unwrap()
            ),
            "unchanged: not read again"
        );
        // Rotated to an RSA pair.
        install(dir.path(), "host.pem", "rsa-pem.crt.pem");
        install(dir.path(), "host.key", "rsa-pkcs1.pem");
        let rotated = provider.inner.materials.current(SystemTime::now()).unwrap();
        assert_ne!(rotated.info.serial, first.info.serial);
        assert_eq!(rotated.key.algorithm(), super::super::sign::Algorithm::Rsa);
        // Half a rotation (the certificate without its key): the last good
        // pair stays in force.
        install(dir.path(), "host.pem", "ec-sec1.crt.pem");
        let kept = provider.inner.materials.current(SystemTime::now()).unwrap();
        assert_eq!(kept.info.serial, rotated.info.serial);
        // The key follows: the new pair is used.
        install(dir.path(), "host.key", "ec-sec1.pem");
        assert_eq!(
            provider
                .inner
                .materials
                .current(SystemTime::now())
                .unwrap()
                .info
                .serial,
            first.info.serial
        );
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
            provider
                .inner
                .materials
                .current(SystemTime::now())
                .unwrap()
                .key
                .algorithm(),
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
    #[test]
    fn a_failed_reload_is_tried_again_and_shows_in_status() {
        let (dir, pass) = encrypted_pair("secret");
        let provider = RolesAnywhere::new(with_passphrase(dir.path(), &pass)).unwrap();
        let materials = &provider.inner.materials;
        let first = materials.current(SystemTime::now()).unwrap();
        // A wrong passphrase: the set in force is kept, and why is there
        // for status.
        std::fs::write(&pass, "wrongg").unwrap();
        let kept = materials.current(SystemTime::now()).unwrap();
        assert!(Arc::ptr_eq(&kept, &first));
        let why = materials.reload_error().unwrap();
        assert!(why.contains("does not open"), "{why}");
        // Put right in a way no stamp sees (same inode, size and time), as
        // a file that could not be read for a moment would be.
        let stamp = std::fs::metadata(&pass).unwrap().modified().unwrap();
        std::fs::write(&pass, "secret").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&pass)
            .unwrap()
            .set_modified(stamp)
            .unwrap();
        materials.current(SystemTime::now());
        assert!(
            materials.reload_error().is_some(),
            "not before the retry is due"
        );
        materials
            .retry_after_failure_ms
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let healed = materials.current(SystemTime::now()).unwrap();
        assert_eq!(materials.reload_error(), None);
        assert!(!Arc::ptr_eq(&healed, &first), "read again");
    }

    #[test]
    fn an_expired_certificate_does_not_replace_a_valid_one() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "host.pem", "ec-sec1.crt.pem");
        install(dir.path(), "host.key", "ec-sec1.pem");
        let provider = RolesAnywhere::new(settings(dir.path())).unwrap();
        let materials = &provider.inner.materials;
        let first = materials.current(SystemTime::now()).unwrap();
        install(dir.path(), "host.pem", "ec-expired.crt.pem");
        let kept = materials.current(SystemTime::now()).unwrap();
        assert_eq!(kept.info.serial, first.info.serial);
        let why = materials.reload_error().unwrap();
        assert!(why.contains("4242") && why.contains("expired"), "{why}");
        // At start there is nothing better: it is used, and refused at
        // the session with a message that says why.
        let provider = RolesAnywhere::new(settings(dir.path())).unwrap();
        assert_eq!(provider.certificate().unwrap().serial, "4242");
    }

    #[test]
    fn a_new_passphrase_is_a_change() {
        let (dir, pass) = encrypted_pair("secret\r\n");
        let provider = RolesAnywhere::new(with_passphrase(dir.path(), &pass)).unwrap();
        let materials = &provider.inner.materials;
        // The key is re-encrypted (here: rewritten) before its passphrase.
        install(dir.path(), "host.key", "rsa-pkcs8.pem");
        std::fs::write(&pass, "wrong").unwrap();
        assert!(materials.current(SystemTime::now()).is_some());
        install(dir.path(), "host.key", "rsa-encrypted.pem");
        assert!(materials.current(SystemTime::now()).is_some());
        assert!(materials.reload_error().is_some(), "the wrong passphrase");
        std::fs::write(&pass, "secret").unwrap();
        materials.current(SystemTime::now());
        assert_eq!(
            materials.reload_error(),
            None,
            "the passphrase's change is seen"
        );
    }

    #[test]
    fn a_bad_ca_bundle_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "host.pem", "ec-sec1.crt.pem");
        install(dir.path(), "host.key", "ec-sec1.pem");
        let mut s = settings(dir.path());
        let bundle = dir.path().join("ca.pem");
        s.ca_bundle = Some(bundle.clone());
        for bad in [
            "".to_owned(),
            "no PEM here".to_owned(),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned(),
        ] {
            std::fs::write(&bundle, &bad).unwrap();
            let e = RolesAnywhere::new(s.clone()).unwrap_err().to_string();
            assert!(e.contains("ca.pem"), "{bad:?}: {e}");
        }
        std::fs::copy(testdata("ec-sec1.crt.pem"), &bundle).unwrap();
        RolesAnywhere::new(s).unwrap();
    }
}
