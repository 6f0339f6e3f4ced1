//! Debian packages the tasks need, installed with apt-get when missing (as
//! root; otherwise the task names what to install). No package may start a
//! service on this machine while it is installed (docker.io would start a
//! daemon that changes the host's network): a `policy-rc.d` that refuses
//! every start is in place for the install, and removed after.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::util::{is_root, run};

/// What the tests use, and why:
/// - iproute2, procps: `ip` and `sysctl` for the network-namespace tests;
/// - libnftnl-dev, libmnl-dev, pkg-config: the agent's nftables support
///   (feature `nftables`), and nftables for `nft`, with which the tests
///   inspect the agent's table;
/// - docker.io, busybox-static: a real Docker daemon and a tiny image for
///   the container tests (the tests start and stop the daemon);
/// - systemd, systemd-container, debootstrap, zstd: systemd-analyze for
///   the unit's checks, and a minimal Debian booted with systemd-nspawn
///   for the service and package tests;
/// - bpftool: with which the eBPF tests see what is attached;
/// - softhsm2, swtpm, libtpm2-pkcs11-1, tpm2-tools, opensc: a PKCS#11
///   token and a software TPM 2.0 for the Roles Anywhere key tests
///   (feature `pkcs11`; pkcs11-tool makes the keys);
/// - chromium, chromium-driver, dbus-daemon: the /manage page in a real
///   (headless) browser, and a session bus for the notification test;
/// - dpkg-dev: dpkg-shlibdeps, the package's dependencies.
pub(crate) const TEST_PACKAGES: [&str; 22] = [
    "iproute2",
    "procps",
    "libnftnl-dev",
    "libmnl-dev",
    "pkg-config",
    "nftables",
    "docker.io",
    "busybox-static",
    "systemd",
    "systemd-container",
    "debootstrap",
    "zstd",
    "bpftool",
    "softhsm2",
    "swtpm",
    "libtpm2-pkcs11-1",
    "tpm2-tools",
    "opensc",
    "chromium",
    "chromium-driver",
    "dbus-daemon",
    "dpkg-dev",
];

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// What the policy says: no service may start.
const REFUSE_STARTS: &str =
    "#!/bin/sh\n# cargo xtask: no service starts while packages install\nexit 101\n";

/// Packages whose command may come from elsewhere (Docker's own
/// docker-ce, a Chromium from another source): present if it is on PATH,
/// never replaced.
const PROVIDED_BY_COMMAND: [(&str, &str); 3] = [
    ("docker.io", "dockerd"),
    ("chromium", "chromium"),
    ("chromium-driver", "chromedriver"),
];

/// Units the test packages enable that must not start at the next boot
/// (the tests start their own daemons).
const UNITS_TO_DISABLE: [&str; 3] = ["docker.service", "docker.socket", "containerd.service"];

/// apt-get, updated at most once.
#[derive(Debug, Default)]
pub(crate) struct Apt {
    updated: bool,
}

/// The policy file while it is in place: removed when dropped, also when
/// the install fails or panics.
struct NoServiceStarts;

impl NoServiceStarts {
    fn put() -> anyhow::Result<Option<Self>> {
        if Path::new(POLICY_RC_D).exists() {
            // The machine's own policy (or ours, left by a killed run:
            // `clear_leftover` removed that one already).
            return Ok(None);
        }
        std::fs::write(POLICY_RC_D, REFUSE_STARTS)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))
            })
            .with_context(|| format!("writing {POLICY_RC_D}"))?;
        Ok(Some(Self))
    }

    /// A policy file exactly as a killed run left it goes: it would stop
    /// every later package from starting its service.
    fn clear_leftover() {
        if std::fs::read_to_string(POLICY_RC_D).is_ok_and(|text| text == REFUSE_STARTS) {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(POLICY_RC_D);
    }
}

impl Apt {
    /// Installs whichever of `packages` is missing, for `what` (as root,
    /// when `install`); fails naming them otherwise. Nothing installed is
    /// removed to make room (`--no-remove`).
    pub(crate) fn ensure(
        &mut self,
        packages: &[&str],
        install: bool,
        what: &str,
    ) -> anyhow::Result<()> {
        NoServiceStarts::clear_leftover();
        let missing = missing(packages);
        if missing.is_empty() {
            return Ok(());
        }
        let line = format!("apt-get install {}", missing.join(" "));
        if !install || !is_root() {
            bail!("{what} needs {missing:?}: run `{line}` as root");
        }
        let policy = NoServiceStarts::put()?;
        let result = self.install(&missing, &line, what);
        drop(policy);
        if result.is_ok() && missing.contains(&"docker.io") {
            // Enabled by its package: it would start at the next boot and
            // change the host's network.
            let _ = Command::new("systemctl")
                .arg("disable")
                .args(UNITS_TO_DISABLE)
                .status();
        }
        result
    }

    fn install(&mut self, missing: &[&str], line: &str, what: &str) -> anyhow::Result<()> {
        if !self.updated {
            run(Command::new("apt-get")
                .args(["update", "-q"])
                .env("DEBIAN_FRONTEND", "noninteractive"))
            .with_context(|| format!("apt-get update ({what})"))?;
            self.updated = true;
        }
        run(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "--no-remove",
            ])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
        .with_context(|| format!("{line} ({what})"))
    }
}

/// Which of `packages` dpkg does not have installed (and whose command,
/// for those that may come from elsewhere, is not on PATH either).
pub(crate) fn missing<'a>(packages: &[&'a str]) -> Vec<&'a str> {
    packages
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .filter(|p| {
            !PROVIDED_BY_COMMAND
                .iter()
                .any(|(package, command)| package == p && on_path(command))
        })
        .collect()
}

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(command).is_file()))
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// The installed version of `package` (empty if none).
pub(crate) fn version_of(package: &str) -> anyhow::Result<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .output()
        .with_context(|| format!("dpkg-query {package}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
