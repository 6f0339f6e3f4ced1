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
//!
//! A pid alone proves nothing about who connected: the process may have
//! exec'd another program since (connect, fork, exec the allowed binary,
//! send the request from the child), or exited and left its pid to
//! another. And a path proves nothing either: in a mount namespace of its
//! own a user may bind its own program over `/usr/bin/allowed`. So the
//! eBPF programs record the identity (inode, device) of the executable at
//! `connect()`, and the path read here counts only if it names that same
//! file in the agent's own view of the file system (`identity_of`).

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

/// Which file an executable is: what the kernel recorded at `connect()`
/// and what /proc shows now are compared by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExeId {
    /// The inode number.
    pub ino: u64,
    /// The device's major number.
    pub major: u32,
    /// The device's minor number.
    pub minor: u32,
}

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
    /// The path of process `pid`'s executable, if it is there and may be
    /// seen. Reading the link asks no file system anything (a user's FUSE
    /// mount can't stall it). Blocking (a helper round trip): not on an
    /// async worker.
    pub fn path_of(&self, pid: u32) -> Option<Arc<str>> {
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

/// Which file `path` is in the agent's own view of the file system. Asked
/// only for paths a rule's pattern matches (the operator's, not the
/// workload's, directories).
pub fn identity_of(path: &str) -> Option<ExeId> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some(ExeId {
        ino: meta.ino(),
        major: libc::major(meta.dev()),
        minor: libc::minor(meta.dev()),
    })
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
    /// answer to an earlier question is never taken for this one's. The
    /// helper answers one question at a time; callers are on blocking
    /// threads, never on the request path's workers.
    fn ask(&self, pid: u32) -> Option<Arc<str>> {
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        socket.send(&pid.to_ne_bytes()).ok()?;
        let mut answer = [0u8; 4 + 4096];
        loop {
            let len = socket.recv(&mut answer).ok()?;
            if let Some(path) = decode_answer(pid, &answer[..len]) {
                return path;
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
        let pid = u32::from_ne_bytes(pid);
        let answer = encode_answer(pid, read_exe(pid).as_deref());
        if socket.send(&answer).is_err() {
            return 0;
        }
    }
}

/// An answer on the helper's socket: the pid, then the path (empty: not
/// seen).
fn encode_answer(pid: u32, path: Option<&str>) -> Vec<u8> {
    let mut answer = pid.to_ne_bytes().to_vec();
    answer.extend_from_slice(path.unwrap_or("").as_bytes());
    answer
}

/// Reads an answer for `pid`: `None` if it is for another pid; `Some(None)`
/// if the helper could not see the process.
fn decode_answer(pid: u32, answer: &[u8]) -> Option<Option<Arc<str>>> {
    let (for_pid, path) = answer.split_at_checked(4)?;
    (for_pid == pid.to_ne_bytes())
        .then(|| (!path.is_empty()).then(|| Arc::from(String::from_utf8_lossy(path))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_executable_and_which_file_it_is() {
        let path = read_exe(std::process::id()).expect("its own executable");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(&*path, exe.to_str().unwrap());
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(&exe).unwrap();
        assert_eq!(identity_of(&path).unwrap().ino, meta.ino());
        assert_eq!(read_exe(u32::MAX), None);
        assert_eq!(identity_of("/nonexistent/binary"), None);
    }

    #[test]
    fn answers_name_their_pid() {
        let answer = encode_answer(7, Some("/usr/bin/python3"));
        assert_eq!(
            decode_answer(7, &answer),
            Some(Some("/usr/bin/python3".into()))
        );
        assert_eq!(decode_answer(8, &answer), None, "another pid's answer");
        assert_eq!(decode_answer(7, &encode_answer(7, None)), Some(None));
        assert_eq!(decode_answer(7, &answer[..2]), None, "cut short");
    }
}
