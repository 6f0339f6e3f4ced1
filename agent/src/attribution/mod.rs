//! Which workload is asking: turns a connection into a `Workload`, whose
//! identity IMDSv2 tokens are bound to and whose role the assignment rules
//! look up.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The two ends of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
}

/// A workload, as far as attribution could tell.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Known only by its address.
    Address(IpAddr),
}

impl Workload {
    /// The bytes an IMDSv2 token is bound to. Distinct workloads must give
    /// distinct bytes; the kind prefix keeps kinds from colliding.
    pub fn token_binding(&self) -> Vec<u8> {
        match self {
            Workload::Address(ip) => format!("ip:{ip}").into_bytes(),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Address(ip) => write!(f, "address {ip}"),
        }
    }
}

/// Tells which workload is behind a connection. Called once per connection,
/// on its first request, so it may cost a kernel lookup but must not block.
pub trait Attribution: Send + Sync + fmt::Debug {
    /// The workload behind `conn`.
    fn identify(&self, conn: &ConnInfo) -> Workload;
}

/// Identifies workloads by the peer address alone: right when each workload
/// has its own address, and the fallback when nothing better is known.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByPeerAddress;

impl Attribution for ByPeerAddress {
    fn identify(&self, conn: &ConnInfo) -> Workload {
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; use
        // the IPv4 form so both listeners agree on who a client is.
        Workload::Address(conn.peer.ip().to_canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_is_the_same_workload() {
        let local: SocketAddr = "[::]:80".parse().unwrap();
        let mapped = ConnInfo {
            peer: "[::ffff:10.0.0.1]:5000".parse().unwrap(),
            local,
        };
        let plain = ConnInfo {
            peer: "10.0.0.1:6000".parse().unwrap(),
            local,
        };
        assert_eq!(
            ByPeerAddress.identify(&mapped),
            ByPeerAddress.identify(&plain)
        );
        assert_eq!(
            ByPeerAddress.identify(&plain).token_binding(),
            b"ip:10.0.0.1"
        );
    }

    #[test]
    fn distinct_addresses_have_distinct_bindings() {
        let a = Workload::Address("10.0.0.1".parse().unwrap());
        let b = Workload::Address("10.0.0.12".parse().unwrap());
        assert_ne!(a.token_binding(), b.token_binding());
    }
}
