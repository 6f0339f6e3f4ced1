//! `cargo xtask build-ebpf`: builds the agent's eBPF programs (`agent-ebpf/`)
//! into `target/ebpf/bpfel-unknown-none/release/agent-ebpf`, which the
//! agent's `ebpf` feature embeds.
//!
//! The programs are Rust (aya-ebpf), compiled for `bpfel-unknown-none` by
//! Debian's `rustc-web`, whose sysroot ships a prebuilt `core` for that
//! target (rustup can't provide one offline), and linked by `bpf-linker`
//! built from crates.io against the LLVM that rustc uses. On a fresh Debian
//! machine the first run installs all of it (as root: the apt packages;
//! `bpf-linker` goes to `target/xtask/tools`, nothing outside the
//! repository): about 2 minutes on 2 cores. Later runs check and rebuild in
//! seconds.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::apt::{Apt, version_of};
use crate::util::{root, run, work_dir};

/// The bpf-linker release the programs are built with.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian's Rust compiler (rustc-web), with the BPF `core`.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// LLVM majors bpf-linker 0.13 supports.
const LLVM_MAJORS: [&str; 3] = ["21", "22", "23"];

#[derive(Debug, Default, clap::Args)]
pub(crate) struct Options {
    /// Never install anything: fail, naming what is missing.
    #[arg(long)]
    no_install: bool,
}

/// The object the agent embeds.
pub(crate) fn object() -> PathBuf {
    root().join("target/ebpf/bpfel-unknown-none/release/agent-ebpf")
}

pub(crate) fn build(options: &Options) -> anyhow::Result<PathBuf> {
    let install = !options.no_install;
    if !Path::new("/etc/debian_version").exists() {
        bail!(
            "building the eBPF programs needs Debian's rustc-web and libstd-rust-web-dev-bpf (Debian 12 or later); this is not a Debian system"
        );
    }
    let mut apt = Apt::default();
    apt.ensure(
        &["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf"],
        install,
        "the eBPF toolchain",
    )?;
    let rustc = version_of("rustc-web")?;
    let bpf_std = version_of("libstd-rust-web-dev-bpf")?;
    if rustc != bpf_std {
        bail!(
            "rustc-web ({rustc}) and libstd-rust-web-dev-bpf ({bpf_std}) differ; run: apt-get install rustc-web libstd-rust-web-dev-bpf"
        );
    }
    let llvm = llvm_major()?;
    apt.ensure(
        &[
            &format!("llvm-{llvm}-dev"),
            &format!("libpolly-{llvm}-dev"),
            "zlib1g-dev",
            "libzstd-dev",
            "gcc",
            "libc6-dev",
        ],
        install,
        "the eBPF toolchain",
    )?;
    let linker = bpf_linker(&llvm, install)?;
    let tools = linker.parent().expect("bin directory").to_owned();
    let path = format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cargo = debian_cargo();
    cargo
        .current_dir(root().join("agent-ebpf"))
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
            // Debian's rustc is newer than the workspace's rust-version.
            "--ignore-rust-version",
            "--target-dir",
        ])
        .arg(root().join("target/ebpf"))
        .env("PATH", path)
        // aya-ebpf uses unstable features; Debian's stable rustc allows
        // them with this.
        .env("RUSTC_BOOTSTRAP", "1");
    run(&mut cargo).context("building agent-ebpf")?;
    let object = object();
    let size = std::fs::metadata(&object)
        .with_context(|| format!("the build made no {}", object.display()))?
        .len();
    eprintln!(
        "xtask: eBPF programs built: {} ({size} bytes); build the agent with `--features ebpf`",
        object.display()
    );
    Ok(object)
}

/// `/usr/bin/cargo` with Debian's rustc, free of the rustup settings the
/// calling cargo put in the environment.
fn debian_cargo() -> Command {
    let mut cmd = Command::new(DEBIAN_CARGO);
    for name in [
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO",
    ] {
        cmd.env_remove(name);
    }
    cmd.env("RUSTC", DEBIAN_RUSTC);
    cmd
}

/// The LLVM major Debian's rustc emits bitcode for: bpf-linker must be
/// built against the same.
fn llvm_major() -> anyhow::Result<String> {
    let out = Command::new(DEBIAN_RUSTC)
        .arg("-vV")
        .output()
        .with_context(|| format!("running {DEBIAN_RUSTC} -vV"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major = text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .with_context(|| format!("no LLVM version in `{DEBIAN_RUSTC} -vV`: {text}"))?
        .to_owned();
    if !LLVM_MAJORS.contains(&major.as_str()) {
        bail!(
            "bpf-linker {BPF_LINKER_VERSION} supports LLVM {LLVM_MAJORS:?}; Debian's rustc uses LLVM {major}"
        );
    }
    Ok(major)
}

/// `target/xtask/tools/bin/bpf-linker`, built against LLVM `llvm` unless
/// the right one is there.
fn bpf_linker(llvm: &str, install: bool) -> anyhow::Result<PathBuf> {
    let tools = work_dir().join("tools");
    let linker = tools.join("bin/bpf-linker");
    if linker_is_usable(&linker, llvm) {
        return Ok(linker);
    }
    if !install {
        bail!(
            "no bpf-linker {BPF_LINKER_VERSION} for LLVM {llvm} at {}: run `cargo xtask build-ebpf`",
            linker.display()
        );
    }
    let llvm_dir = format!("/usr/lib/llvm-{llvm}");
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm} (about 1.5 minutes on 2 cores)"
    );
    let mut cargo = debian_cargo();
    cargo
        .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")])
        .args(["--locked", "--force", "--no-default-features", "--features"])
        .arg(format!("llvm-{llvm}"))
        .arg("--root")
        .arg(&tools)
        // bpf-linker's build script looks for libLLVM here (without it, it
        // asks an llvm-config on PATH and lands in the wrong directory);
        // llvm-sys reads its own variable, named after its crate version.
        .env("LLVM_PREFIX", &llvm_dir)
        .env(format!("LLVM_SYS_{llvm}0_PREFIX"), &llvm_dir)
        .env(format!("LLVM_SYS_{llvm}1_PREFIX"), &llvm_dir)
        .env(
            "PATH",
            format!(
                "{llvm_dir}/bin:{}",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        // Its build directory goes inside the repository too.
        .env("CARGO_TARGET_DIR", work_dir().join("bpf-linker-build"));
    run(&mut cargo).context("cargo install bpf-linker")?;
    let _ = std::fs::remove_dir_all(work_dir().join("bpf-linker-build"));
    if !linker_is_usable(&linker, llvm) {
        bail!(
            "bpf-linker was installed at {} but does not run against LLVM {llvm} (see `ldd {}`)",
            linker.display(),
            linker.display()
        );
    }
    Ok(linker)
}

/// The right version, linked to the right libLLVM, with nothing missing.
fn linker_is_usable(linker: &Path, llvm: &str) -> bool {
    let version = Command::new(linker).arg("--version").output();
    let right_version = version.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout).trim() == format!("bpf-linker {BPF_LINKER_VERSION}")
    });
    let libraries = Command::new("ldd").arg(linker).output();
    right_version
        && libraries.is_ok_and(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            text.contains(&format!("/usr/lib/llvm-{llvm}/")) && !text.contains("not found")
        })
}
