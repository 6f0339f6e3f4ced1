//! Socket options set on connections the HTTP server owns.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};

/// Sets the IP TTL (IPv4) or hop limit (IPv6) of the socket `fd` to `hops`.
///
/// # Safety
///
/// `fd` must be an open socket for the whole call. The HTTP server
/// guarantees this by calling it only while handling a request on that
/// connection: the connection, and with it the socket, outlives the handler.
#[allow(unsafe_code)]
pub unsafe fn set_hop_limit(fd: RawFd, local: SocketAddr, hops: u8) -> io::Result<()> {
    // SAFETY: the caller guarantees `fd` is open for the duration of this
    // call, and the borrow does not outlive it.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&fd);
    match local {
        SocketAddr::V4(_) => socket.set_ttl_v4(u32::from(hops)),
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => {
            // An IPv4 client on a dual-stack socket: its packets are IPv4.
            socket.set_ttl_v4(u32::from(hops))
        }
        SocketAddr::V6(_) => socket.set_unicast_hops_v6(u32::from(hops)),
    }
}

/// The cookie of the network namespace `socket` lives in (`SO_NETNS_COOKIE`,
/// Linux 5.14): what eBPF programs see as `bpf_get_netns_cookie`.
#[allow(unsafe_code)]
pub fn netns_cookie(socket: &impl std::os::fd::AsRawFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `socket` is open for the call; the kernel writes at most
    // `len` bytes into `cookie`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// The supplementary groups of the process at the other end of the unix
/// socket `socket` (`SO_PEERGROUPS`, Linux 4.13), as they were when it
/// connected.
#[allow(unsafe_code)]
pub fn peer_groups(socket: &impl std::os::fd::AsRawFd) -> io::Result<Vec<u32>> {
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<u32>()) as libc::socklen_t;
        // SAFETY: `socket` is open for the call; the kernel writes at most
        // `len` bytes into `groups`, which is that large.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        let needed = len as usize / std::mem::size_of::<u32>();
        if rc == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let error = io::Error::last_os_error();
        // Too small: the kernel said how large it must be.
        if error.raw_os_error() == Some(libc::ERANGE) && needed > groups.len() && needed <= 65_536 {
            groups.resize(needed, 0);
            continue;
        }
        return Err(error);
    }
}
