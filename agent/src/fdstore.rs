//! systemd's file descriptor store (`FileDescriptorStoreMax=` in the unit):
//! what the agent hands systemd at a stop comes back to the next start of
//! the service as an inherited descriptor (sd_listen_fds(3), named by
//! `$LISTEN_FDNAMES`). The agent keeps its cached credentials there, in a
//! sealed memory file: a restart costs STS nothing, and nothing touches a
//! disk. systemd keeps the store across `systemctl restart` and automatic
//! restarts, and empties it when the service stops for good. Outside
//! systemd nothing is kept.

use std::os::fd::AsFd as _;

use anyhow::Context as _;

use crate::notify::Notifier;
use crate::sys::{inherited, memfd};

/// The name of the cached credentials' descriptor.
pub const CREDENTIALS: &str = "credentials";

/// The most the agent reads back: 200 roles take about 300 KB.
const MAX_BYTES: u64 = 64 << 20;

/// What the service manager handed this process at its start.
#[derive(Debug, Default)]
pub struct Taken {
    /// The bytes kept under the name asked for.
    pub bytes: Option<Vec<u8>>,
    /// What could not be used, to log once logging runs.
    pub problems: Vec<String>,
}

/// What the service manager handed this process under `name`, read and
/// closed; every other inherited descriptor is closed too (the agent has
/// no socket units). Must run first thing, while the process is one thread
/// and has opened nothing: the `LISTEN_*` variables are then removed, so
/// nothing the agent starts sees them. A descriptor that is not a sealed
/// memory file is not used (`problems` says why).
pub fn take(name: &str) -> Taken {
    let mut taken = Taken::default();
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    inherited::forget_listen_env();
    // Meant for this process, not a parent that forgot to unset them.
    if pid.and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
        return taken;
    }
    let Some(count) = count.and_then(|c| c.parse::<i32>().ok()) else {
        return taken;
    };
    let names: Vec<&str> = names.split(':').collect();
    for index in 0..count.clamp(0, 64) {
        let fd = match inherited::take(3 + index) {
            Ok(fd) => fd,
            Err(e) => {
                taken
                    .problems
                    .push(format!("inherited descriptor {}: {e}", 3 + index));
                continue;
            }
        };
        if names.get(index as usize) != Some(&name) || taken.bytes.is_some() {
            continue;
        }
        match memfd::read_sealed(fd, MAX_BYTES) {
            Ok(bytes) => taken.bytes = Some(bytes),
            Err(e) => taken.problems.push(format!(
                "systemd's store handed back a {name} descriptor that is not the agent's: {e}"
            )),
        }
    }
    taken
}

/// Hands `bytes` to systemd's store under `name`, replacing what it kept
/// under that name.
pub fn keep(notifier: &Notifier, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    forget(notifier, name);
    let fd = memfd::sealed(&format!("imds-agent-{name}"), bytes)
        .context("making a sealed memory file")?;
    notifier
        .send_with_fd(&format!("FDSTORE=1\nFDNAME={name}"), fd.as_fd())
        .context("handing it to systemd")
}

/// Asks systemd to drop what it keeps under `name`: once read, it must not
/// come back to a start after a crash (the next stop keeps a fresh copy).
pub fn forget(notifier: &Notifier, name: &str) {
    notifier.send(&format!("FDSTOREREMOVE=1\nFDNAME={name}"));
}
