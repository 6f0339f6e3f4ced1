//! Addresses on interfaces, over rtnetlink: what `ip addr add/del` does.
//!
//! A synchronous client over one NETLINK_ROUTE socket. Changes need
//! CAP_NET_ADMIN both when the socket is opened and when a request is sent
//! (the kernel checks the opener and the sender), so the agent makes them
//! in its privileged phase; the address is removed at a clean stop by the
//! stop helper (`net::stop_helper`), which kept CAP_NET_ADMIN for that.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// An rtnetlink failure, naming the operation.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    /// The socket could not be opened or used.
    #[error("rtnetlink socket: {op}")]
    Socket {
        /// What was being done.
        op: &'static str,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the request.
    #[error("the kernel refused to {op}")]
    Refused {
        /// What was asked.
        op: String,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// The interface does not exist.
    #[error("no interface named {0:?}")]
    NoInterface(String),
    /// The kernel answered something unexpected.
    #[error("unexpected rtnetlink answer while trying to {0}")]
    Unexpected(String),
}

/// An address to put on, or take off, an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The interface index.
    pub index: u32,
    /// The address.
    pub ip: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The IPv4 label (`lo:metadata`); IPv6 addresses have none.
    pub label: Option<String>,
}

impl Address {
    /// The rtnetlink message for this address.
    pub(crate) fn message(&self) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = match self.ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.prefix_len = self.prefix_len;
        msg.header.scope = AddressScope::Universe;
        msg.header.index = self.index;
        if self.ip.is_ipv6() {
            // `nodad`: without it the address stays "tentative" for a moment
            // and can't be bound; duplicate detection means nothing on `lo`.
            msg.header.flags = AddressHeaderFlags::Nodad;
        }
        if self.ip.is_ipv4() {
            // IPv4 keeps the local address apart from the peer address;
            // `ip addr add` sets both, in this order.
            msg.attributes.push(AddressAttribute::Local(self.ip));
            if let Some(label) = &self.label {
                msg.attributes.push(AddressAttribute::Label(label.clone()));
            }
        }
        msg.attributes.push(AddressAttribute::Address(self.ip));
        msg
    }
}

/// An open rtnetlink socket.
#[derive(Debug)]
pub struct Rtnl {
    socket: Socket,
    sequence: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    /// Opens the socket. Changes made through it need CAP_NET_ADMIN, held
    /// by the opener and by the sender.
    pub fn open() -> Result<Self, RtnlError> {
        let socket_err = |op| move |source| RtnlError::Socket { op, source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(socket_err("open"))?;
        socket.bind_auto().map_err(socket_err("bind"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(socket_err("connect"))?;
        Ok(Self {
            socket,
            sequence: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// The socket's descriptor (the stop helper keeps it open).
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd as _;
        self.socket.as_raw_fd()
    }

    /// The index of interface `name`.
    pub fn link_index(name: &str) -> Result<u32, RtnlError> {
        nix::net::if_::if_nametoindex(name).map_err(|_| RtnlError::NoInterface(name.to_owned()))
    }

    /// Adds `address`, or replaces it if it is there: the second start of
    /// the agent finds its own address and is fine (`ip addr replace`).
    pub fn add(&mut self, address: &Address) -> Result<(), RtnlError> {
        let op = format!("add {}/{}", address.ip, address.prefix_len);
        self.request(
            RouteNetlinkMessage::NewAddress(address.message()),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            &op,
        )
    }

    /// Removes `address`; an address that is already gone is fine.
    pub fn delete(&mut self, address: &Address) -> Result<(), RtnlError> {
        let op = format!("delete {}/{}", address.ip, address.prefix_len);
        match self.request(
            RouteNetlinkMessage::DelAddress(address.message()),
            NLM_F_REQUEST | NLM_F_ACK,
            &op,
        ) {
            Err(RtnlError::Refused { source, .. })
                if source.raw_os_error() == Some(libc::EADDRNOTAVAIL) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// The addresses on interface `index`, with their labels.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<Address>, RtnlError> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        let sequence = self.send(
            RouteNetlinkMessage::GetAddress(msg),
            NLM_F_REQUEST | NLM_F_DUMP,
            "list addresses",
        )?;
        let mut found = Vec::new();
        loop {
            for message in self.receive("list addresses")? {
                if message.header.sequence_number != sequence {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a))
                        if a.header.index == index =>
                    {
                        found.extend(address_of(&a));
                    }
                    NetlinkPayload::Done(_) => return Ok(found),
                    NetlinkPayload::Error(e) => {
                        return Err(RtnlError::Refused {
                            op: "list addresses".to_owned(),
                            source: e.to_io(),
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends one request and waits for its acknowledgement.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<(), RtnlError> {
        let sequence = self.send(message, flags, op)?;
        loop {
            for message in self.receive(op)? {
                if message.header.sequence_number != sequence {
                    continue;
                }
                if let NetlinkPayload::Error(e) = message.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(RtnlError::Refused {
                            op: op.to_owned(),
                            source: e.to_io(),
                        }),
                    };
                }
            }
        }
    }

    fn send(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<u32, RtnlError> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket
            .send(&bytes, 0)
            .map_err(|source| RtnlError::Socket { op: "send", source })?;
        let _ = op;
        Ok(self.sequence)
    }

    fn receive(&mut self, op: &str) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, RtnlError> {
        let n = self
            .socket
            .recv(&mut &mut self.buf[..], 0)
            .map_err(|source| RtnlError::Socket {
                op: "receive",
                source,
            })?;
        let mut messages = Vec::new();
        let mut offset = 0;
        while offset < n {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..n])
                .map_err(|_| RtnlError::Unexpected(op.to_owned()))?;
            let length = message.header.length as usize;
            if length == 0 {
                break;
            }
            offset += (length + 3) & !3;
            messages.push(message);
        }
        Ok(messages)
    }
}

/// The address a kernel message describes.
fn address_of(message: &AddressMessage) -> Option<Address> {
    let mut ip = None;
    let mut label = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(a) => ip = Some(*a),
            AddressAttribute::Address(a) if ip.is_none() => ip = Some(*a),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            _ => {}
        }
    }
    Some(Address {
        index: message.header.index,
        ip: ip?,
        prefix_len: message.header.prefix_len,
        label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkDeserializable as _;

    fn metadata() -> Address {
        Address {
            index: 1,
            ip: "169.254.169.254".parse().unwrap(),
            prefix_len: 32,
            label: Some("lo:metadata".to_owned()),
        }
    }

    /// The body of the message `ip addr add 169.254.169.254/32 dev lo label
    /// lo:metadata` sends (iproute2 6.1, captured with `strace -v -e
    /// sendmsg`), byte for byte. Only the header flags differ: `ip addr
    /// add` asks for CREATE|EXCL, the agent for CREATE|REPLACE (`ip addr
    /// replace`).
    #[test]
    fn add_message_matches_iproute2() {
        const CAPTURED: &[u8] = b"\x02\x20\x00\x00\x01\x00\x00\x00\x08\x00\x02\x00\xa9\xfe\xa9\xfe\x10\x00\x03\x00\x6c\x6f\x3a\x6d\x65\x74\x61\x64\x61\x74\x61\x00\x08\x00\x01\x00\xa9\xfe\xa9\xfe";
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let mut packet = NetlinkMessage::new(
            header,
            NetlinkPayload::from(RouteNetlinkMessage::NewAddress(metadata().message())),
        );
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        assert_eq!(&bytes[16..], CAPTURED);
        assert_eq!(u16::from_ne_bytes([bytes[6], bytes[7]]), 0x505);
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(back)) = parsed.payload
        else {
            panic!("not an address message");
        };
        assert_eq!(address_of(&back), Some(metadata()));
        let _ = RouteNetlinkMessage::deserialize;
    }

    #[test]
    fn ipv6_addresses_carry_no_label() {
        let v6 = Address {
            ip: "fd00:ec2::254".parse().unwrap(),
            prefix_len: 128,
            ..metadata()
        };
        let msg = v6.message();
        assert_eq!(msg.header.family, AddressFamily::Inet6);
        assert_eq!(msg.attributes, vec![AddressAttribute::Address(v6.ip)]);
    }
}
