//! systemd's service notifications (sd_notify(3)) without libsystemd: one
//! datagram per message to the socket named in `$NOTIFY_SOCKET`. `READY=1`
//! once the agent serves (after its firewall and address are in place, so
//! units ordered after it never meet an unguarded 169.254.169.254),
//! `STATUS=` for `systemctl status`, `WATCHDOG=1` while the runtime runs,
//! `STOPPING=1` at a stop, and descriptors for its store (`FDSTORE=1`,
//! `fdstore`). Outside systemd every call is a no-op.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names, if the agent runs under systemd
    /// with `Type=notify`. A socket that can't be used is logged and
    /// ignored: it must not stop the agent.
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        match Self::open(path.as_encoded_bytes()) {
            Ok(notifier) => Some(notifier),
            Err(e) => {
                tracing::warn!(error = %e, "NOTIFY_SOCKET is set but unusable; systemd will not hear from the agent");
                None
            }
        }
    }

    fn open(path: &[u8]) -> io::Result<Self> {
        let addr = match path.strip_prefix(b"@") {
            // An abstract socket: `@` stands for the leading NUL.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                SocketAddr::from_abstract_name(name)?
            }
            None => {
                use std::os::unix::ffi::OsStrExt as _;
                SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path))?
            }
        };
        Ok(Self {
            socket: UnixDatagram::unbound()?,
            addr,
        })
    }

    /// Sends `state` (`KEY=value` lines).
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::warn!(error = %e, "could not notify systemd");
        }
    }

    /// Sends `state` with descriptor `fd` attached (`FDSTORE=1`): systemd
    /// keeps its own copy. Fails rather than logs: the caller says what
    /// was lost.
    pub fn send_with_fd(&self, state: &str, fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
        use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
        use std::os::fd::AsRawFd as _;
        let socket = UnixDatagram::unbound()?;
        socket.connect_addr(&self.addr)?;
        let fds = [fd.as_raw_fd()];
        let sent = sendmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &[io::IoSlice::new(state.as_bytes())],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )?;
        if sent != state.len() {
            return Err(io::Error::other(
                "systemd's socket took part of the message",
            ));
        }
        Ok(())
    }

    /// The agent serves; `status` says how.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A new status line.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// The agent is stopping.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// Still alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

/// How often systemd wants `WATCHDOG=1`, if it does: half of
/// `$WATCHDOG_USEC` (sd_watchdog_enabled(3)'s advice), and only if
/// `$WATCHDOG_PID`, when set, is this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_a_path_and_to_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::open(path.as_os_str().as_encoded_bytes()).unwrap();
        notifier.ready("serving 169.254.169.254:80\nalias mode");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"READY=1\nSTATUS=serving 169.254.169.254:80 alias mode"
        );

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("imds-agent-test-{}", std::process::id());
        let abstract_listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier::open(format!("@{name}").as_bytes()).unwrap();
        notifier.watchdog();
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
