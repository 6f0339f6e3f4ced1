//! Who can change or read the files the agent's identity is made of. The
//! PKCS#11 module is loaded into the agent: one that another user can
//! write is their code in the agent, so it is refused. A key or passphrase
//! others can read, or a certificate others can replace (an expired one,
//! one made to break the parser), is warned about.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::provider::{Settings, StartError};

/// Warnings about `settings`' files, or why they can't be used at all.
pub fn check(settings: &Settings) -> Result<Vec<String>, StartError> {
    if let Some(token) = &settings.token {
        trusted_module(&token.module)?;
    }
    let mut secret = Vec::new();
    if settings.token.is_none() {
        secret.push(settings.private_key.as_path());
    }
    if settings.pkcs12 {
        secret.push(settings.certificate.as_path());
    }
    let passphrase = settings.passphrase.as_ref().and_then(|p| p.path().ok());
    secret.extend(passphrase.as_deref());
    let mut public = vec![settings.certificate.as_path()];
    public.extend(settings.chain.as_deref());
    let mut warnings = mode_warnings(
        &secret,
        0o007,
        "holds a secret and every user can read it",
        "o=",
    );
    warnings.extend(mode_warnings(
        &public,
        0o022,
        "can be replaced by other users",
        "go-w",
    ));
    Ok(warnings)
}

/// A warning for each of `paths` whose mode has a bit of `mask`: `what` it
/// means, and the `chmod` that mends it.
fn mode_warnings(paths: &[&Path], mask: u32, what: &str, chmod: &str) -> Vec<String> {
    paths
        .iter()
        .filter_map(|path| {
            let mode = std::fs::metadata(path).ok()?.mode();
            (mode & mask != 0).then(|| {
                format!(
                    "{} {what} (mode {:o}): chmod {chmod} {}",
                    path.display(),
                    mode & 0o777,
                    path.display()
                )
            })
        })
        .collect()
}

/// The PKCS#11 module's real path (symlinks resolved), refused unless it
/// and every directory above it are root's and writable by no one else.
/// The module is then loaded from that path, not the configured one: a
/// symlink in a directory a user can write could be swapped between the
/// check and the load.
pub fn trusted_module(path: &Path) -> Result<PathBuf, StartError> {
    let unsafe_ = |why: String| StartError::Unsafe(path.display().to_string(), why);
    let path = std::fs::canonicalize(path).map_err(|e| unsafe_(e.to_string()))?;
    for dir in path.ancestors() {
        let meta = std::fs::metadata(dir).map_err(|e| unsafe_(e.to_string()))?;
        if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Err(unsafe_(format!(
                "{} is not root's alone (owner {}, mode {:o}), and the module is loaded into the agent",
                dir.display(),
                meta.uid(),
                meta.mode() & 0o777
            )));
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_module_others_can_write_is_refused() {
        // Under /tmp, whose sticky, world-writable mode counts against it.
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("module.so");
        std::fs::write(&module, b"").unwrap();
        let e = trusted_module(&module).unwrap_err().to_string();
        assert!(
            e.contains("module.so") && e.contains("not root's alone"),
            "{e}"
        );
        if nix::unistd::geteuid().is_root() {
            // The system's libraries pass.
            trusted_module(Path::new("/usr/lib")).unwrap();
        }
    }

    #[test]
    fn readable_keys_and_writable_certificates_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, b"").unwrap();
        std::fs::write(&key, b"").unwrap();
        let settings = Settings {
            certificate: cert.clone(),
            pkcs12: false,
            chain: None,
            private_key: key.clone(),
            passphrase: None,
            token: None,
            endpoint: String::new(),
            region: String::new(),
            ca_bundle: None,
            session: super::super::client::SessionParams {
                trust_anchor_arn: String::new(),
                profile_arn: String::new(),
                role_arn: String::new(),
                duration: std::time::Duration::from_secs(900),
                session_name: None,
            },
        };
        std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(check(&settings).unwrap().is_empty());
        std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o666)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warnings = check(&settings).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("k.pem") && warnings[1].contains("c.pem"));
    }
}
