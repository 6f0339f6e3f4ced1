//! The agent's nftables table: the firewall policy as data, the batch that
//! installs it, and the one function that sends batches.
//!
//! The table belongs to the agent alone and is replaced in one atomic batch
//! (add, delete, add: idempotent whether or not it existed), so other tables
//! are never touched and there is never a moment without the rules. The
//! rules stay when the agent dies (fail closed); `imds-agent cleanup`
//! removes them.
//!
//! ```text
//! table inet imds_agent {
//!   chain input {          # filter, input
//!     meta nfproto ipv4 ip daddr 169.254.169.254 iifname "lo" accept
//!     meta nfproto ipv4 ip daddr 169.254.169.254 iifname "docker0" accept
//!     meta nfproto ipv4 ip daddr 169.254.169.254 iifname "br-*" accept
//!     meta nfproto ipv4 ip daddr 169.254.169.254 counter drop
//!   }
//!   chain output {         # filter, alias mode
//!     ip daddr 169.254.169.254 oifname != "lo" counter drop
//!     ip6 daddr fd00:ec2::254 oifname != "lo" counter drop
//!   }
//!   chain forward {        # filter, both modes
//!     ip daddr 169.254.169.254 counter drop
//!     ip6 daddr fd00:ec2::254 counter drop
//!   }
//!   chain prerouting {     # nat, DNAT mode only
//!     iifname "docker0" ip daddr 169.254.169.254 tcp dport 80 dnat to 169.254.170.254:80
//!   }
//!   chain output {         # nat, DNAT mode only
//!     ip daddr 169.254.169.254 tcp dport 80 meta skuid != AGENT dnat to 169.254.170.254:80
//!   }
//!   chain output_v6 {      # filter, DNAT mode only
//!     ip6 daddr fd00:ec2::254 meta skuid != AGENT counter drop
//!   }
//! }
//! ```
//!
//! In alias mode the output chain is what makes a stopped agent fail
//! closed: while 169.254.169.254 is on `lo`, local processes reach it
//! there; once the address is gone (a clean stop, a failed start), their
//! packets would leave for whatever answers it upstream, and are dropped.
//!
//! EC2's IPv6 IMDS (`fd00:ec2::254`, when the instance has it enabled)
//! serves the instance role as the IPv4 one does: in DNAT mode workloads
//! never reach it (the agent does not serve IPv6 there; SDKs use IPv4
//! unless told otherwise).
//!
//! In DNAT mode the input chain guards the agent's own address
//! (169.254.170.254) instead of 169.254.169.254.

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr};

use nftnl::expr::{Immediate, InterfaceName, Nat, NatType, Register};
use nftnl::{
    Batch, Chain, ChainType, FinalizedBatch, Hook, MsgType, ProtoFamily, Rule, Table, nft_expr,
};

/// An nftables failure.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The netlink socket could not be opened or used.
    #[error("nftables socket: {0}")]
    Socket(&'static str, #[source] io::Error),
    /// The kernel refused the batch.
    #[error("the kernel refused to {0}")]
    Refused(&'static str, #[source] io::Error),
    /// A name the kernel can't take.
    #[error("{0:?} can't be an nftables name or interface name")]
    Name(String),
}

/// An interface pattern: an exact name, or a prefix (`br-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    /// Exactly this name.
    Exact(String),
    /// Any name starting with this.
    Prefix(String),
}

impl Interface {
    /// Parses `docker0` or `br-*`.
    pub fn parse(pattern: &str) -> Option<Self> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() < 16
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'*')
        };
        match pattern.strip_suffix('*') {
            Some(prefix) if valid(prefix) => Some(Self::Prefix(prefix.to_owned())),
            Some(_) => None,
            None if valid(pattern) => Some(Self::Exact(pattern.to_owned())),
            None => None,
        }
    }

    fn name(&self) -> Result<InterfaceName, NftError> {
        let c = |s: &str| CString::new(s).map_err(|_| NftError::Name(s.to_owned()));
        Ok(match self {
            Self::Exact(s) => InterfaceName::Exact(c(s)?),
            Self::Prefix(s) => InterfaceName::StartingWith(c(s)?),
        })
    }
}

/// Where DNAT mode sends IMDS traffic, and whose traffic it leaves alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnat {
    /// The agent's address and port.
    pub to: Ipv4Addr,
    /// The port.
    pub port: u16,
    /// The agent's own uid: its requests reach the real IMDS.
    pub exempt_uid: u32,
}

/// What the table enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The table's name.
    pub table: String,
    /// Addresses only `lo` and `interfaces` may reach.
    pub guarded: Vec<IpAddr>,
    /// Interfaces besides `lo` allowed to reach them (container bridges).
    pub interfaces: Vec<Interface>,
    /// DNAT mode.
    pub dnat: Option<Dnat>,
}

/// The IMDS address and port.
const IMDS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// EC2's IPv6 IMDS address.
const IMDS_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
const HTTP: u16 = 80;

/// An open nftables socket. Batches need CAP_NET_ADMIN, held by the
/// socket's opener and by the sender.
pub struct Nft {
    socket: mnl::Socket,
}

impl std::fmt::Debug for Nft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nft")
            .field("portid", &self.socket.portid())
            .finish()
    }
}

impl Nft {
    /// Opens the socket.
    pub fn open() -> Result<Self, NftError> {
        let socket =
            mnl::Socket::new(mnl::Bus::Netfilter).map_err(|e| NftError::Socket("open", e))?;
        Ok(Self { socket })
    }

    /// Installs `policy`, replacing the table atomically.
    pub fn apply(&self, policy: &Policy) -> Result<(), NftError> {
        let batch = apply_batch(policy)?;
        self.send(&batch, "install the agent's nftables table")
    }

    /// Whether a table called `name` exists (in any family).
    pub fn exists(&self, name: &str) -> Result<bool, NftError> {
        let sequence = 1;
        self.socket
            .send(&nftnl::table::get_tables_nlmsg(sequence))
            .map_err(|e| NftError::Socket("send", e))?;
        let portid = self.socket.portid();
        let mut tables = std::collections::HashSet::new();
        let mut buf = vec![0; nftnl::nft_nlmsg_maxsize() as usize];
        loop {
            let n = self
                .socket
                .recv_raw(&mut buf)
                .map_err(|e| NftError::Socket("receive", e))?;
            let result = mnl::cb_run2(
                &buf[..n],
                sequence,
                portid,
                nftnl::table::get_tables_cb,
                &mut tables,
            )
            .map_err(|e| NftError::Refused("list tables", e))?;
            if matches!(result, mnl::CbResult::Stop) {
                break;
            }
        }
        Ok(tables.contains(cstring(name)?.as_c_str()))
    }

    /// Removes table `name` if it exists, and nothing else.
    pub fn remove(&self, name: &str) -> Result<(), NftError> {
        let table = Table::new(cstring(name)?, ProtoFamily::Inet);
        let mut batch = Batch::new();
        // Adding first makes the delete succeed whether or not it existed.
        batch.add(&table, MsgType::Add);
        batch.add(&table, MsgType::Del);
        self.send(&batch.finalize(), "remove the agent's nftables table")
    }

    fn send(&self, batch: &FinalizedBatch, what: &'static str) -> Result<(), NftError> {
        let portid = self.socket.portid();
        self.socket
            .send_all(batch)
            .map_err(|e| NftError::Socket("send", e))?;
        let mut buf = vec![0; nftnl::nft_nlmsg_maxsize() as usize];
        let mut expected = batch.sequence_numbers();
        while !expected.is_empty() {
            for message in self
                .socket
                .recv(&mut buf[..])
                .map_err(|e| NftError::Socket("receive", e))?
            {
                let message = message.map_err(|e| NftError::Socket("receive", e))?;
                let Some(sequence) = expected.next() else {
                    break;
                };
                mnl::cb_run(message, sequence, portid).map_err(|e| NftError::Refused(what, e))?;
            }
        }
        Ok(())
    }
}

fn cstring(s: &str) -> Result<CString, NftError> {
    CString::new(s).map_err(|_| NftError::Name(s.to_owned()))
}

/// The batch that replaces the table with `policy`.
pub(crate) fn apply_batch(policy: &Policy) -> Result<FinalizedBatch, NftError> {
    let table = Table::new(cstring(&policy.table)?, ProtoFamily::Inet);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    batch.add(&table, MsgType::Del);
    batch.add(&table, MsgType::Add);
    let mut input = Chain::new(c"input", &table);
    input.set_hook(Hook::In, 0);
    input.set_policy(nftnl::Policy::Accept);
    batch.add(&input, MsgType::Add);
    let mut names = vec![InterfaceName::Exact(c"lo".to_owned())];
    for interface in &policy.interfaces {
        names.push(interface.name()?);
    }
    for address in &policy.guarded {
        for name in &names {
            let mut allow = Rule::new(&input);
            match_daddr(&mut allow, *address);
            allow.add_expr(&nft_expr!(meta iifname));
            allow.add_expr(&nft_expr!(cmp == name));
            allow.add_expr(&nft_expr!(verdict accept));
            batch.add(&allow, MsgType::Add);
        }
        let mut drop = Rule::new(&input);
        match_daddr(&mut drop, *address);
        drop.add_expr(&nft_expr!(counter));
        drop.add_expr(&nft_expr!(verdict drop));
        batch.add(&drop, MsgType::Add);
    }
    // Nothing reaches the real IMDS through this host: container traffic
    // is answered or redirected before routing, anything else forwarded
    // there is dropped.
    let mut forward = Chain::new(c"forward", &table);
    forward.set_hook(Hook::Forward, 0);
    forward.set_policy(nftnl::Policy::Accept);
    batch.add(&forward, MsgType::Add);
    for imds in [IpAddr::V4(IMDS), IpAddr::V6(IMDS_V6)] {
        let mut drop = Rule::new(&forward);
        match_daddr(&mut drop, imds);
        drop.add_expr(&nft_expr!(counter));
        drop.add_expr(&nft_expr!(verdict drop));
        batch.add(&drop, MsgType::Add);
    }
    if policy.dnat.is_none() {
        // Alias mode: the IMDS addresses only on `lo`.
        let mut output = Chain::new(c"output", &table);
        output.set_hook(Hook::Out, 0);
        output.set_policy(nftnl::Policy::Accept);
        batch.add(&output, MsgType::Add);
        for imds in [IpAddr::V4(IMDS), IpAddr::V6(IMDS_V6)] {
            let lo = InterfaceName::Exact(c"lo".to_owned());
            let mut drop = Rule::new(&output);
            match_daddr(&mut drop, imds);
            drop.add_expr(&nft_expr!(meta oifname));
            drop.add_expr(&nft_expr!(cmp != lo));
            drop.add_expr(&nft_expr!(counter));
            drop.add_expr(&nft_expr!(verdict drop));
            batch.add(&drop, MsgType::Add);
        }
    }
    if let Some(dnat) = &policy.dnat {
        let mut prerouting = Chain::new(c"prerouting", &table);
        prerouting.set_hook(Hook::PreRouting, -100);
        prerouting.set_type(ChainType::Nat);
        prerouting.set_policy(nftnl::Policy::Accept);
        batch.add(&prerouting, MsgType::Add);
        for name in &names[1..] {
            let mut rule = Rule::new(&prerouting);
            rule.add_expr(&nft_expr!(meta iifname));
            rule.add_expr(&nft_expr!(cmp == name));
            match_imds_http(&mut rule);
            add_dnat(&mut rule, dnat);
            batch.add(&rule, MsgType::Add);
        }
        let mut output = Chain::new(c"output", &table);
        output.set_hook(Hook::Out, -100);
        output.set_type(ChainType::Nat);
        output.set_policy(nftnl::Policy::Accept);
        batch.add(&output, MsgType::Add);
        let mut rule = Rule::new(&output);
        match_imds_http(&mut rule);
        rule.add_expr(&nft_expr!(meta skuid));
        rule.add_expr(&nft_expr!(cmp != dnat.exempt_uid));
        add_dnat(&mut rule, dnat);
        batch.add(&rule, MsgType::Add);
        // Local processes: no DNAT target for IPv6, so dropped (a filter
        // chain: nat chains are for translating).
        let mut output_v6 = Chain::new(c"output_v6", &table);
        output_v6.set_hook(Hook::Out, 0);
        output_v6.set_policy(nftnl::Policy::Accept);
        batch.add(&output_v6, MsgType::Add);
        let mut drop = Rule::new(&output_v6);
        match_daddr(&mut drop, IpAddr::V6(IMDS_V6));
        drop.add_expr(&nft_expr!(meta skuid));
        drop.add_expr(&nft_expr!(cmp != dnat.exempt_uid));
        drop.add_expr(&nft_expr!(counter));
        drop.add_expr(&nft_expr!(verdict drop));
        batch.add(&drop, MsgType::Add);
    }
    Ok(batch.finalize())
}

/// `meta nfproto ipvN ip[6] daddr ADDRESS`: the family check comes first
/// because an inet table sees both families at the same offsets.
fn match_daddr(rule: &mut Rule<'_>, address: IpAddr) {
    rule.add_expr(&nft_expr!(meta nfproto));
    match address {
        IpAddr::V4(v4) => {
            rule.add_expr(&nft_expr!(cmp == libc::NFPROTO_IPV4 as u8));
            rule.add_expr(&nft_expr!(payload ipv4 daddr));
            rule.add_expr(&nft_expr!(cmp == v4));
        }
        IpAddr::V6(v6) => {
            rule.add_expr(&nft_expr!(cmp == libc::NFPROTO_IPV6 as u8));
            rule.add_expr(&nft_expr!(payload ipv6 daddr));
            rule.add_expr(&nft_expr!(cmp == v6));
        }
    }
}

/// `ip daddr 169.254.169.254 tcp dport 80`.
fn match_imds_http(rule: &mut Rule<'_>) {
    match_daddr(rule, IpAddr::V4(IMDS));
    rule.add_expr(&nft_expr!(meta l4proto));
    rule.add_expr(&nft_expr!(cmp == libc::IPPROTO_TCP as u8));
    rule.add_expr(&nft_expr!(payload tcp dport));
    rule.add_expr(&nft_expr!(cmp == HTTP.to_be()));
}

fn add_dnat(rule: &mut Rule<'_>, dnat: &Dnat) {
    rule.add_expr(&Immediate::new(dnat.to, Register::Reg1));
    rule.add_expr(&Immediate::new(dnat.port.to_be(), Register::Reg2));
    rule.add_expr(&Nat {
        nat_type: NatType::DNat,
        family: ProtoFamily::Ipv4,
        ip_register: Register::Reg1,
        port_register: Some(Register::Reg2),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_patterns() {
        assert_eq!(
            Interface::parse("docker0"),
            Some(Interface::Exact("docker0".into()))
        );
        assert_eq!(
            Interface::parse("br-*"),
            Some(Interface::Prefix("br-".into()))
        );
        for bad in ["", "*", "a/b", "very-long-interface-name", "b*r", "sp ace"] {
            assert_eq!(Interface::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn batches_build_for_both_modes() {
        let mut policy = Policy {
            table: "imds_agent".into(),
            guarded: vec![
                "169.254.169.254".parse().unwrap(),
                "fd00:ec2::254".parse().unwrap(),
            ],
            interfaces: vec![
                Interface::Exact("docker0".into()),
                Interface::Prefix("br-".into()),
            ],
            dnat: None,
        };
        // What the kernel makes of them is checked by the end-to-end tests
        // (`nft list table` in a network namespace).
        assert!(apply_batch(&policy).is_ok());
        policy.dnat = Some(Dnat {
            to: Ipv4Addr::new(169, 254, 170, 254),
            port: 80,
            exempt_uid: 61000,
        });
        assert!(apply_batch(&policy).is_ok());
        policy.table = "bad\0name".into();
        assert!(matches!(apply_batch(&policy), Err(NftError::Name(_))));
    }
}
