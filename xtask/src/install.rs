//! `cargo xtask install` and `cargo xtask uninstall`: the agent as a
//! systemd service.
//!
//! Installs the release binary (built with host modes), the unit, the
//! agent's user (a sysusers.d file, applied with `systemd-sysusers`), the
//! sample config (mode 600) and a commented role rules example. An
//! operator's config and rules are never overwritten; uninstall removes
//! them only while they are the shipped samples, unchanged (and leaves the
//! user, as packages do: files it owned may remain).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::test::has_nftables_libraries;
use crate::util::{root, run};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Where the binary goes: PREFIX/bin/imds-agent. The unit goes to
    /// /usr/lib/systemd/system with prefix /usr, else /etc/systemd/system.
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Install below this directory instead of / (packaging, images); no
    /// systemctl is run then.
    #[arg(long)]
    destdir: Option<PathBuf>,
}

impl Options {
    /// Installs with prefix /usr below `destdir` (a package's tree).
    pub(crate) fn staged(destdir: &Path) -> Self {
        Self {
            prefix: PathBuf::from("/usr"),
            destdir: Some(destdir.to_owned()),
        }
    }
}

const CONFIG_DIR: &str = "/etc/imds-agent";
const UNIT_NAME: &str = "imds-agent.service";
const SYSUSERS_NAME: &str = "imds-agent.sysusers";

/// What gets installed where.
struct Layout {
    destdir: PathBuf,
    binary: PathBuf,
    unit: PathBuf,
    sysusers: PathBuf,
    config: PathBuf,
    rules_dir: PathBuf,
    rules_example: PathBuf,
}

impl Layout {
    fn new(options: &Options) -> anyhow::Result<Self> {
        if !options.prefix.is_absolute() {
            bail!("--prefix must be an absolute path");
        }
        let (unit_dir, sysusers_dir) = if options.prefix == Path::new("/usr") {
            ("/usr/lib/systemd/system", "/usr/lib/sysusers.d")
        } else {
            ("/etc/systemd/system", "/etc/sysusers.d")
        };
        Ok(Self {
            destdir: options
                .destdir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/")),
            binary: options.prefix.join("bin/imds-agent"),
            unit: Path::new(unit_dir).join(UNIT_NAME),
            sysusers: Path::new(sysusers_dir).join("imds-agent.conf"),
            config: Path::new(CONFIG_DIR).join("config.toml"),
            rules_dir: Path::new(CONFIG_DIR).join("roles.d"),
            rules_example: Path::new(CONFIG_DIR).join("roles.d/example.toml"),
        })
    }

    /// `path` below the destination directory.
    fn at(&self, path: &Path) -> PathBuf {
        self.destdir.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn is_live(&self) -> bool {
        self.destdir == Path::new("/")
    }
}

/// The unit, with the binary's installed path.
fn unit_text(binary: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(root().join("systemd").join(UNIT_NAME))?;
    Ok(text.replace("/usr/local/bin/imds-agent", &binary.display().to_string()))
}

fn sample(name: &str) -> anyhow::Result<String> {
    let path = root().join("systemd").join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

pub(crate) fn install(options: &Options) -> anyhow::Result<()> {
    let layout = Layout::new(options)?;
    if !has_nftables_libraries() {
        bail!(
            "the service runs in a host mode, which needs the nftables build: install libnftnl-dev, libmnl-dev and pkg-config (Debian), or run `bash .ci/run`"
        );
    }
    let built = crate::util::build_release()?;
    put(
        &layout.at(&layout.binary),
        &std::fs::read(&built)?,
        0o755,
        true,
    )?;
    put(
        &layout.at(&layout.unit),
        unit_text(&layout.binary)?.as_bytes(),
        0o644,
        true,
    )?;
    put(
        &layout.at(&layout.sysusers),
        sample(SYSUSERS_NAME)?.as_bytes(),
        0o644,
        true,
    )?;
    if layout.is_live() {
        // The user now, not at the next boot.
        run(Command::new("systemd-sysusers").arg(&layout.sysusers))
            .context("creating the agent's user (systemd-sysusers, from Debian's systemd)")?;
    }
    put(
        &layout.at(&layout.config),
        sample("config.toml")?.as_bytes(),
        0o600,
        false,
    )?;
    std::fs::create_dir_all(layout.at(&layout.rules_dir))?;
    put(
        &layout.at(&layout.rules_example),
        sample("roles.d/example.toml")?.as_bytes(),
        0o644,
        false,
    )?;
    if layout.is_live() && systemd_runs() {
        run(Command::new("systemctl").arg("daemon-reload"))?;
        eprintln!("xtask: installed; start it with: systemctl enable --now imds-agent");
    } else {
        eprintln!("xtask: installed below {}", layout.destdir.display());
    }
    Ok(())
}

pub(crate) fn uninstall(options: &Options) -> anyhow::Result<()> {
    let layout = Layout::new(options)?;
    let binary = layout.at(&layout.binary);
    if layout.is_live() && systemd_runs() {
        // Stopped, the agent leaves its table (fail closed): cleanup
        // removes it with the binary that made it.
        let _ = Command::new("systemctl")
            .args(["disable", "--now", UNIT_NAME])
            .status();
    }
    if layout.is_live() && binary.exists() {
        let config = layout.at(&layout.config);
        let status = Command::new(&binary)
            .arg("cleanup")
            .arg("--config")
            .arg(&config)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!(
                "xtask: `imds-agent cleanup` failed; run it as root before removing the binary by hand"
            );
        }
    }
    remove_if(&layout.at(&layout.unit), None)?;
    remove_if(&layout.at(&layout.sysusers), Some(&sample(SYSUSERS_NAME)?))?;
    remove_if(&binary, None)?;
    remove_if(&layout.at(&layout.config), Some(&sample("config.toml")?))?;
    remove_if(
        &layout.at(&layout.rules_example),
        Some(&sample("roles.d/example.toml")?),
    )?;
    for dir in [
        layout.at(&layout.rules_dir),
        layout.at(Path::new(CONFIG_DIR)),
    ] {
        // Only empty: an operator's files stay.
        let _ = std::fs::remove_dir(dir);
    }
    if layout.is_live() && systemd_runs() {
        run(Command::new("systemctl").arg("daemon-reload"))?;
    }
    Ok(())
}

/// Writes `contents` to `path` with `mode`; an existing file is replaced
/// only if `replace` (the binary and the unit are ours; the config is the
/// operator's).
pub(crate) fn put(path: &Path, contents: &[u8], mode: u32, replace: bool) -> anyhow::Result<()> {
    if path.exists() && !replace {
        eprintln!("xtask: kept {} (yours)", path.display());
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A new file, renamed over the old one: a running binary is not
    // rewritten in place.
    let tmp = path.with_extension("xtask-new");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("installing {}", path.display()))?;
    eprintln!("xtask: installed {}", path.display());
    Ok(())
}

/// Removes `path` if it exists and, when `shipped` is given, still holds
/// exactly that.
fn remove_if(path: &Path, shipped: Option<&str>) -> anyhow::Result<()> {
    let Ok(current) = std::fs::read(path) else {
        return Ok(());
    };
    if shipped.is_some_and(|s| s.as_bytes() != current) {
        eprintln!(
            "xtask: kept {} (changed since it was installed)",
            path.display()
        );
        return Ok(());
    }
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    eprintln!("xtask: removed {}", path.display());
    Ok(())
}

/// Whether systemd is this machine's init (sd_booted(3)).
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}
