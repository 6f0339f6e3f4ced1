//! Who owns the other end of a TCP connection: one NETLINK_SOCK_DIAG
//! request for the client's socket (exact 4-tuple, no dump) answers its
//! cgroup v2 id and uid, in about a microsecond, without privileges. It
//! sees sockets in the agent's own network namespace only.
//!
//! The message layouts are the kernel's `inet_diag_req_v2` and
//! `inet_diag_msg` (include/uapi/linux/inet_diag.h); building and parsing
//! are pure functions, tested on bytes the kernel sent.
//!
//! The kernel's exact lookup falls back to a *listening* socket on the
//! local port asked for when no connection has that 4-tuple (as a packet
//! to that port would reach the listener). A client in another network
//! namespace that connects from port 22 would then be taken for sshd: a
//! socket counts only if it is a connection with exactly the ends asked
//! for.

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
/// `INET_DIAG_CGROUP_ID`: sent for every socket since Linux 5.7.
const INET_DIAG_CGROUP_ID: u16 = 21;
const HEADER_LEN: usize = 16;
const REQUEST_LEN: usize = HEADER_LEN + 56;
/// `inet_diag_msg` before its attributes.
const MESSAGE_LEN: usize = 72;

/// What the kernel says about a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockInfo {
    /// The owner's uid.
    pub uid: u32,
    /// The socket's inode.
    pub inode: u32,
    /// The socket's cookie (what eBPF programs see as its id).
    pub cookie: u64,
    /// The cgroup v2 id of the cgroup the socket was created in.
    pub cgroup_id: Option<u64>,
    /// Its TCP state (`TCP_ESTABLISHED`, …).
    pub state: u8,
    /// Its local end.
    pub local: SocketAddr,
    /// Its remote end.
    pub remote: SocketAddr,
}

/// TCP states of a connection (include/net/tcp_states.h): established or
/// closing, never listening, half open or in TIME_WAIT.
const CONNECTED: [u8; 6] = [
    1,  // ESTABLISHED
    4,  // FIN_WAIT1
    5,  // FIN_WAIT2
    8,  // CLOSE_WAIT
    9,  // LAST_ACK
    11, // CLOSING
];

impl SockInfo {
    /// Whether this is the connection with ends `local` and `remote`.
    pub fn is_connection(&self, local: SocketAddr, remote: SocketAddr) -> bool {
        CONNECTED.contains(&self.state) && self.local == local && self.remote == remote
    }
}

/// The request for the TCP socket whose local end is `local` and remote end
/// `remote`.
pub(crate) fn request(local: SocketAddr, remote: SocketAddr, sequence: u32) -> [u8; REQUEST_LEN] {
    let mut req = [0u8; REQUEST_LEN];
    req[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req[8..12].copy_from_slice(&sequence.to_ne_bytes());
    let r = &mut req[HEADER_LEN..];
    r[0] = match local.ip() {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    };
    r[1] = libc::IPPROTO_TCP as u8;
    // Every state: an exact lookup matches at most one socket anyway.
    r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    r[8..10].copy_from_slice(&local.port().to_be_bytes());
    r[10..12].copy_from_slice(&remote.port().to_be_bytes());
    put_ip(&mut r[12..28], local.ip());
    put_ip(&mut r[28..44], remote.ip());
    // idiag_if = 0; cookie = INET_DIAG_NOCOOKIE.
    r[48..56].copy_from_slice(&[0xff; 8]);
    req
}

fn put_ip(slot: &mut [u8], ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => slot[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => slot.copy_from_slice(&v6.octets()),
    }
}

/// Parses the kernel's answer: `Ok(None)` when no such socket exists.
pub(crate) fn parse(reply: &[u8]) -> io::Result<Option<SockInfo>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag answer");
    let u16_at = |b: &[u8], at: usize| b.get(at..at + 2).map(|s| u16::from_ne_bytes([s[0], s[1]]));
    let u32_at = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
    };
    let length = u32_at(reply, 0).ok_or_else(bad)? as usize;
    let kind = u16_at(reply, 4).ok_or_else(bad)?;
    if length < HEADER_LEN || length > reply.len() {
        return Err(bad());
    }
    let body = &reply[HEADER_LEN..length];
    if kind == NLMSG_ERROR {
        let errno = u32_at(body, 0).ok_or_else(bad)? as i32;
        return match -errno {
            0 | libc::ENOENT => Ok(None),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    if kind != SOCK_DIAG_BY_FAMILY || body.len() < MESSAGE_LEN {
        return Err(bad());
    }
    let cookie_low = u32_at(body, 44).ok_or_else(bad)?;
    let cookie_high = u32_at(body, 48).ok_or_else(bad)?;
    // `inet_diag_sockid` at 4: ports (network order), then the addresses.
    let port = |at: usize| {
        body.get(at..at + 2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
    };
    let ip = |at: usize| -> Option<IpAddr> {
        match i32::from(body[0]) {
            libc::AF_INET => <[u8; 4]>::try_from(body.get(at..at + 4)?)
                .ok()
                .map(IpAddr::from),
            libc::AF_INET6 => <[u8; 16]>::try_from(body.get(at..at + 16)?)
                .ok()
                .map(IpAddr::from),
            _ => None,
        }
    };
    let end = |ip_at, port_at| Some(SocketAddr::new(ip(ip_at)?, port(port_at)?));
    let mut info = SockInfo {
        uid: u32_at(body, 64).ok_or_else(bad)?,
        inode: u32_at(body, 68).ok_or_else(bad)?,
        cookie: u64::from(cookie_high) << 32 | u64::from(cookie_low),
        cgroup_id: None,
        state: body[1],
        local: end(8, 4).ok_or_else(bad)?,
        remote: end(24, 6).ok_or_else(bad)?,
    };
    let mut offset = MESSAGE_LEN;
    while offset + 4 <= body.len() {
        let attr_len = usize::from(u16_at(body, offset).ok_or_else(bad)?);
        let attr_type = u16_at(body, offset + 2).ok_or_else(bad)?;
        if attr_len < 4 || offset + attr_len > body.len() {
            return Err(bad());
        }
        if attr_type == INET_DIAG_CGROUP_ID && attr_len >= 12 {
            let value = &body[offset + 4..offset + 12];
            info.cgroup_id = Some(u64::from_ne_bytes(value.try_into().map_err(|_| bad())?));
        }
        offset += (attr_len + 3) & !3;
    }
    Ok(Some(info))
}

/// A NETLINK_SOCK_DIAG socket, reused for every lookup.
#[derive(Debug)]
pub struct SockDiag {
    socket: Socket,
    sequence: u32,
    buf: Vec<u8>,
}

impl SockDiag {
    /// Opens the socket. Needs no privileges.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&NetlinkAddr::new(0, 0))?;
        Ok(Self {
            socket,
            sequence: 0,
            buf: vec![0; 8192],
        })
    }

    /// The TCP socket whose local end is `local` and remote end `remote`:
    /// for a server asking about its client, `local` is the peer address it
    /// accepted and `remote` the address the client connected to.
    pub fn lookup(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> io::Result<Option<SockInfo>> {
        if local.is_ipv4() != remote.is_ipv4() {
            return Ok(None);
        }
        self.sequence = self.sequence.wrapping_add(1);
        let req = request(local, remote, self.sequence);
        self.socket.send(&req, 0)?;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            // An answer to an earlier request that timed out is skipped.
            let sequence = self
                .buf
                .get(8..12)
                .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]));
            if sequence == Some(self.sequence) {
                let found = parse(&self.buf[..n])?;
                return Ok(found.filter(|s| s.is_connection(local, remote)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request as the spike's C-compatible code built it for
    /// 127.0.0.1:40000 → 127.0.0.1:8080 (layout of `inet_diag_req_v2`).
    #[test]
    fn request_layout() {
        let req = request(
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
            7,
        );
        assert_eq!(&req[0..4], &72u32.to_ne_bytes());
        assert_eq!(&req[4..6], &20u16.to_ne_bytes());
        assert_eq!(&req[8..12], &7u32.to_ne_bytes());
        let body = &req[16..];
        assert_eq!(&body[..4], &[2, 6, 0, 0]);
        assert_eq!(&body[8..12], &[0x9c, 0x40, 0x1f, 0x90]);
        assert_eq!(&body[12..16], &[127, 0, 0, 1]);
        assert_eq!(&body[28..32], &[127, 0, 0, 1]);
        assert_eq!(&body[48..56], &[0xff; 8]);
        let v6 = request(
            "[::1]:1".parse().unwrap(),
            "[fd00:ec2::254]:80".parse().unwrap(),
            1,
        );
        assert_eq!(v6[16], libc::AF_INET6 as u8);
        assert_eq!(
            &v6[16 + 28..16 + 44],
            &"fd00:ec2::254"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }

    /// What Linux 6.18 answered for an established loopback connection
    /// (127.0.0.1:34586 → 127.0.0.1:38037, uid 0, root cgroup).
    const CAPTURED: [u8; 124] = [
        124, 0, 0, 0, 20, 0, 0, 0, 2, 0, 0, 0, 88, 120, 0, 0, 2, 1, 0, 0, 135, 26, 148, 149, 127,
        0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 45,
        111, 246, 0, 5, 0, 8, 0, 0, 0, 0, 0, 8, 0, 15, 0, 0, 0, 0, 0, 12, 0, 21, 0, 1, 0, 0, 0, 0,
        0, 0, 0, 6, 0, 22, 0, 82, 0, 0, 0,
    ];

    #[test]
    fn parses_a_captured_reply() {
        let info = parse(&CAPTURED).unwrap().unwrap();
        let (local, remote) = (
            "127.0.0.1:34586".parse().unwrap(),
            "127.0.0.1:38037".parse().unwrap(),
        );
        assert_eq!(
            info,
            SockInfo {
                uid: 0,
                inode: 16_150_317,
                cookie: 15,
                cgroup_id: Some(1),
                state: 1,
                local,
                remote,
            }
        );
        assert!(info.is_connection(local, remote));
        assert!(!info.is_connection(remote, local));
        // The same socket listening: never a connection.
        let mut listening = CAPTURED;
        listening[17] = 10;
        let listener = parse(&listening).unwrap().unwrap();
        assert!(!listener.is_connection(local, remote));
        // Without the cgroup attribute (kernels before 5.7), still parsed.
        let mut old = CAPTURED[..104].to_vec();
        old[0..4].copy_from_slice(&104u32.to_ne_bytes());
        assert_eq!(parse(&old).unwrap().unwrap().cgroup_id, None);
    }

    #[test]
    fn looks_up_a_live_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(local).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        let mut diag = SockDiag::open().unwrap();
        let info = diag
            .lookup(peer, local)
            .unwrap()
            .expect("the client's socket");
        let own_uid = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap();
        assert_eq!(info.uid, own_uid);
        assert!(info.cgroup_id.is_some(), "cgroup v2 id (Linux >= 5.7)");
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(diag.lookup(gone, local).unwrap(), None);
    }

    /// The kernel answers a lookup with no such connection with a socket
    /// listening on the port asked for: not the client's.
    #[test]
    fn a_listener_on_the_port_is_not_the_client() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut diag = SockDiag::open().unwrap();
        let from: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let to: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(diag.lookup(from, to).unwrap(), None);
    }

    #[test]
    fn no_such_socket_is_none_and_other_errors_are_errors() {
        let mut enoent = vec![0u8; 36];
        enoent[0..4].copy_from_slice(&36u32.to_ne_bytes());
        enoent[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        enoent[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(parse(&enoent).unwrap(), None);
        enoent[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            parse(&enoent).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], &[1, 2, 3], &[255; 20], &[0; 100]] {
            assert!(parse(bytes).is_err(), "{bytes:?}");
        }
        let mut truncated = vec![0u8; 40];
        truncated[0..4].copy_from_slice(&40u32.to_ne_bytes());
        truncated[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        assert!(parse(&truncated).is_err());
    }
}
