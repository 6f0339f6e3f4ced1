//! `cargo xtask package`: the agent as a Debian package, built from what
//! `cargo xtask install --prefix /usr` lays out (binary, unit, sysusers.d,
//! the sample config mode 600 and the commented rules example), with a
//! tmpfiles.d file, the drop-ins as examples, a man page and shell
//! completions generated from the CLI's own definition (`imds-agent
//! generate`), the config and the example as conffiles, and maintainer
//! scripts (`systemd/debian/`) that enable the service but do not start
//! it. `dpkg-deb` builds it; nothing else is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::install::put;
use crate::util::{root, run, work_dir};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Where the .deb goes (default: target/debian).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What dpkg keeps as the operator's: never replaced without asking, left
/// by `dpkg -r`, removed by `dpkg -P`.
const CONFFILES: [&str; 2] = [
    "/etc/imds-agent/config.toml",
    "/etc/imds-agent/roles.d/example.toml",
];

/// Shell completions, each where its shell looks for packaged ones.
const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "usr/share/bash-completion/completions/imds-agent"),
    ("zsh", "usr/share/zsh/vendor-completions/_imds-agent"),
    (
        "fish",
        "usr/share/fish/vendor_completions.d/imds-agent.fish",
    ),
];

pub(crate) fn package(options: &Options) -> anyhow::Result<()> {
    let staging = work_dir().join("package");
    let _ = std::fs::remove_dir_all(&staging);
    let tree = staging.join("root");
    std::fs::create_dir_all(&tree)?;
    crate::install::install(&crate::install::Options::staged(&tree))?;
    // The sample as a conffile, every setting commented out: enabled at
    // install, the service starts at the next boot, and a host nobody has
    // configured yet must not have its 169.254.169.254 taken over with the
    // sample's placeholder account (on EC2, cut off from the real IMDS).
    // The unit's ExecCondition (`imds-agent is-configured`) skips it.
    put(
        &tree.join("etc/imds-agent/config.toml"),
        commented_out(&std::fs::read_to_string(
            root().join("systemd/config.toml"),
        )?)
        .as_bytes(),
        0o600,
        true,
    )?;
    let binary = tree.join("usr/bin/imds-agent");
    // The release profile keeps debug info for backtraces and profiles;
    // a package ships without (137 MB against about 20).
    run(Command::new("strip").arg("--strip-debug").arg(&binary)).context("strip (binutils)")?;
    put(
        &tree.join("usr/lib/tmpfiles.d/imds-agent.conf"),
        &std::fs::read(root().join("systemd/debian/tmpfiles.conf"))?,
        0o644,
        true,
    )?;
    for drop_in in ["docker.conf", "ebpf.conf"] {
        put(
            &tree.join("usr/share/doc/imds-agent/examples").join(drop_in),
            &std::fs::read(root().join("systemd").join(drop_in))?,
            0o644,
            true,
        )?;
    }
    let pages = staging.join("man");
    std::fs::create_dir_all(&pages)?;
    run(Command::new(&binary)
        .args(["generate", "man", "--dir"])
        .arg(&pages))
    .context("imds-agent generate man")?;
    for page in std::fs::read_dir(&pages)? {
        let page = page?.path();
        let name = page
            .file_name()
            .context("a man page's name")?
            .to_string_lossy()
            .into_owned();
        put(
            &tree.join("usr/share/man/man1").join(format!("{name}.gz")),
            &gzip(&std::fs::read(&page)?)?,
            0o644,
            true,
        )?;
    }
    for (shell, path) in COMPLETIONS {
        put(&tree.join(path), &generated(&binary, shell)?, 0o644, true)?;
    }
    let debian = tree.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    let version = env!("CARGO_PKG_VERSION");
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let control = format!(
        "Package: imds-agent\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: imds-agent developers <imds-agent@users.noreply.github.com>\n\
         Depends: {}\n\
         Section: admin\n\
         Priority: optional\n\
         Installed-Size: {}\n\
         Homepage: https://github.com/imds-agent/imds-agent\n\
         Description: EC2 instance metadata service, one IAM role per workload\n \
         imds-agent serves the EC2 Instance Metadata Service (169.254.169.254) on\n \
         any Linux host and hands each workload (systemd unit, cgroup, container,\n \
         user) its own IAM role's temporary credentials, so unmodified AWS SDKs\n \
         and CLIs work with no keys on disk.\n",
        depends(&staging, &binary)?.join(", "),
        installed_kib(&tree)?,
    );
    put(&debian.join("control"), control.as_bytes(), 0o644, true)?;
    let conffiles: String = CONFFILES.iter().map(|f| format!("{f}\n")).collect();
    put(&debian.join("conffiles"), conffiles.as_bytes(), 0o644, true)?;
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        put(
            &debian.join(script),
            &std::fs::read(root().join("systemd/debian").join(script))?,
            0o755,
            true,
        )?;
    }
    let sums = output(
        Command::new("sh")
            .current_dir(&tree)
            .args(["-c", "find usr -type f -print0 | sort -z | xargs -0 md5sum"]),
    )?;
    put(
        &debian.join("md5sums"),
        format!("{sums}\n").as_bytes(),
        0o644,
        true,
    )?;
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| root().join("target/debian"));
    std::fs::create_dir_all(&out)?;
    let deb = out.join(format!("imds-agent_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(&deb))
    .context("dpkg-deb --build")?;
    let _ = std::fs::remove_dir_all(&staging);
    println!("{}", deb.display());
    Ok(())
}

/// `sample` with each setting and table header commented out, under a
/// header that says how the file keeps the service stopped.
fn commented_out(sample: &str) -> String {
    let mut text = String::from(
        "# As installed, every setting here is commented out, and the service\n\
         # does not start (its ExecCondition, `imds-agent is-configured`, skips\n\
         # it) until this file sets something. Uncomment and edit what you\n\
         # need, then: imds-agent check-config && systemctl start imds-agent\n\
         #\n",
    );
    for line in sample.lines() {
        let trimmed = line.trim_start();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            text.push_str("# ");
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// What `imds-agent generate WHAT` writes.
fn generated(binary: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(binary)
        .args(["generate", what])
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!(
            "imds-agent generate {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    // -n: no name or time in the header, so the package is reproducible.
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("gzip")?;
    child
        .stdin
        .take()
        .context("gzip's stdin")?
        .write_all(bytes)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip failed");
    }
    Ok(out.stdout)
}

/// The packages that hold the libraries the binary links, each with the
/// lowest version that has every symbol it uses, as `dpkg-shlibdeps`
/// reads them from the libraries' symbols and shlibs files (what Debian's
/// own packages are built with), and systemd (the maintainer scripts and
/// the unit: ExecCondition= and FDSTORE= are older than Debian 11's 247).
fn depends(staging: &Path, binary: &Path) -> anyhow::Result<Vec<String>> {
    // dpkg-shlibdeps reads the source package's control file.
    put(
        &staging.join("debian/control"),
        b"Source: imds-agent\n\nPackage: imds-agent\nArchitecture: any\n",
        0o644,
        true,
    )?;
    let found = output(
        Command::new("dpkg-shlibdeps")
            .current_dir(staging)
            .arg("-O")
            .arg(binary),
    )
    .context("dpkg-shlibdeps (Debian's dpkg-dev) computes the package's dependencies")?;
    // `shlibs:Depends=libc6 (>= 2.34), libmnl0 (>= 1.0.3-4~), ...`
    let libraries = found
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("dpkg-shlibdeps said: {found}"))?;
    let mut packages = vec!["systemd (>= 247)".to_owned()];
    packages.extend(libraries.split(", ").map(str::to_owned));
    Ok(packages)
}

/// The tree's size in KiB, for `Installed-Size`.
fn installed_kib(tree: &Path) -> anyhow::Result<u64> {
    let du = output(
        Command::new("du")
            .args(["-sk", "--exclude=DEBIAN"])
            .arg(tree),
    )?;
    du.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du's answer")
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
