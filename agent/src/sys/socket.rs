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
