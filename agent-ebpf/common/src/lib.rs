//! The map types shared by imds-agent's eBPF programs (`agent-ebpf`) and
//! the agent: plain `#[repr(C)]` structs, laid out the same on both sides.
//! Addresses and ports are in network byte order, as the kernel hands them
//! to `cgroup/connect4`, unless a field says otherwise.

#![no_std]

/// What the programs need to know, set by the agent at start (`CONFIG`,
/// index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The agent's process id: its own connections are never redirected,
    /// so on EC2 it still reaches the real IMDS. With `agent_uid`: once the
    /// agent is gone (the programs outlive it, pinned), a process that gets
    /// its pid is exempt only if it is also the agent's user.
    pub agent_tgid: u32,
    /// Where connections from the agent's network namespace go: its
    /// loopback listener.
    pub local_ip4: u32,
    /// Where connections from other network namespaces (containers on a
    /// bridge) go: an address of the host they can reach; 0: they are not
    /// redirected.
    pub bridge_ip4: u32,
    /// The port of both, in host order.
    pub port: u16,
    /// Non-zero once the agent is ready to serve.
    pub enabled: u16,
    /// The agent's network namespace (`SO_NETNS_COOKIE`).
    pub agent_netns: u64,
    /// The agent's uid (after it drops privileges).
    pub agent_uid: u32,
    /// Where the connecting process's executable is found, as byte offsets
    /// the agent reads from the kernel's BTF at load (this kernel's layout):
    /// `task_struct.mm`, `mm_struct.exe_file`, `file.f_inode`,
    /// `inode.i_ino`, `inode.i_sb`, `super_block.s_dev`. All 0: unknown,
    /// and nothing is read.
    pub exe_offsets: ExeOffsets,
    /// Keeps the size a multiple of 8.
    pub _pad: u32,
}

/// Byte offsets into kernel structures (see `Config::exe_offsets`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExeOffsets {
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `mm_struct.exe_file`.
    pub mm_exe_file: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `super_block.s_dev`.
    pub sb_dev: u32,
}

/// Who made a redirected connection, recorded at `connect()` (keyed by the
/// socket's cookie) and, for connections from another network namespace,
/// by the client's address once it has one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The cgroup v2 id of the connecting process.
    pub cgroup_id: u64,
    /// Its process id.
    pub tgid: u32,
    /// Its thread id.
    pub pid: u32,
    /// Its uid.
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
    /// The address it connected to (IPv4; 0 for IPv6).
    pub orig_ip4: u32,
    /// The address it connected to, for IPv6.
    pub orig_ip6: [u32; 4],
    /// The port it connected to.
    pub orig_port: u16,
    /// 4 or 6.
    pub family: u16,
    /// Its command name (`comm`), NUL-padded.
    pub comm: [u8; 16],
    /// When it connected (`CLOCK_MONOTONIC`, ns): a record found by
    /// address is only believed while fresh, since an address and port
    /// can later be someone else's.
    pub connected_ns: u64,
    /// The inode number of the executable it ran at `connect()` (0:
    /// unknown): an `exe` rule is about the process that connected, not
    /// whatever its pid runs by the time the request comes.
    pub exe_ino: u64,
    /// That executable's device (the kernel's `dev_t`: major << 20 |
    /// minor).
    pub exe_dev: u32,
    /// Keeps the size a multiple of 8.
    pub _pad: u32,
}

/// The key of a connection from another network namespace: the client's
/// own address (IPv4, network order) and port (host order, as `sock_ops`
/// gives it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddrKey {
    /// The client's address.
    pub ip4: u32,
    /// The client's port, host order.
    pub port: u32,
}

/// 169.254.169.254, as `user_ip4` holds it.
pub const IMDS_IP4: u32 = u32::from_ne_bytes([169, 254, 169, 254]);

/// `::ffff:0:0/96`'s third word, as `user_ip6` holds it: an IPv4-mapped
/// address is `[0, 0, V4_MAPPED, ip4]`.
pub const V4_MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// fd00:ec2::254, as `user_ip6` holds it.
pub const IMDS_IP6: [u32; 4] = [
    u32::from_ne_bytes([0xfd, 0x00, 0x0e, 0xc2]),
    0,
    0,
    u32::from_ne_bytes([0, 0, 0x02, 0x54]),
];

/// Port 80 in network order, as `user_port` holds it (in its low 16 bits).
pub const HTTP_PORT_BE: u32 = 80u16.to_be() as u32;

// SAFETY: plain old data: `#[repr(C)]`, no padding the compiler adds (the
// fields are laid out to fill every byte), every bit pattern valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Origin {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for AddrKey {}

// The layouts both sides rely on: no padding the compiler would add.
const _: () = assert!(core::mem::size_of::<Config>() == 56);
const _: () = assert!(core::mem::size_of::<ExeOffsets>() == 24);
const _: () = assert!(core::mem::size_of::<Origin>() == 88);
