//! Taking over 169.254.169.254 on the host, from `[host]`.
//!
//! Order matters: the agent's nftables table goes in first, then the
//! address, so the address is never reachable unguarded. At a clean stop
//! the address goes (the stop helper removes it when the agent itself no
//! longer may); the table stays, so a stopped or dead agent fails closed.
//! `imds-agent cleanup` removes both, and nothing that is not the agent's.

pub mod stop_helper;

use std::net::IpAddr;

use anyhow::Context as _;

use crate::config::{HostConfig, HostMode, IMDS_V4};
use crate::sys::rtnl::{Address, Rtnl};

/// The label of the agent's IPv4 addresses on `lo`: what `cleanup` knows
/// them by.
pub const LABEL: &str = "lo:metadata";

/// What `setup` changed and a clean stop undoes.
#[derive(Debug)]
pub struct Installed {
    rtnl: Rtnl,
    addresses: Vec<Address>,
}

impl Installed {
    /// Removes the addresses.
    pub fn remove_addresses(mut self) -> anyhow::Result<()> {
        for address in &self.addresses {
            self.rtnl
                .delete(address)
                .with_context(|| format!("removing {} from lo", address.ip))?;
        }
        Ok(())
    }

    /// The socket, for the stop helper to keep.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.rtnl.as_raw_fd()
    }
}

/// The addresses `host` puts on `lo`.
fn addresses(host: &HostConfig) -> anyhow::Result<Vec<Address>> {
    if host.addresses().is_empty() {
        return Ok(Vec::new());
    }
    let lo = Rtnl::link_index("lo")?;
    Ok(host
        .addresses()
        .into_iter()
        .map(|ip| Address {
            index: lo,
            ip,
            prefix_len: if ip.is_ipv4() { 32 } else { 128 },
            label: ip.is_ipv4().then(|| LABEL.to_owned()),
        })
        .collect())
}

/// The firewall for `host`; `agent_uid` is the uid the agent serves as
/// (DNAT mode leaves its traffic alone, so it reaches the real IMDS).
#[cfg(feature = "nftables")]
pub fn policy(host: &HostConfig, agent_uid: u32) -> crate::sys::nft::Policy {
    use crate::sys::nft::{Dnat, Interface, Policy};
    Policy {
        table: host.table.clone(),
        guarded: host.addresses(),
        interfaces: host
            .interfaces
            .iter()
            .filter_map(|i| Interface::parse(i))
            .collect(),
        dnat: (host.mode == HostMode::Dnat).then_some(Dnat {
            to: host.dnat_address,
            port: 80,
            exempt_uid: agent_uid,
        }),
    }
}

/// Installs the firewall and the addresses. Needs CAP_NET_ADMIN.
pub fn setup(host: &HostConfig, agent_uid: u32) -> anyhow::Result<Option<Installed>> {
    // eBPF mode needs neither: `app` attaches the programs.
    if matches!(host.mode, HostMode::Off | HostMode::Ebpf) {
        return Ok(None);
    }
    install_table(host, agent_uid)?;
    let mut rtnl = Rtnl::open().context("opening rtnetlink")?;
    let addresses = addresses(host)?;
    for address in &addresses {
        rtnl.add(address)
            .with_context(|| format!("adding {}/{} to lo", address.ip, address.prefix_len))?;
        tracing::info!(address = %address.ip, interface = "lo", "address added");
    }
    Ok(Some(Installed { rtnl, addresses }))
}

#[cfg(feature = "nftables")]
fn install_table(host: &HostConfig, agent_uid: u32) -> anyhow::Result<()> {
    let policy = policy(host, agent_uid);
    let nft = crate::sys::nft::Nft::open().context("opening nftables")?;
    nft.apply(&policy)
        .with_context(|| format!("installing nftables table inet {}", policy.table))?;
    tracing::info!(
        table = %policy.table,
        mode = host.mode.as_str(),
        interfaces = ?host.interfaces,
        "nftables table installed"
    );
    Ok(())
}

#[cfg(not(feature = "nftables"))]
fn install_table(_host: &HostConfig, _agent_uid: u32) -> anyhow::Result<()> {
    // The config refuses host modes in a build without nftables.
    anyhow::bail!("this imds-agent was built without nftables support")
}

/// What `cleanup` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// The table, if it was there.
    pub table: Option<String>,
    /// The addresses removed from `lo`.
    pub addresses: Vec<IpAddr>,
    /// The eBPF links' pins removed (which detaches the programs).
    pub pins: Vec<std::path::PathBuf>,
}

/// Removes the agent's table, its addresses on `lo` (the IPv4 ones
/// carrying its label, and the IPv6 endpoint) and its eBPF pins. Other
/// tables, addresses and pins are never touched, whatever `host.mode` says
/// now (the agent may have run in another mode before).
pub fn cleanup(host: &HostConfig) -> anyhow::Result<Cleaned> {
    let mut cleaned = Cleaned::default();
    if let Some(dir) = &host.ebpf.pin_dir {
        cleaned.pins = remove_pins(dir)
            .with_context(|| format!("removing the eBPF pins in {}", dir.display()))?;
    }
    if remove_table(&host.table)? {
        cleaned.table = Some(host.table.clone());
    }
    let mut rtnl = Rtnl::open().context("opening rtnetlink")?;
    let lo = Rtnl::link_index("lo")?;
    let ours = |a: &Address| match a.ip {
        IpAddr::V4(ip) => {
            a.label.as_deref() == Some(LABEL)
                && (ip == IMDS_V4 || ip == host.dnat_address || ip.is_link_local())
        }
        IpAddr::V6(ip) => ip == crate::config::IMDS_V6,
    };
    for address in rtnl.addresses(lo).context("listing lo's addresses")? {
        if ours(&address) {
            rtnl.delete(&address)
                .with_context(|| format!("removing {} from lo", address.ip))?;
            cleaned.addresses.push(address.ip);
        }
    }
    Ok(cleaned)
}

/// Removes every pin in `dir` (which detaches the programs, once no agent
/// holds them) and the directory; the pins removed.
fn remove_pins(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let path = entry?.path();
        std::fs::remove_file(&path)?;
        removed.push(path);
    }
    std::fs::remove_dir(dir)?;
    Ok(removed)
}

#[cfg(feature = "nftables")]
fn remove_table(name: &str) -> anyhow::Result<bool> {
    let nft = crate::sys::nft::Nft::open().context("opening nftables")?;
    let existed = nft.exists(name).context("listing nftables tables")?;
    if existed {
        nft.remove(name)
            .with_context(|| format!("removing nftables table inet {name}"))?;
    }
    Ok(existed)
}

#[cfg(not(feature = "nftables"))]
fn remove_table(_name: &str) -> anyhow::Result<bool> {
    Ok(false)
}

/// eBPF mode: attaches the redirect to `host.ebpf.cgroup` below the
/// cgroup2 mount `cgroup_root`, sending connections to the loopback
/// listener in `listen` (and the bridge address, same port). `listener` is
/// one of the agent's sockets: its network namespace is the one whose
/// clients go to loopback. Needs CAP_BPF and CAP_NET_ADMIN (or root).
#[cfg(feature = "ebpf")]
pub fn redirect(
    host: &HostConfig,
    cgroup_root: &std::path::Path,
    listen: &[std::net::SocketAddr],
    listener: &impl std::os::fd::AsRawFd,
    agent_uid: u32,
) -> anyhow::Result<std::sync::Arc<crate::sys::ebpf::Redirect>> {
    use crate::sys::ebpf::{Redirect, Settings};
    let local = host
        .ebpf_target(listen)
        .context("eBPF mode needs a loopback IPv4 listener")?;
    let cgroup = cgroup_root.join(host.ebpf.cgroup.trim_start_matches('/'));
    if !crate::sys::ebpf::is_cgroup2_dir(&cgroup) {
        anyhow::bail!(
            "host.ebpf_cgroup: {} is not a cgroup2 directory",
            cgroup.display()
        );
    }
    let settings = Settings {
        cgroup,
        local,
        bridge: host.ebpf.bridge,
        agent_tgid: std::process::id(),
        agent_uid,
        agent_netns: crate::sys::socket::netns_cookie(listener).context(
            "reading the agent's network namespace cookie (SO_NETNS_COOKIE, Linux 5.14)",
        )?,
        pins: host.ebpf.pin_dir.clone(),
        exe_offsets: crate::sys::ebpf::exe_offsets(),
    };
    let redirect = Redirect::attach(&settings).with_context(|| {
        format!(
            "attaching the eBPF redirect to {} (needs root or CAP_BPF + CAP_NET_ADMIN, and Linux 5.14 or later)",
            settings.cgroup.display()
        )
    })?;
    tracing::info!(
        cgroup = %settings.cgroup.display(),
        to = %settings.local,
        bridge = ?settings.bridge,
        pinned = ?settings.pins,
        "eBPF redirect attached: 169.254.169.254:80 and [fd00:ec2::254]:80 go to the agent"
    );
    if settings.bridge.is_none() {
        tracing::warn!(
            "host.ebpf_bridge_address is unset: connections to 169.254.169.254 from other network namespaces (containers on bridges) are refused"
        );
    }
    if settings.pins.is_none() {
        tracing::warn!(
            "host.ebpf_pin_dir is \"\": the programs detach when the agent exits, and workloads then reach whatever answers at 169.254.169.254"
        );
    }
    Ok(std::sync::Arc::new(redirect))
}
