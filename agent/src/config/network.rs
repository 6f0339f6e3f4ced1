//! `[host]`, `[attribution]`, `[privileges]` and the assignment part of
//! `[roles]`: how the agent takes over 169.254.169.254, tells workloads
//! apart, whom it becomes, and where the rules are.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use super::error::{ConfigError, Source};
use super::file::{self, FileConfig};
use crate::creds::Role;

/// How workloads reach the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMode {
    /// The agent only listens.
    Off,
    /// 169.254.169.254 on `lo`, guarded by the agent's nftables table.
    Alias,
    /// The agent's nftables table DNATs 169.254.169.254:80 to it.
    Dnat,
    /// eBPF programs redirect 169.254.169.254:80 to it.
    Ebpf,
}

impl HostMode {
    /// Parses the config spelling (`--host-mode`).
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Off, Self::Alias, Self::Dnat, Self::Ebpf]
            .into_iter()
            .find(|mode| mode.as_str() == text)
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HostMode::Off => "off",
            HostMode::Alias => "alias",
            HostMode::Dnat => "dnat",
            HostMode::Ebpf => "ebpf",
        }
    }
}

/// `[host]`, checked.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The mode.
    pub mode: HostMode,
    /// Interfaces besides `lo` allowed to reach the IMDS (`docker0`, `br-*`).
    pub interfaces: Vec<String>,
    /// Also the IPv6 endpoint (alias mode).
    pub ipv6: bool,
    /// The nftables table.
    pub table: String,
    /// DNAT mode: the agent's own address for redirected traffic.
    pub dnat_address: Ipv4Addr,
    /// eBPF mode's settings.
    pub ebpf: EbpfConfig,
}

/// eBPF mode's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EbpfConfig {
    /// The cgroup below the cgroup2 mount the programs attach to.
    pub cgroup: String,
    /// The agent's loopback port (and bridge port).
    pub port: u16,
    /// Where containers on bridges are sent.
    pub bridge: Option<Ipv4Addr>,
    /// Where the links are pinned; `None`: not pinned.
    pub pin_dir: Option<std::path::PathBuf>,
}

/// The IMDS addresses.
pub const IMDS_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// IMDS's IPv6 address (Nitro instances).
pub const IMDS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

impl HostConfig {
    /// The addresses the agent puts on `lo` (and removes at a clean stop).
    pub fn addresses(&self) -> Vec<IpAddr> {
        match self.mode {
            HostMode::Off | HostMode::Ebpf => Vec::new(),
            HostMode::Alias if self.ipv6 => vec![IpAddr::V4(IMDS_V4), IpAddr::V6(IMDS_V6)],
            HostMode::Alias => vec![IpAddr::V4(IMDS_V4)],
            HostMode::Dnat => vec![IpAddr::V4(self.dnat_address)],
        }
    }

    /// eBPF mode: the listener redirected connections from the agent's own
    /// network namespace go to (the first loopback IPv4 one).
    pub fn ebpf_target(&self, listen: &[SocketAddr]) -> Option<std::net::SocketAddrV4> {
        listen.iter().find_map(|addr| match addr {
            SocketAddr::V4(v4) if v4.ip().is_loopback() && v4.port() != 0 => Some(*v4),
            _ => None,
        })
    }

    /// Where the agent listens unless `server.listen` says otherwise.
    pub fn default_listen(&self) -> Vec<SocketAddr> {
        match self.mode {
            HostMode::Off => vec![SocketAddr::from((IMDS_V4, 80))],
            HostMode::Ebpf => {
                let mut listen = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, self.ebpf.port))];
                listen.extend(
                    self.ebpf
                        .bridge
                        .map(|ip| SocketAddr::from((ip, self.ebpf.port))),
                );
                listen
            }
            HostMode::Alias | HostMode::Dnat => self
                .addresses()
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 80))
                .collect(),
        }
    }
}

/// `[proxy]`, checked: present when the agent forwards.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The real IMDS.
    pub upstream: SocketAddr,
    /// What is forwarded.
    pub allow: crate::imds::upstream::Allowlist,
    /// How long a forwarded request may take.
    pub timeout: std::time::Duration,
}

/// `[attribution]`, checked.
#[derive(Debug, Clone)]
pub struct AttributionConfig {
    /// Identify local clients by cgroup.
    pub cgroups: bool,
    /// The cgroup2 mount, if set (else found at start).
    pub cgroup_root: Option<PathBuf>,
    /// The Docker watcher, if on.
    pub docker: Option<DockerConfig>,
}

/// The Docker watcher's settings.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Docker's socket.
    pub socket: PathBuf,
    /// The variable naming a container's role.
    pub env_role_var: String,
    /// Roles a container may name (patterns).
    pub allowed_env_roles: Vec<String>,
}

/// `[privileges]`, checked.
#[derive(Debug, Clone, Default)]
pub struct PrivilegesConfig {
    /// Drop to this user when started as root (alias mode: `nobody` unless
    /// set).
    pub user: Option<String>,
    /// And this group.
    pub group: Option<String>,
    /// Keeping these supplementary groups.
    pub supplementary_groups: Vec<String>,
}

/// `[roles]`, checked.
#[derive(Debug, Clone)]
pub struct RolesConfig {
    /// Workloads no rule matches.
    pub default: Option<Role>,
    /// Containers no rule matches and whose environment names none.
    pub container_default: Option<Role>,
    /// The rule files.
    pub dir: PathBuf,
    /// Name sessions after workloads.
    pub session_per_workload: bool,
}

/// The default rule directory.
pub const DEFAULT_ROLES_DIR: &str = "/etc/imds-agent/roles.d";

pub(super) fn host(file: &FileConfig, src: Source<'_>) -> Result<HostConfig, ConfigError> {
    let h = &file.host;
    let mode = match h.mode {
        file::HostMode::Off => HostMode::Off,
        file::HostMode::Alias => HostMode::Alias,
        file::HostMode::Dnat => HostMode::Dnat,
        file::HostMode::Ebpf => HostMode::Ebpf,
    };
    if mode == HostMode::Ebpf && !cfg!(feature = "ebpf") {
        return Err(src.invalid(
            "host.mode",
            "this imds-agent was built without eBPF support; run `cargo xtask build-ebpf`, then build with `--features ebpf`",
        ));
    }
    if matches!(mode, HostMode::Alias | HostMode::Dnat) && !cfg!(feature = "nftables") {
        return Err(src.invalid(
            "host.mode",
            "this imds-agent was built without nftables support; build it with `--features nftables` (needs libnftnl-dev and libmnl-dev)",
        ));
    }
    for (i, pattern) in h.interfaces.iter().enumerate() {
        let name = pattern.strip_suffix('*').unwrap_or(pattern);
        let ok = !name.is_empty()
            && name.len() < 16
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'*');
        if !ok {
            return Err(src.invalid(
                &format!("host.interfaces[{i}]"),
                format!(
                    "{pattern:?} is not an interface name, or a prefix followed by '*' (\"br-*\")"
                ),
            ));
        }
    }
    let table_ok = !h.table.is_empty()
        && h.table.len() <= 64
        && h.table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !table_ok {
        return Err(src.invalid("host.table", "must be 1 to 64 letters, digits or '_'"));
    }
    let dnat_address: Ipv4Addr = h.dnat_address.parse().map_err(|_| {
        src.invalid(
            "host.dnat_address",
            format!("{:?} is not an IPv4 address", h.dnat_address),
        )
    })?;
    if !dnat_address.is_link_local() || dnat_address == IMDS_V4 {
        return Err(src.invalid(
            "host.dnat_address",
            "must be a link-local address (169.254.x.x) other than 169.254.169.254",
        ));
    }
    if h.ipv6 && mode == HostMode::Dnat {
        return Err(src.invalid(
            "host.ipv6",
            "the IPv6 endpoint is served in alias mode only",
        ));
    }
    if mode == HostMode::Dnat
        && file
            .privileges
            .user
            .as_deref()
            .is_some_and(|u| ["root", "0", "nobody", "65534"].contains(&u))
    {
        return Err(src.invalid(
            "privileges.user",
            "DNAT mode needs a user of the agent's own (not root, not nobody): that user's requests are exempt from the redirect and reach the real IMDS",
        ));
    }
    let cgroup_ok =
        h.ebpf_cgroup.starts_with('/') && !h.ebpf_cgroup.split('/').any(|s| s == "." || s == "..");
    if !cgroup_ok {
        return Err(src.invalid(
            "host.ebpf_cgroup",
            format!(
                "{:?} must be a path below the cgroup2 mount, starting with '/'",
                h.ebpf_cgroup
            ),
        ));
    }
    if h.ebpf_port == 0 {
        return Err(src.invalid("host.ebpf_port", "must be from 1 to 65535"));
    }
    let bridge = match &h.ebpf_bridge_address {
        Some(text) => Some(text.parse::<Ipv4Addr>().ok().filter(|ip| !ip.is_unspecified() && !ip.is_loopback()).ok_or_else(|| {
            src.invalid(
                "host.ebpf_bridge_address",
                format!("{text:?} is not a host address containers can reach (an IPv4 address, not 0.0.0.0 or loopback)"),
            )
        })?),
        None => None,
    };
    let pin_dir = match h.ebpf_pin_dir.as_str() {
        "" => None,
        dir if dir.starts_with('/')
            && !dir.split('/').any(|s| s == "." || s == "..")
            && dir != "/" =>
        {
            Some(std::path::PathBuf::from(dir))
        }
        dir => {
            return Err(src.invalid(
                "host.ebpf_pin_dir",
                format!(
                    "{dir:?} must be an absolute path of a directory on a bpf file system (or \"\")"
                ),
            ));
        }
    };
    if mode == HostMode::Ebpf && h.ipv6 {
        return Err(src.invalid(
            "host.ipv6",
            "eBPF mode always redirects [fd00:ec2::254]:80 too; remove host.ipv6",
        ));
    }
    Ok(HostConfig {
        mode,
        interfaces: h.interfaces.clone(),
        ipv6: h.ipv6,
        table: h.table.clone(),
        dnat_address,
        ebpf: EbpfConfig {
            cgroup: h.ebpf_cgroup.clone(),
            port: h.ebpf_port,
            bridge,
            pin_dir,
        },
    })
}

pub(super) fn attribution(
    file: &FileConfig,
    host: &HostConfig,
    src: Source<'_>,
) -> Result<AttributionConfig, ConfigError> {
    let a = &file.attribution;
    let cgroups = a.cgroups.unwrap_or(host.mode != HostMode::Off || a.docker);
    if a.docker && !cgroups {
        // Without socket lookups, a local process could pose as a container
        // by its address.
        return Err(src.invalid(
            "attribution.cgroups",
            "docker = true needs cgroups = true: local processes are told apart from containers by their sockets",
        ));
    }
    if host.mode == HostMode::Ebpf && !cgroups {
        return Err(src.invalid(
            "attribution.cgroups",
            "eBPF mode attaches to the cgroup2 tree and attributes by cgroup: it needs cgroups = true",
        ));
    }
    let docker = a.docker.then(|| DockerConfig {
        socket: a
            .docker_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock")),
        env_role_var: a
            .env_role_var
            .clone()
            .unwrap_or_else(|| "IAM_ROLE".to_owned()),
        allowed_env_roles: a
            .allowed_env_roles
            .clone()
            .unwrap_or_else(|| vec!["*".to_owned()]),
    });
    if !a.docker {
        let set = [
            ("docker_socket", a.docker_socket.is_some()),
            ("env_role_var", a.env_role_var.is_some()),
            ("allowed_env_roles", a.allowed_env_roles.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(_, s)| *s) {
            return Err(src.invalid(
                &format!("attribution.{key}"),
                "is only read with docker = true",
            ));
        }
    }
    if let Some(var) = &a.env_role_var
        && (var.is_empty() || var.contains('='))
    {
        return Err(src.invalid("attribution.env_role_var", "must be a variable name"));
    }
    if let Some(root) = &a.cgroup_root
        && !root.is_absolute()
    {
        return Err(src.invalid("attribution.cgroup_root", "must be an absolute path"));
    }
    if !cgroups && a.cgroup_root.is_some() {
        return Err(src.invalid(
            "attribution.cgroup_root",
            "is only read with cgroups = true",
        ));
    }
    Ok(AttributionConfig {
        cgroups,
        cgroup_root: a.cgroup_root.clone(),
        docker,
    })
}

/// The user a root agent in a host mode becomes when none is configured: a
/// user of its own (`cargo xtask install` makes it from
/// `systemd/imds-agent.sysusers`). Not `nobody`, which other daemons share
/// and which could signal the agent or reach its socket.
pub const DEFAULT_USER: &str = "imds-agent";

pub(super) fn privileges(
    file: &FileConfig,
    host: &HostConfig,
    src: Source<'_>,
) -> Result<PrivilegesConfig, ConfigError> {
    let p = &file.privileges;
    let name_ok = |n: &str| !n.is_empty() && n.len() <= 32 && !n.contains([':', '/', ' ']);
    if let Some(user) = &p.user
        && !name_ok(user)
    {
        return Err(src.invalid(
            "privileges.user",
            format!("{user:?} is not a user name or uid"),
        ));
    }
    if let Some(group) = &p.group
        && !name_ok(group)
    {
        return Err(src.invalid(
            "privileges.group",
            format!("{group:?} is not a group name or gid"),
        ));
    }
    if p.user.is_none() && (p.group.is_some() || !p.supplementary_groups.is_empty()) {
        return Err(src.invalid(
            "privileges.user",
            "groups are only changed together with the user",
        ));
    }
    // A system service that takes over 169.254.169.254 never serves as
    // root, even when nobody said whom to become.
    let user = p.user.clone().or_else(|| {
        matches!(host.mode, HostMode::Alias | HostMode::Ebpf | HostMode::Dnat)
            .then(|| DEFAULT_USER.to_owned())
    });
    Ok(PrivilegesConfig {
        user,
        group: p.group.clone(),
        supplementary_groups: p.supplementary_groups.clone(),
    })
}

pub(super) fn roles(file: &FileConfig, src: Source<'_>) -> Result<RolesConfig, ConfigError> {
    let r = &file.roles;
    let parse = |key: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(Role::parse)
            .transpose()
            .map_err(|e| src.invalid(key, e.to_string()))
    };
    Ok(RolesConfig {
        default: parse("roles.default", &r.default)?,
        container_default: parse("roles.container_default", &r.container_default)?,
        dir: r
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROLES_DIR)),
        session_per_workload: r.session_per_workload.unwrap_or(true),
    })
}

pub(super) fn proxy(
    file: &FileConfig,
    host: &HostConfig,
    listen: &[SocketAddr],
    src: Source<'_>,
) -> Result<Option<ProxyConfig>, ConfigError> {
    use crate::imds::upstream::{Allowlist, DEFAULT_ALLOW};
    let p = &file.proxy;
    let enabled = p.enabled.unwrap_or(host.mode == HostMode::Dnat);
    if !enabled {
        let set = [
            ("upstream", p.upstream.is_some()),
            ("allow", p.allow.is_some()),
            ("timeout_ms", p.timeout_ms.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(_, set)| *set) {
            return Err(src.invalid(&format!("proxy.{key}"), "is only read when the proxy is enabled (host.mode = \"dnat\", or proxy.enabled = true)"));
        }
        return Ok(None);
    }
    let text = p.upstream.as_deref().unwrap_or("169.254.169.254:80");
    let upstream: SocketAddr = text.parse().map_err(|_| {
        src.invalid(
            "proxy.upstream",
            format!("{text:?} is not an address and port"),
        )
    })?;
    let loops = listen.contains(&upstream)
        || (host.mode == HostMode::Alias && upstream.ip() == IpAddr::V4(IMDS_V4));
    if loops {
        return Err(src.invalid(
            "proxy.upstream",
            "is the agent itself: on EC2, use host.mode = \"dnat\", which leaves the agent's own requests to 169.254.169.254 alone",
        ));
    }
    let allow = match &p.allow {
        Some(entries) => {
            Allowlist::new(entries).map_err(|e| src.invalid("proxy.allow", e.to_string()))?
        }
        None => {
            Allowlist::new(DEFAULT_ALLOW).map_err(|e| src.invalid("proxy.allow", e.to_string()))?
        }
    };
    let timeout_ms = p.timeout_ms.unwrap_or(2000);
    if !(100..=30_000).contains(&timeout_ms) {
        return Err(src.invalid("proxy.timeout_ms", "must be from 100 to 30000"));
    }
    Ok(Some(ProxyConfig {
        upstream,
        allow,
        timeout: std::time::Duration::from_millis(timeout_ms),
    }))
}

/// eBPF mode sends connections to one port: on a loopback address for
/// this network namespace, on the bridge address for others. Both must be
/// among the listen addresses.
pub(super) fn check_ebpf_listen(
    host: &HostConfig,
    listen: &[SocketAddr],
    src: Source<'_>,
) -> Result<(), ConfigError> {
    if host.mode != HostMode::Ebpf {
        return Ok(());
    }
    let Some(local) = host.ebpf_target(listen) else {
        return Err(src.invalid(
            "server.listen",
            "eBPF mode redirects to a loopback IPv4 listener (127.0.0.1:PORT): add one, or leave server.listen unset",
        ));
    };
    if let Some(bridge) = host.ebpf.bridge {
        let wanted = SocketAddr::from((bridge, local.port()));
        if !listen.contains(&wanted) {
            return Err(src.invalid(
                "server.listen",
                format!("host.ebpf_bridge_address is set: the agent must also listen on {wanted} (the loopback listener's port)"),
            ));
        }
    }
    Ok(())
}
