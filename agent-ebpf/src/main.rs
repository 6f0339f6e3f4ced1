//! imds-agent's eBPF programs: the alternative to the address alias and
//! nftables. Attached to a cgroup v2 (by default the root), they send every
//! TCP connection to 169.254.169.254:80 (and [fd00:ec2::254]:80) made in it
//! to the agent, and record who made it.
//!
//! - `imds_connect4`, `imds_connect6` (`cgroup/connect4`, `connect6`):
//!   rewrite the destination to the agent's loopback listener, or, for a
//!   socket in another network namespace (a container on a bridge), to a
//!   host address it can reach; record the connecting process under the
//!   socket's cookie. The agent's own process is left alone.
//! - `imds_sockops` (`sockops`, at `TCP_CONNECT_CB`): for a connection
//!   sent to the bridge address (from another namespace), files the record
//!   under the client's address too, since the agent can't look up a socket
//!   in another namespace; the agent drops it once it has read it.
//! - `imds_getpeername4`, `imds_getpeername6`: a redirected socket's peer
//!   reads as 169.254.169.254:80, as the client connected to.

#![no_std]
#![no_main]

use agent_ebpf_common::{AddrKey, Config, HTTP_PORT_BE, IMDS_IP4, IMDS_IP6, Origin};
use aya_ebpf::EbpfContext as _;
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_uid_gid, bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_ns,
};
use aya_ebpf::macros::{cgroup_sock_addr, map, sock_ops};
use aya_ebpf::maps::{Array, LruHashMap};
use aya_ebpf::programs::{SockAddrContext, SockOpsContext};

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map]
static BY_COOKIE: LruHashMap<u64, Origin> = LruHashMap::with_max_entries(65_536, 0);

#[map]
static BY_ADDR: LruHashMap<AddrKey, Origin> = LruHashMap::with_max_entries(65_536, 0);

/// Let the call go on (the verdict of a cgroup/connect program).
const PROCEED: i32 = 1;
const IPPROTO_TCP: u32 = 6;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const BPF_SOCK_OPS_TCP_CONNECT_CB: u32 = 3;

/// The agent's settings, if it is ready and the caller is not the agent.
fn config_for_caller() -> Option<&'static Config> {
    let config = CONFIG.get(0)?;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    (config.enabled != 0 && tgid != config.agent_tgid).then_some(config)
}

/// For a connection the agent should get: its settings, the socket's
/// cookie and its network namespace's cookie.
fn connecting(ctx: &SockAddrContext) -> Option<(&'static Config, u64, u64)> {
    let config = config_for_caller()?;
    // SAFETY: the context is a socket-address context these helpers take.
    let (cookie, netns) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_netns_cookie(ctx.as_ptr()),
        )
    };
    Some((config, cookie, netns))
}

/// Who is connecting.
fn origin(family: u16, orig_ip4: u32, orig_ip6: [u32; 4]) -> Origin {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    Origin {
        // SAFETY: a helper with no arguments, allowed in these programs.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        orig_ip4,
        orig_ip6,
        orig_port: 80,
        family,
        comm: bpf_get_current_comm().unwrap_or_default(),
        // SAFETY: a helper with no arguments, allowed in these programs.
        connected_ns: unsafe { bpf_ktime_get_ns() },
    }
}

#[cgroup_sock_addr(connect4)]
pub fn imds_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel passes a valid `bpf_sock_addr` for the program's
    // lifetime.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.protocol != IPPROTO_TCP || sa.user_ip4 != IMDS_IP4 || sa.user_port != HTTP_PORT_BE {
        return PROCEED;
    }
    let Some((config, cookie, netns)) = connecting(&ctx) else {
        return PROCEED;
    };
    let to = if netns == config.agent_netns {
        config.local_ip4
    } else if config.bridge_ip4 != 0 {
        config.bridge_ip4
    } else {
        return PROCEED;
    };
    let _ = BY_COOKIE.insert(&cookie, &origin(AF_INET, IMDS_IP4, [0; 4]), 0);
    sa.user_ip4 = to;
    sa.user_port = u32::from(config.port.to_be());
    PROCEED
}

#[cgroup_sock_addr(connect6)]
pub fn imds_connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as in `imds_connect4`.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.protocol != IPPROTO_TCP || sa.user_ip6 != IMDS_IP6 || sa.user_port != HTTP_PORT_BE {
        return PROCEED;
    }
    let Some((config, cookie, netns)) = connecting(&ctx) else {
        return PROCEED;
    };
    // The agent listens on IPv4: an IPv6 socket reaches it through the
    // IPv4-mapped address. Other namespaces are not redirected over IPv6.
    if netns != config.agent_netns {
        return PROCEED;
    }
    let _ = BY_COOKIE.insert(&cookie, &origin(AF_INET6, 0, IMDS_IP6), 0);
    let mapped = [
        0,
        0,
        u32::from_ne_bytes([0, 0, 0xff, 0xff]),
        config.local_ip4,
    ];
    set_ip6(&mut sa.user_ip6, &mapped);
    sa.user_port = u32::from(config.port.to_be());
    PROCEED
}

#[sock_ops]
pub fn imds_sockops(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_TCP_CONNECT_CB || ctx.family() != u32::from(AF_INET) {
        return 1;
    }
    // Only connections sent to the bridge address: the agent finds the
    // others by their socket.
    match CONFIG.get(0) {
        Some(config) if config.bridge_ip4 != 0 && ctx.remote_ip4() == config.bridge_ip4 => {}
        _ => return 1,
    }
    // SAFETY: a sock_ops context, which this helper takes.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: a lookup in a map of plain values.
    if let Some(origin) = unsafe { BY_COOKIE.get(&cookie) } {
        let key = AddrKey {
            ip4: ctx.local_ip4(),
            port: ctx.local_port(),
        };
        let _ = BY_ADDR.insert(&key, origin, 0);
    }
    1
}

#[cgroup_sock_addr(getpeername4)]
pub fn imds_getpeername4(ctx: SockAddrContext) -> i32 {
    // SAFETY: as in `imds_connect4`.
    let sa = unsafe { &mut *ctx.sock_addr };
    // SAFETY: as in `imds_connect4`.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: a lookup in a map of plain values.
    if let Some(origin) = unsafe { BY_COOKIE.get(&cookie) }
        && origin.family == AF_INET
    {
        sa.user_ip4 = origin.orig_ip4;
        sa.user_port = HTTP_PORT_BE;
    }
    PROCEED
}

#[cgroup_sock_addr(getpeername6)]
pub fn imds_getpeername6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as in `imds_connect4`.
    let sa = unsafe { &mut *ctx.sock_addr };
    // SAFETY: as in `imds_connect4`.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: a lookup in a map of plain values.
    if let Some(origin) = unsafe { BY_COOKIE.get(&cookie) }
        && origin.family == AF_INET6
    {
        set_ip6(&mut sa.user_ip6, &origin.orig_ip6);
        sa.user_port = HTTP_PORT_BE;
    }
    PROCEED
}

/// Writes an IPv6 address into the context one 32-bit word at a time: the
/// verifier allows only plain word stores to `user_ip6`, not the byte copy
/// an array assignment compiles to.
fn set_ip6(to: &mut [u32; 4], from: &[u32; 4]) {
    for i in 0..4 {
        // SAFETY: `to[i]` is a valid, aligned u32 in the context.
        unsafe { core::ptr::write_volatile(&mut to[i], from[i]) };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
