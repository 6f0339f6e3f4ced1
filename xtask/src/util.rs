//! Helpers shared by the tasks.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The workspace root (xtask lives one level below it).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_owned()
}

/// Where tasks keep their files: inside the repository's target dir.
pub(crate) fn work_dir() -> PathBuf {
    root().join("target").join("xtask")
}

/// Runs `cmd`, failing with its command line if it does not succeed.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let line = format!("{cmd:?}");
    eprintln!("xtask: {line}");
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {line}"))?;
    if !status.success() {
        bail!("{line} failed: {status}");
    }
    Ok(())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Builds the release agent that `install`, `bench` and `bench-redirect`
/// share, and returns its path.
pub(crate) fn build_release() -> anyhow::Result<PathBuf> {
    run(Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "imds-agent",
        "--features",
        &release_features(),
    ]))?;
    Ok(root().join("target/release/imds-agent"))
}

/// The features of that build: host modes when their libraries are there,
/// eBPF mode when its programs are built.
fn release_features() -> String {
    let mut features = Vec::new();
    if crate::test::has_nftables_libraries() {
        features.push("nftables");
    }
    if crate::ebpf::object().is_file() {
        features.push("ebpf");
    }
    features.join(",")
}
