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
