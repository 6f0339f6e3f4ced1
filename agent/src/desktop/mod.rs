//! Telling the person at the desk that the agent needs an MFA code, where
//! they are: a desktop notification (`notification.rs`), a prompt in the
//! terminal `dev` runs in (`terminal.rs`), and the `/manage` page opened in
//! their browser (`open_page`). Only `dev` does this: a system service has
//! no desk.

mod notification;
mod terminal;

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::creds::engine::Engine;

/// Starts telling the person: notifications when there is a session bus,
/// the terminal prompt when `dev` runs in the foreground of a terminal.
/// `page` is the `/manage` address (secret included).
pub fn start(engine: &Engine, page: Option<&str>) {
    let opener = page.map(|url| PageOpener {
        url: url.to_owned(),
    });
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() {
        tokio::spawn(notification::run(engine.clone(), opener));
    }
    terminal::start(engine.clone());
}

/// Opens the `/manage` page in the person's browser.
#[derive(Debug, Clone)]
pub struct PageOpener {
    url: String,
}

impl PageOpener {
    /// Opens the page (on a blocking thread: xdg-open may take a while).
    pub async fn open(&self) -> std::io::Result<()> {
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || {
            let dir = runtime_dir();
            private_dir(&dir).map_err(std::io::Error::other)?;
            open_in_browser(&url, &dir)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Runs `xdg-open` on a file in `dir` that sends the browser to `url`.
/// The page's address carries its secret, and a command line is visible
/// to every user (`/proc/PID/cmdline`): the address goes in a file only the
/// user can read, and the browser is given the file's name.
pub fn open_in_browser(url: &str, dir: &Path) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let file = write_redirect(dir, url)?;
    let mut command = std::process::Command::new("xdg-open");
    command
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Not the terminal's job: Ctrl-C in `dev`'s terminal does not
        // close the browser it opened.
        .process_group(0);
    // The browser is the person's, not the agent's: it gets none of the
    // keys the agent may have been given in its environment.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(&name);
        }
    }
    let mut child = command.spawn()?;
    // Some xdg-open fallbacks run the browser in the foreground: reaped
    // when it ends, never waited for.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

/// Whether `url` is a `/manage` page on loopback: what `imds-agent manage`
/// accepts from a socket before it opens a browser on it.
pub fn is_local_page(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    let ip = host
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false);
    let localhost = host
        .strip_prefix("localhost:")
        .is_some_and(|port| port.parse::<u16>().is_ok());
    (ip || localhost) && rest[host.len()..].starts_with("/manage?k=")
}

/// Whether a desktop is there to open a browser on.
pub fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()))
}

/// Makes `dir` (mode 0700) unless it exists, then checks that it is the
/// user's own and closed to others (mode 0700, not a link): in /tmp anyone
/// could have made it first, and would then see, or replace, what the
/// agent puts there. Made here, in one step, not later: between a check
/// that found nothing and a later mkdir someone else's could appear.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot check {}: {e}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_dir() && meta.uid() == me && mode & 0o077 == 0 {
        return Ok(());
    }
    Err(format!(
        "{} is not a directory of your own with mode 0700 (it is {}, owned by uid {}, mode {mode:o}): another user may have made it; remove it, or set admin.socket",
        dir.display(),
        if meta.file_type().is_symlink() {
            "a symbolic link"
        } else if meta.is_dir() {
            "a directory"
        } else {
            "a file"
        },
        meta.uid()
    ))
}

/// The user's own runtime directory (`$XDG_RUNTIME_DIR`, else
/// `/tmp/imds-agent-UID`), not yet checked with `private_dir`.
pub fn runtime_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| {
            let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
            PathBuf::from(format!("/tmp/imds-agent-{uid}"))
        })
}

/// Writes `dir/imds-agent-manage.html` (mode 0600): a page that sends the
/// browser on to `url`.
pub fn write_redirect(dir: &Path, url: &str) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    let path = dir.join("imds-agent-manage.html");
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    let attr = url.replace('&', "&amp;").replace('"', "&quot;");
    write!(
        file,
        "<!doctype html><meta charset=\"utf-8\"><meta name=\"referrer\" content=\"no-referrer\"><meta http-equiv=\"refresh\" content=\"0;url={attr}\"><title>imds-agent</title>"
    )?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loopback_page_is_opened() {
        assert!(is_local_page("http://127.0.0.1:8930/manage?k=abc"));
        assert!(is_local_page("http://[::1]:8930/manage?k=abc"));
        assert!(is_local_page("http://localhost:8930/manage?k=abc"));
        assert!(!is_local_page("http://evil.example:80/manage?k=abc"));
        assert!(!is_local_page(
            "http://127.0.0.1.evil.example:80/manage?k=abc"
        ));
        assert!(!is_local_page("https://127.0.0.1:8930/manage?k=abc"));
        assert!(!is_local_page("http://127.0.0.1:8930/phish"));
        assert!(!is_local_page("file:///etc/passwd"));
    }

    #[test]
    fn the_redirect_file_is_private_and_escaped() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = write_redirect(dir.path(), "http://127.0.0.1:1/manage?k=a&b=\"c\"").unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains("url=http://127.0.0.1:1/manage?k=a&amp;b=&quot;c&quot;"),
            "{text}"
        );
    }
}
