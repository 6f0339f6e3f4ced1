//! IAM Roles Anywhere for the tests: certificates made for the run
//! (tests/py/ra_pki.py) and a CreateSession test server
//! (tests/py/rolesanywhere_server.py) that takes its credentials from moto.

use std::process::{Command, Stdio};

use super::sts::{Helper, start};
use super::{py_script, python};

/// The region the test service is in.
pub const REGION: &str = "eu-west-1";
/// Its trust anchor (the test CA).
pub const TRUST_ANCHOR: &str =
    "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0b1c2d3e-test-anchor";
/// Its profile.
pub const PROFILE: &str = "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/test-profile";
/// The role the profile allows.
pub const ROLE: &str = "arn:aws:iam::123456789012:role/host-base";
/// A role it does not allow.
pub const OTHER_ROLE: &str = "arn:aws:iam::123456789012:role/not-allowed";

/// The run's certificates, removed on drop.
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// Each certificate's serial number, in decimal, by name.
    pub serials: serde_json::Value,
}

impl Pki {
    /// Makes them (see ra_pki.py for the names).
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let out = Command::new(python())
            .arg(py_script("ra_pki.py"))
            .arg(dir.path())
            .output()
            .expect("running ra_pki.py");
        assert!(
            out.status.success(),
            "ra_pki.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let serials = serde_json::from_slice(&out.stdout).expect("ra_pki.py's serials");
        Pki { dir, serials }
    }

    /// The path of `name` (`ca.pem`, `p256.key`, ...).
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// The test CreateSession service over TLS (its certificate is `server`,
/// for 127.0.0.1, by the test CA), with credentials from `moto`.
pub struct Service {
    helper: Helper,
    /// The CA its TLS certificate is from.
    ca: String,
}

impl Service {
    pub fn start(pki: &Pki, moto: &str) -> Service {
        Service::start_with(pki, moto, &[])
    }

    /// `start`, with more of the server's options (`--session-seconds N`).
    pub fn start_with(pki: &Pki, moto: &str, extra: &[&str]) -> Service {
        let (ca, cert, key) = (
            pki.path("ca.pem"),
            pki.path("server.pem"),
            pki.path("server.key"),
        );
        let args = [
            "--moto",
            moto,
            "--anchor-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--region",
            REGION,
            "--trust-anchor-arn",
            TRUST_ANCHOR,
            "--profile-arn",
            PROFILE,
            "--role-arn",
            ROLE,
        ];
        let args: Vec<&str> = args.iter().chain(extra).copied().collect();
        Service {
            helper: start("rolesanywhere_server.py", &args, Stdio::inherit()),
            ca: ca.clone(),
        }
    }

    /// Every CreateSession it was sent: `{"serial", "status", "reason"}`.
    pub fn calls(&self) -> Vec<serde_json::Value> {
        let out = Command::new(python())
            .args([
                "-c",
                "import ssl, sys, urllib.request\n\
                 ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
                 print(urllib.request.urlopen(sys.argv[2], context=ctx, timeout=10).read().decode())",
                &self.ca,
                &format!("https://127.0.0.1:{}/_calls", self.port()),
            ])
            .output()
            .expect("asking the service for its calls");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the calls as JSON")
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.helper
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the service's port")
    }
}
