//! Descriptors a process is handed at start (sd_listen_fds(3): systemd
//! passes them from 3 on).

use std::io;
use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};

/// Takes ownership of inherited descriptor `fd`, marking it close-on-exec
/// (systemd hands them without), if it is open.
#[allow(unsafe_code)]
pub fn take(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::other(format!("{fd} is a standard stream")));
    }
    // SAFETY: F_GETFD/F_SETFD read and set the flags of a descriptor
    // number; on a closed one they fail with EBADF and change nothing.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // systemd hands descriptors without the flag, and everything the
    // agent opens has it: one with it is the agent's own (a `$LISTEN_FDS`
    // that counts too many), never taken.
    if flags & libc::FD_CLOEXEC != 0 {
        return Err(io::Error::other("close-on-exec: not inherited"));
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open, and the caller takes it as the only
    // owner (sd_listen_fds' contract: it is the process's to use).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes `$LISTEN_PID`, `$LISTEN_FDS` and `$LISTEN_FDNAMES`.
#[allow(unsafe_code)]
pub fn forget_listen_env() {
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: called first thing in `main`, while the process is one
        // thread: nothing reads the environment at the same time.
        unsafe { std::env::remove_var(name) };
    }
}
