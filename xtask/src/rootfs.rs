//! A minimal Debian root with systemd, for the test that runs the agent as
//! a service under a real systemd (systemd-nspawn). Built once with
//! debootstrap (about 100 s) and kept as a tarball in target/xtask.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::util::{run, work_dir};

/// What the root holds besides a minimal Debian: systemd as init, the
/// tools the test uses inside (ip, nft) and Python for its client.
const PACKAGES: &str = "systemd,systemd-sysv,dbus,libnss-systemd,iproute2,nftables,python3";

/// The tarball, built if it is not there yet.
pub(crate) fn debian_with_systemd() -> anyhow::Result<PathBuf> {
    let tarball = work_dir().join("systemd-rootfs.tar.zst");
    if tarball.exists() {
        return Ok(tarball);
    }
    for tool in ["debootstrap", "zstd", "systemd-nspawn"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            bail!(
                "{tool} is missing: run `bash .ci/run` (apt-get install debootstrap zstd systemd-container)"
            );
        }
    }
    let mirror = std::env::var("IMDS_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_owned());
    let build = work_dir().join("rootfs.build");
    let _ = std::fs::remove_dir_all(&build);
    eprintln!(
        "xtask: building a Debian root with systemd for the service test (debootstrap, about 2 minutes)"
    );
    run(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={PACKAGES}"),
            "bookworm",
        ])
        .arg(&build)
        .arg(&mirror))
    .context("debootstrap")?;
    // No downloaded packages; an empty machine id, so each boot gets one;
    // a persistent journal, readable after the machine stopped.
    let _ = std::fs::remove_dir_all(build.join("var/cache/apt/archives"));
    let _ = std::fs::remove_dir_all(build.join("var/lib/apt/lists"));
    std::fs::write(build.join("etc/machine-id"), "")?;
    std::fs::write(build.join("etc/hostname"), "imds-e2e\n")?;
    std::fs::create_dir_all(build.join("var/log/journal"))?;
    let partial = tarball.with_extension("partial");
    run(Command::new("sh").args([
        "-c",
        &format!(
            "tar -C '{}' --numeric-owner --xattrs --acls -cf - . | zstd -T0 -3 -q -f -o '{}'",
            build.display(),
            partial.display()
        ),
    ]))?;
    std::fs::rename(&partial, &tarball)?;
    std::fs::remove_dir_all(&build)?;
    Ok(tarball)
}
