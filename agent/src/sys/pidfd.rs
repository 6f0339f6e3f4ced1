//! Process file descriptors: a handle on one process that can't be fooled
//! by pid reuse. The container registry holds one per container to know,
//! without asking Docker, that a container is still the one running.

use std::io;
use std::os::fd::{AsFd as _, FromRawFd as _, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// A pidfd (`pidfd_open(2)`, Linux 5.3).
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd for `pid`. Needs no privileges.
    #[allow(unsafe_code)]
    pub fn open(pid: i32) -> io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new file
        // descriptor or -1; no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us, and
        // nothing else owns it.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Whether the process has exited: a pidfd becomes readable then. One
    /// poll(2) with no wait.
    pub fn exited(&self) -> bool {
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) => n > 0,
            // Can't tell: treat as gone, so nothing is attributed to it.
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_a_running_process_from_an_exited_one() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = PidFd::open(child.id() as i32).unwrap();
        assert!(!fd.exited());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(fd.exited());
        assert!(PidFd::open(i32::MAX).is_err());
    }
}
