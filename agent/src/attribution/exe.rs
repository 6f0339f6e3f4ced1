//! Which executable a process runs: what `exe =` rules match in eBPF mode,
//! where the redirect tells the agent the exact process.
//!
//! `/proc/<pid>/exe` shows only to the process's own user, or to a holder
//! of CAP_SYS_PTRACE. The serving agent keeps no capability, so when it
//! starts with that one it forks the **executable helper** first: the
//! agent's user with CAP_SYS_PTRACE alone and `no_new_privs`, holding
//! nothing but one end of a socket pair. Asked a pid, it answers that
//! process's executable (it reads one link; it never traces anything). It
//! dies with the agent (`PR_SET_PDEATHSIG`). Without the capability the
//! agent reads the link itself, and sees only its own user's processes.

use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, fork};

use crate::privs::{self, Target};

/// How long the agent waits for the helper's answer.
const ANSWER_WAIT: Duration = Duration::from_millis(500);

/// Where executables are read.
#[derive(Debug, Default)]
pub enum ExeSource {
    /// By the agent itself: its own user's processes only.
    #[default]
    Own,
    /// By the executable helper.
    Helper(ExeHelper),
}

impl ExeSource {
    /// The executable of process `pid`, if it is there and may be seen.
    pub fn exe_of(&self, pid: u32) -> Option<Arc<str>> {
        match self {
            ExeSource::Own => read_exe(pid),
            ExeSource::Helper(helper) => helper.ask(pid),
        }
    }
}

fn read_exe(pid: u32) -> Option<Arc<str>> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| Arc::from(p.to_string_lossy().as_ref()))
}

/// The agent's end of the helper's socket.
#[derive(Debug)]
pub struct ExeHelper {
    socket: Mutex<UnixDatagram>,
}

impl ExeHelper {
    /// Forks the helper, which becomes `target` keeping CAP_SYS_PTRACE.
    /// Must run while the process has one thread, holding that capability.
    pub fn spawn(target: &Target) -> anyhow::Result<Self> {
        let (ours, theirs) = UnixDatagram::pair().context("creating the helper's sockets")?;
        let parent = nix::unistd::getpid();
        // SAFETY: the process has one thread (the caller drops privileges
        // next, which checks that), so the child may do anything the parent
        // could: no lock is held by a thread that does not exist there.
        #[allow(unsafe_code)]
        let forked = unsafe { fork() }.context("forking the executable helper")?;
        match forked {
            ForkResult::Child => {
                drop(ours);
                let target = target.keeping(caps::Capability::CAP_SYS_PTRACE);
                std::process::exit(helper(&theirs, parent, &target));
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                ours.set_read_timeout(Some(ANSWER_WAIT))
                    .and_then(|()| ours.set_write_timeout(Some(ANSWER_WAIT)))
                    .context("setting the helper socket's timeouts")?;
                tracing::debug!(pid = child.as_raw(), "executable helper started");
                Ok(Self {
                    socket: Mutex::new(ours),
                })
            }
        }
    }

    /// Asks the helper. An answer names the pid it is for, so a late
    /// answer to an earlier question is never taken for this one's.
    fn ask(&self, pid: u32) -> Option<Arc<str>> {
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        socket.send(&pid.to_ne_bytes()).ok()?;
        let mut answer = [0u8; 4 + 4096];
        loop {
            let len = socket.recv(&mut answer).ok()?;
            let (for_pid, path) = answer[..len].split_at_checked(4)?;
            if for_pid == pid.to_ne_bytes() {
                return (!path.is_empty()).then(|| Arc::from(String::from_utf8_lossy(path)));
            }
        }
    }
}

/// The helper's whole life. Returns its exit code.
fn helper(socket: &UnixDatagram, parent: nix::unistd::Pid, target: &Target) -> i32 {
    if let Err(e) = privs::become_helper(c"imds-exe", &[socket.as_raw_fd()], target) {
        eprintln!("imds-agent executable helper: {e}");
        return 2;
    }
    // It goes when the agent does. Set after the credential change, which
    // clears it; then make sure the agent did not die before.
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || nix::unistd::getppid() != parent
    {
        return 0;
    }
    let mut question = [0u8; 16];
    loop {
        let Ok(len) = socket.recv(&mut question) else {
            return 0;
        };
        let Ok(pid) = <[u8; 4]>::try_from(&question[..len]) else {
            continue;
        };
        let path = read_exe(u32::from_ne_bytes(pid));
        let mut answer = pid.to_vec();
        answer.extend_from_slice(path.as_deref().unwrap_or("").as_bytes());
        if socket.send(&answer).is_err() {
            return 0;
        }
    }
}
