//! `cargo xtask test`: what CI runs. Formatting, clippy with warnings as
//! errors, every unit and end-to-end test (the ones needing root only when
//! root), then a short run of the benchmark so that it keeps working.

use std::process::Command;

use crate::python::venv;
use anyhow::bail;

use crate::util::{is_root, root, run as run_cmd};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Skip the short benchmark run at the end.
    #[arg(long)]
    no_bench: bool,
}

pub(crate) fn run(options: &Options) -> anyhow::Result<()> {
    let python = venv()?;
    let mut features = Vec::new();
    if has_nftables_libraries() {
        features.push("imds-agent/nftables");
    } else if is_root() {
        bail!(
            "libnftnl and libmnl are missing (pkg-config finds neither): run `bash .ci/run`, or `apt-get install libnftnl-dev libmnl-dev pkg-config`"
        );
    } else {
        eprintln!("xtask: libnftnl-dev/libmnl-dev missing: building without host modes (nftables)");
    }
    if is_root() {
        // As root (CI) the eBPF mode is always built and tested; the first
        // run installs its toolchain.
        crate::ebpf::build(&crate::ebpf::Options::default())?;
        features.push("imds-agent/ebpf");
    } else if crate::ebpf::object().is_file() {
        features.push("imds-agent/ebpf");
    } else {
        eprintln!(
            "xtask: no eBPF programs built (`cargo xtask build-ebpf` as root): building without eBPF mode"
        );
    }
    if is_root() {
        features.push("imds-agent/root-tests");
    } else {
        eprintln!(
            "xtask: not root: the tests that need network namespaces are skipped (CI runs them as root)"
        );
    }
    let features = ["--features".to_owned(), features.join(",")];
    let cargo = || {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(root());
        cmd
    };
    run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // agent-ebpf is a workspace of its own: `cargo fmt --all` skips it.
    run_cmd(
        Command::new("rustfmt")
            .current_dir(root())
            .args(["--edition", "2024", "--check"])
            .args(["agent-ebpf/src/main.rs", "agent-ebpf/common/src/lib.rs"]),
    )?;
    run_cmd(
        cargo()
            .args(["clippy", "--workspace", "--all-targets", "--locked"])
            .args(&features)
            .args(["--", "-D", "warnings"]),
    )?;
    let mut test = cargo();
    test.args(["test", "--workspace", "--locked"])
        .args(&features)
        .env("IMDS_TEST_PYTHON", &python);
    if is_root() {
        // For the test that runs the agent under a real systemd.
        test.env("IMDS_TEST_ROOTFS", crate::rootfs::debian_with_systemd()?);
    }
    run_cmd(&mut test)?;
    if !options.no_bench {
        crate::bench::run(&crate::bench::Options::quick())?;
    }
    eprintln!("xtask: all checks passed");
    Ok(())
}

/// Whether the libraries the `nftables` feature links are installed.
pub(crate) fn has_nftables_libraries() -> bool {
    Command::new("pkg-config")
        .args(["--exists", "libnftnl", "libmnl"])
        .status()
        .is_ok_and(|s| s.success())
}
