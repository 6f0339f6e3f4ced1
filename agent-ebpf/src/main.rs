//! imds-agent's eBPF programs: the alternative to the address alias and
//! nftables. Attached to a cgroup v2 (by default the root), they send every
//! TCP connection to 169.254.169.254:80 (and [fd00:ec2::254]:80) made in it
//! to the agent, and record who made it.
//!
//! - `imds_connect4`, `imds_connect6` (`cgroup/connect4`, `connect6`):
//!   rewrite the destination to the agent's loopback listener, or, for a
//!   socket in another network namespace (a container on a bridge), to a
//!   host address it can reach; record the connecting process (and the
//!   identity of its executable) under the socket's cookie. An IPv6 socket
//!   connecting to the IPv4-mapped `::ffff:169.254.169.254` runs only
//!   `connect6`: it is redirected the same way. A connection that can't be
//!   redirected (another namespace, no bridge address; or IPv6 from one)
//!   is refused, never let through to whatever answers there. The agent's
//!   own process is left alone.
//! - `imds_sockops` (`sockops`, at `TCP_CONNECT_CB`): for a connection
//!   sent to the bridge address (from another namespace), files the record
//!   under the client's address too, since the agent can't look up a socket
//!   in another namespace; the agent drops it once it has read it.
//! - `imds_getpeername4`, `imds_getpeername6`: a redirected socket's peer
//!   reads as 169.254.169.254:80, as the client connected to.

#![no_std]
#![no_main]

use agent_ebpf_common::{
    AddrKey, Config, ExeOffsets, HTTP_PORT_BE, IMDS_IP4, IMDS_IP6, Origin, V4_MAPPED,
};
use aya_ebpf::EbpfContext as _;
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_task, bpf_get_current_uid_gid, bpf_get_netns_cookie, bpf_get_socket_cookie,
    bpf_ktime_get_ns, bpf_probe_read_kernel,
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
/// Refuse it: `connect()` fails with EPERM.
const REFUSE: i32 = 0;
const IPPROTO_TCP: u32 = 6;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const BPF_SOCK_OPS_TCP_CONNECT_CB: u32 = 3;

/// The agent's settings, if it is ready and the caller is not the agent
/// (its pid and its user: a pid reused after the agent died is someone
/// else's).
fn config_for_caller() -> Option<&'static Config> {
    let config = CONFIG.get(0)?;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let uid = bpf_get_current_uid_gid() as u32;
    let agent = tgid == config.agent_tgid && uid == config.agent_uid;
    (config.enabled != 0 && !agent).then_some(config)
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

/// Reads a kernel value at `base + offset`; 0 when it can't be read.
fn read_u64(base: u64, offset: u32) -> u64 {
    if base == 0 {
        return 0;
    }
    let at = base.wrapping_add(u64::from(offset)) as *const u64;
    // SAFETY: the helper copies from any kernel address, failing safely.
    unsafe { bpf_probe_read_kernel(at) }.unwrap_or(0)
}

/// The executable the current task runs: (inode number, device). The
/// agent compares it with what /proc shows when a rule asks, so an `exe`
/// rule is about the process that connected.
fn exe_identity(offsets: &ExeOffsets) -> (u64, u32) {
    if offsets.task_mm == 0 {
        return (0, 0);
    }
    // SAFETY: a helper with no arguments, allowed with CAP_PERFMON.
    let task = unsafe { bpf_get_current_task() };
    let mm = read_u64(task, offsets.task_mm);
    let file = read_u64(mm, offsets.mm_exe_file);
    let inode = read_u64(file, offsets.file_inode);
    let ino = read_u64(inode, offsets.inode_ino);
    let sb = read_u64(inode, offsets.inode_sb);
    // `dev_t` is 32 bits: the low half of the word read.
    let dev = read_u64(sb, offsets.sb_dev) as u32;
    if ino == 0 || sb == 0 {
        return (0, 0);
    }
    (ino, dev)
}

/// Who is connecting.
fn origin(config: &Config, family: u16, orig_ip4: u32, orig_ip6: [u32; 4]) -> Origin {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let (exe_ino, exe_dev) = exe_identity(&config.exe_offsets);
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
        exe_ino,
        exe_dev,
        _pad: 0,
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
    let Some(to) = target_ip4(config, netns) else {
        return REFUSE;
    };
    let _ = BY_COOKIE.insert(&cookie, &origin(config, AF_INET, IMDS_IP4, [0; 4]), 0);
    sa.user_ip4 = to;
    sa.user_port = u32::from(config.port.to_be());
    PROCEED
}

/// Where a connection from network namespace `netns` goes: the agent's
/// loopback listener from its own namespace, the bridge address from
/// another; `None` (refuse it) when there is no bridge address.
fn target_ip4(config: &Config, netns: u64) -> Option<u32> {
    if netns == config.agent_netns {
        Some(config.local_ip4)
    } else if config.bridge_ip4 != 0 {
        Some(config.bridge_ip4)
    } else {
        None
    }
}

#[cgroup_sock_addr(connect6)]
pub fn imds_connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as in `imds_connect4`.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.protocol != IPPROTO_TCP || sa.user_port != HTTP_PORT_BE {
        return PROCEED;
    }
    let to = sa.user_ip6;
    // `::ffff:169.254.169.254` from an IPv6 socket is an IPv4 connection:
    // only this program sees it, so it must be redirected here.
    let mapped = to == [0, 0, V4_MAPPED, IMDS_IP4];
    if !mapped && to != IMDS_IP6 {
        return PROCEED;
    }
    let Some((config, cookie, netns)) = connecting(&ctx) else {
        return PROCEED;
    };
    // The agent listens on IPv4: an IPv6 socket reaches it through the
    // IPv4-mapped address. Another namespace's real IPv6 connection can't
    // be (the bridge address is IPv4): refused.
    let target = if mapped || netns == config.agent_netns {
        target_ip4(config, netns)
    } else {
        None
    };
    let Some(target) = target else {
        return REFUSE;
    };
    let _ = BY_COOKIE.insert(&cookie, &origin(config, AF_INET6, 0, to), 0);
    set_ip6(&mut sa.user_ip6, &[0, 0, V4_MAPPED, target]);
    sa.user_port = u32::from(config.port.to_be());
    PROCEED
}

#[sock_ops]
pub fn imds_sockops(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_TCP_CONNECT_CB {
        return 1;
    }
    let Some(config) = CONFIG.get(0) else {
        return 1;
    };
    if config.bridge_ip4 == 0 {
        return 1;
    }
    // Only connections sent to the bridge address: the agent finds the
    // others by their socket. An IPv6 socket sent there by `connect6` has
    // IPv4-mapped addresses; on the wire it is IPv4. The two families'
    // fields are read on separate paths, in different orders: the
    // verifier refuses a load through a context pointer the compiler
    // computed, which is what merging the two paths' loads makes.
    let ops = ctx.ops;
    let family = ctx.family();
    if family == u32::from(AF_INET) {
        // SAFETY: the kernel passes a valid `bpf_sock_ops`.
        let remote = unsafe { core::ptr::read_volatile(&(*ops).remote_ip4) };
        if remote == config.bridge_ip4 {
            // SAFETY: as above.
            let local = unsafe { core::ptr::read_volatile(&(*ops).local_ip4) };
            file_by_address(&ctx, local);
        }
    } else if family == u32::from(AF_INET6) {
        // SAFETY: as above.
        let local = unsafe { core::ptr::read_volatile(&(*ops).local_ip6[3]) };
        // SAFETY: as above.
        let mapped = unsafe {
            core::ptr::read_volatile(&(*ops).remote_ip6[0]) == 0
                && core::ptr::read_volatile(&(*ops).remote_ip6[1]) == 0
                && core::ptr::read_volatile(&(*ops).remote_ip6[2]) == V4_MAPPED
                && core::ptr::read_volatile(&(*ops).remote_ip6[3]) == config.bridge_ip4
        };
        if mapped {
            file_by_address(&ctx, local);
        }
    }
    1
}

/// Files the record of the connecting socket under its own address
/// (`local`, IPv4) and port, for the agent to find.
#[inline(never)]
fn file_by_address(ctx: &SockOpsContext, local: u32) {
    // SAFETY: a sock_ops context, which this helper takes.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: a lookup in a map of plain values.
    if let Some(origin) = unsafe { BY_COOKIE.get(&cookie) } {
        let key = AddrKey {
            ip4: local,
            port: ctx.local_port(),
        };
        let _ = BY_ADDR.insert(&key, origin, 0);
    }
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
