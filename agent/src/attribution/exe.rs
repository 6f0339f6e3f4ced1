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
//! another. So the eBPF programs record the identity (inode, device) of
//! the executable at `connect()`, and an executable read here counts only
//! if it is that same file.

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

/// A process's executable as /proc shows it: its path, and which file it
/// is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenExe {
    /// The path (`/usr/bin/python3.11`).
    pub path: Arc<str>,
    /// The file.
    pub id: ExeId,
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
    /// The executable of process `pid`, if it is there and may be seen.
    /// Blocking (a helper round trip): not on an async worker.
    pub fn exe_of(&self, pid: u32) -> Option<SeenExe> {
        match self {
            ExeSource::Own => read_exe(pid),
            ExeSource::Helper(helper) => helper.ask(pid),
        }
    }
}

/// Opens the executable once and reads both its path and its identity
/// from that open file, so the two are of the same file even if the
/// process execs meanwhile.
fn read_exe(pid: u32) -> Option<SeenExe> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{pid}/exe"))
        .ok()?;
    let meta = file.metadata().ok()?;
    let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
    Some(SeenExe {
        path: Arc::from(path.to_string_lossy().as_ref()),
        id: ExeId {
            ino: meta.ino(),
            major: libc::major(meta.dev()),
            minor: libc::minor(meta.dev()),
        },
    })
}

/// An answer on the helper's socket: pid, inode, major, minor, path.
fn encode_answer(pid: u32, seen: Option<&SeenExe>) -> Vec<u8> {
    let mut answer = pid.to_ne_bytes().to_vec();
    if let Some(seen) = seen {
        answer.extend_from_slice(&seen.id.ino.to_ne_bytes());
        answer.extend_from_slice(&seen.id.major.to_ne_bytes());
        answer.extend_from_slice(&seen.id.minor.to_ne_bytes());
        answer.extend_from_slice(seen.path.as_bytes());
    }
    answer
}

/// Reads an answer for `pid`: `None` if it is for another pid; `Some(None)`
/// if the helper could not see the process.
fn decode_answer(pid: u32, answer: &[u8]) -> Option<Option<SeenExe>> {
    let (for_pid, rest) = answer.split_at_checked(4)?;
    if for_pid != pid.to_ne_bytes() {
        return None;
    }
    let Some((ino, rest)) = rest.split_at_checked(8) else {
        return Some(None);
    };
    let (major, rest) = rest.split_at_checked(4)?;
    let (minor, path) = rest.split_at_checked(4)?;
    if path.is_empty() {
        return Some(None);
    }
    Some(Some(SeenExe {
        path: Arc::from(String::from_utf8_lossy(path)),
        id: ExeId {
            ino: u64::from_ne_bytes(ino.try_into().ok()?),
            major: u32::from_ne_bytes(major.try_into().ok()?),
            minor: u32::from_ne_bytes(minor.try_into().ok()?),
        },
    }))
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
    fn ask(&self, pid: u32) -> Option<SeenExe> {
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        socket.send(&pid.to_ne_bytes()).ok()?;
        let mut answer = [0u8; 4 + 16 + 4096];
        loop {
            let len = socket.recv(&mut answer).ok()?;
            if let Some(seen) = decode_answer(pid, &answer[..len]) {
                return seen;
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
        let answer = encode_answer(pid, read_exe(pid).as_ref());
        if socket.send(&answer).is_err() {
            return 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_executable_and_which_file_it_is() {
        let seen = read_exe(std::process::id()).expect("its own executable");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(&*seen.path, exe.to_str().unwrap());
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(&exe).unwrap();
        assert_eq!(seen.id.ino, meta.ino());
        assert_eq!(read_exe(u32::MAX), None);
    }

    #[test]
    fn answers_name_their_pid() {
        let seen = SeenExe {
            path: "/usr/bin/python3".into(),
            id: ExeId {
                ino: 42,
                major: 8,
                minor: 1,
            },
        };
        let answer = encode_answer(7, Some(&seen));
        assert_eq!(decode_answer(7, &answer), Some(Some(seen)));
        assert_eq!(decode_answer(8, &answer), None, "another pid's answer");
        assert_eq!(decode_answer(7, &encode_answer(7, None)), Some(None));
        assert_eq!(
            decode_answer(7, &answer[..10]),
            Some(None),
            "cut short: nothing seen"
        );
    }
}
