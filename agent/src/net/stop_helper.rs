//! The stop helper: a small process forked before the agent drops its
//! privileges, whose only job is to take the agent's addresses off `lo` at a
//! clean stop.
//!
//! Removing an address needs CAP_NET_ADMIN at that moment, and the serving
//! agent keeps no capability. So the helper keeps it instead: it becomes
//! the agent's user with CAP_NET_ADMIN alone and no_new_privs, closes every
//! descriptor but its rtnetlink socket and a pipe from the agent, and
//! waits. One byte on the pipe means "clean stop": it removes the
//! addresses and exits. End of file without that byte means the agent died:
//! it exits and leaves everything as it is (fail closed). It ignores SIGINT
//! and SIGTERM, which a terminal or systemd sends to the agent's whole
//! group, so it is still there when the agent asks.

use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};

use anyhow::Context as _;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe};

use super::Installed;
use crate::privs::{self, Target};

const STOP: u8 = b'S';

/// The running helper, held by the agent.
#[derive(Debug)]
pub struct StopHelper {
    pid: Pid,
    pipe: std::fs::File,
}

impl StopHelper {
    /// Forks the helper, which becomes `target` with CAP_NET_ADMIN and
    /// holds `installed`. Must run while the process has one thread.
    pub fn spawn(installed: Installed, target: &Target) -> anyhow::Result<Self> {
        let (read, write) = pipe().context("creating the stop helper's pipe")?;
        let keep = [read.as_raw_fd(), installed.raw_fd()];
        // SAFETY: the process has one thread (the caller drops privileges
        // next, which checks that), so the child may do anything the parent
        // could: no lock is held by a thread that does not exist there.
        #[allow(unsafe_code)]
        let forked = unsafe { fork() }.context("forking the stop helper")?;
        match forked {
            ForkResult::Child => {
                drop(write);
                let code = helper(
                    read,
                    installed,
                    &keep,
                    &target.keeping(caps::Capability::CAP_NET_ADMIN),
                );
                std::process::exit(code);
            }
            ForkResult::Parent { child } => {
                drop(read);
                // The parent's copy of the socket closes here; the helper
                // has its own.
                drop(installed);
                tracing::debug!(pid = child.as_raw(), "stop helper started");
                Ok(Self {
                    pid: child,
                    pipe: std::fs::File::from(write),
                })
            }
        }
    }

    /// Asks the helper to remove the addresses and waits for it.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.pipe
            .write_all(&[STOP])
            .context("signalling the stop helper")?;
        drop(self.pipe);
        match waitpid(self.pid, None).context("waiting for the stop helper")? {
            WaitStatus::Exited(_, 0) => Ok(()),
            WaitStatus::Exited(_, code) => {
                anyhow::bail!(
                    "the stop helper could not remove the addresses (exit {code}); run `imds-agent cleanup`"
                )
            }
            other => anyhow::bail!(
                "the stop helper ended abnormally ({other:?}); run `imds-agent cleanup`"
            ),
        }
    }
}

/// The helper's whole life. Returns its exit code.
fn helper(read: OwnedFd, installed: Installed, keep: &[RawFd], target: &Target) -> i32 {
    if let Err(e) = privs::become_helper(c"imds-stop", keep, target) {
        eprintln!("imds-agent stop helper: {e}");
        return 2;
    }
    let mut pipe = std::fs::File::from(read);
    let mut byte = [0u8; 1];
    let asked = loop {
        match pipe.read(&mut byte) {
            Ok(1) => break byte[0] == STOP,
            Ok(_) => break false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break false,
        }
    };
    if !asked {
        // The agent died: leave the address and the table (fail closed).
        return 0;
    }
    match installed.remove_addresses() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("imds-agent stop helper: {e:#}");
            1
        }
    }
}
