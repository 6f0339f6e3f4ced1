//! `cargo xtask test`: what CI runs. Formatting, clippy with warnings as
//! errors, every unit and end-to-end test (the ones needing root only when
//! root), then a short run of the benchmark so that it keeps working.
//!
//! Every check runs even when an earlier one failed, and every test binary
//! runs even when another failed (`--no-fail-fast`): one failure must not
//! hide the others. What failed is summed up at the end.

mod report;

use std::io::{BufRead as _, BufReader};
use std::process::Command;

use anyhow::{Context as _, bail};

use self::report::TestReport;
use crate::apt::{Apt, TEST_PACKAGES};
use crate::python::venv;
use crate::util::{is_root, root, run as run_cmd};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Skip the short benchmark run at the end.
    #[arg(long)]
    no_bench: bool,
}

/// `cargo xtask test-env`: what one test binary needs, as `export` lines.
pub(crate) fn print_env() -> anyhow::Result<()> {
    println!("export IMDS_TEST_PYTHON={}", venv()?.display());
    if is_root() {
        println!(
            "export IMDS_TEST_ROOTFS={}",
            crate::rootfs::debian_with_systemd()?.display()
        );
    }
    Ok(())
}

pub(crate) fn run(options: &Options) -> anyhow::Result<()> {
    let debian = std::path::Path::new("/etc/debian_version").exists();
    if is_root() && debian {
        // As root the README's command is all the set-up: what the tests
        // use is installed first.
        // A package this release lacks fails its tests, not the run.
        if let Err(e) = Apt::default().ensure(&TEST_PACKAGES, true, "the tests") {
            eprintln!("xtask: {e:#}; the tests that need it fail");
        }
    } else if debian {
        let missing = crate::apt::missing(&TEST_PACKAGES);
        if !missing.is_empty() {
            eprintln!(
                "xtask: not root, so not installing {missing:?}: the tests that need them are skipped or fail (as root, `cargo xtask test` installs them)"
            );
        }
    }
    let python = venv()?;
    let mut features = Vec::new();
    if has_nftables_libraries() {
        features.push("imds-agent/nftables");
    } else if is_root() {
        bail!(
            "libnftnl and libmnl are installed but pkg-config finds neither: check `pkg-config --libs libnftnl libmnl`"
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
    // PKCS#11 keys are tested with SoftHSM2 (and a software TPM, whose
    // test says what it misses); .ci/run installs both.
    if std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so").exists() {
        features.push("imds-agent/pkcs11");
    } else {
        eprintln!(
            "xtask: no SoftHSM2 (/usr/lib/softhsm/libsofthsm2.so): building without PKCS#11 keys (`bash .ci/run` installs softhsm2, swtpm, libtpm2-pkcs11-1, tpm2-tools and opensc)"
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
    let mut failed: Vec<String> = Vec::new();
    let mut check = |what: &str, result: anyhow::Result<()>| {
        if let Err(e) = result {
            eprintln!("xtask: {what} failed: {e:#}");
            failed.push(format!("{what}: {e:#}"));
        }
    };
    check(
        "formatting",
        run_cmd(cargo().args(["fmt", "--all", "--", "--check"])),
    );
    // agent-ebpf is a workspace of its own: `cargo fmt --all` skips it.
    check(
        "formatting of agent-ebpf",
        run_cmd(
            Command::new("rustfmt")
                .current_dir(root())
                .args(["--edition", "2024", "--check"])
                .args(["agent-ebpf/src/main.rs", "agent-ebpf/common/src/lib.rs"]),
        ),
    );
    check(
        "clippy",
        run_cmd(
            cargo()
                .args(["clippy", "--workspace", "--all-targets", "--locked"])
                .args(&features)
                .args(["--", "-D", "warnings"]),
        ),
    );
    let mut test = cargo();
    test.args(["test", "--workspace", "--locked", "--no-fail-fast"])
        .args(&features)
        .env("IMDS_TEST_PYTHON", &python);
    if is_root() {
        // For the test that runs the agent under a real systemd.
        test.env("IMDS_TEST_ROOTFS", crate::rootfs::debian_with_systemd()?);
    }
    let tests = run_tests(test);
    if !options.no_bench {
        check(
            "the benchmark",
            crate::bench::run(&crate::bench::Options::quick()),
        );
    }
    let tests = match tests {
        Ok(report) => report,
        Err(e) => {
            failed.push(format!("cargo test: {e:#}"));
            TestReport::default()
        }
    };
    if failed.is_empty() && tests.is_empty() {
        eprintln!("xtask: all checks passed");
        return Ok(());
    }
    eprintln!("\nxtask: what failed:");
    for what in &failed {
        eprintln!("  {what}");
    }
    eprint!("{}", tests.summary());
    if !tests.is_empty() {
        eprintln!("  (features for a rerun: {})", features.join(" "));
    }
    bail!(
        "{} check(s) and {} test(s) failed (summary above)",
        failed.len(),
        tests.tests.len()
    )
}

/// Runs `cmd` (a `cargo test`), echoing its output as it comes and reading
/// which tests failed. Its exit status alone is not an error: the report
/// is. A failing status with nothing in the report (a build error) is.
fn run_tests(mut cmd: Command) -> anyhow::Result<TestReport> {
    let line = format!("{cmd:?}");
    eprintln!("xtask: {line}");
    // One pipe for both streams keeps cargo's "Running" lines (stderr) in
    // order with the tests' results (stdout).
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    let mut child = cmd
        .stdout(writer.try_clone().context("duplicating the pipe")?)
        .stderr(writer)
        .spawn()
        .with_context(|| format!("failed to start {line}"))?;
    // The parent's copies of the write end must close, or the read below
    // never ends.
    drop(cmd);
    let mut report = TestReport::default();
    for text in BufReader::new(reader).split(b'\n') {
        let text =
            String::from_utf8_lossy(&text.context("reading cargo test's output")?).into_owned();
        eprintln!("{text}");
        report.line(&text);
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() && report.is_empty() {
        bail!("{line} failed ({status}) with no failing test: a build error? (see above)");
    }
    Ok(report)
}

/// Whether the libraries the `nftables` feature links are installed.
pub(crate) fn has_nftables_libraries() -> bool {
    Command::new("pkg-config")
        .args(["--exists", "libnftnl", "libmnl"])
        .status()
        .is_ok_and(|s| s.success())
}
