//! Descriptors a process is handed at start (sd_listen_fds(3): systemd
//! passes them from 3 on), and constants of the process's own.

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
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open, and the caller takes it as the only
    // owner (sd_listen_fds' contract: it is the process's to use).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Clock ticks a second (`_SC_CLK_TCK`), the unit of /proc's CPU times.
#[allow(unsafe_code)]
pub fn clock_ticks() -> i64 {
    // SAFETY: sysconf reads a constant of the system.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }
}

/// The page size (`_SC_PAGESIZE`), the unit of /proc's memory sizes.
#[allow(unsafe_code)]
pub fn page_size() -> i64 {
    // SAFETY: sysconf reads a constant of the system.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }
}

/// The soft limit of open file descriptors (`RLIMIT_NOFILE`).
#[allow(unsafe_code)]
pub fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } == 0).then_some(limit.rlim_cur)
}
