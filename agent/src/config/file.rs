//! The configuration file as written: one TOML document, every key optional.
//! This is also the reference of the keys (the README's configuration
//! section follows it). Unknown keys are errors, so a typo never silently
//! turns a setting off.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::imds::HttpTokens;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) server: Server,
    pub(crate) host: Host,
    pub(crate) proxy: Proxy,
    pub(crate) attribution: Attribution,
    pub(crate) privileges: Privileges,
    pub(crate) instance: Instance,
    pub(crate) credentials: Credentials,
    pub(crate) profiles: BTreeMap<String, Profile>,
    pub(crate) roles: Roles,
    pub(crate) admin: Admin,
    pub(crate) log: Log,
}

/// How workloads reach the agent at 169.254.169.254.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HostMode {
    /// The agent only listens; the network is someone else's business.
    #[default]
    Off,
    /// The agent puts 169.254.169.254 on `lo` (`lo:metadata`) and guards it
    /// with its nftables table. For hosts that are not EC2 instances.
    Alias,
    /// The agent's nftables table DNATs 169.254.169.254:80 to the agent,
    /// except the agent's own traffic, which still reaches the real IMDS.
    /// For EC2 hosts.
    Dnat,
    /// eBPF programs attached to a cgroup send connections to
    /// 169.254.169.254:80 to the agent and record who made them; no
    /// address, no firewall. Needs the `ebpf` build.
    Ebpf,
}

/// `[host]`: taking over 169.254.169.254.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Host {
    pub(crate) mode: HostMode,
    /// Interfaces besides `lo` whose traffic may reach the IMDS (container
    /// bridges); `br-*` matches every name starting `br-`.
    pub(crate) interfaces: Vec<String>,
    /// Alias mode: also serve IMDS's IPv6 address, `[fd00:ec2::254]:80`.
    pub(crate) ipv6: bool,
    /// The agent's nftables table (family inet).
    pub(crate) table: String,
    /// DNAT mode: the link-local address the agent serves redirected
    /// traffic on (added to `lo`).
    pub(crate) dnat_address: String,
    /// eBPF mode: the cgroup (below the cgroup2 mount) whose processes are
    /// redirected; `/`: every process.
    pub(crate) ebpf_cgroup: String,
    /// eBPF mode: the agent's loopback port.
    pub(crate) ebpf_port: u16,
    /// eBPF mode: a host address that containers on bridges reach (docker0's
    /// `172.17.0.1`); their connections go there. Unset: they are refused.
    pub(crate) ebpf_bridge_address: Option<String>,
    /// eBPF mode: where the programs' links are pinned (on a bpf file
    /// system), so they outlive the agent; "": not pinned (they detach when
    /// the agent exits: fails open).
    pub(crate) ebpf_pin_dir: String,
}

impl Default for Host {
    fn default() -> Self {
        Self {
            mode: HostMode::Off,
            interfaces: vec!["docker0".to_owned(), "br-*".to_owned(), "cni*".to_owned()],
            ipv6: false,
            table: "imds_agent".to_owned(),
            dnat_address: "169.254.170.254".to_owned(),
            ebpf_cgroup: "/".to_owned(),
            ebpf_port: 8169,
            ebpf_bridge_address: None,
            ebpf_pin_dir: "/sys/fs/bpf/imds-agent".to_owned(),
        }
    }
}

/// `[proxy]`: on EC2 hosts (DNAT mode), what the agent passes through from
/// the real IMDS.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Proxy {
    /// Forward allowed paths to the real IMDS (default: on in DNAT mode).
    pub(crate) enabled: Option<bool>,
    /// The real IMDS (default `169.254.169.254:80`).
    pub(crate) upstream: Option<String>,
    /// The paths forwarded (default: instance facts, never credentials or
    /// user data).
    pub(crate) allow: Option<Vec<String>>,
    /// How long a forwarded request may take.
    pub(crate) timeout_ms: Option<u64>,
}

/// `[attribution]`: telling workloads apart.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Attribution {
    /// Identify local clients by their socket's cgroup (default: on in host
    /// modes, off otherwise).
    pub(crate) cgroups: Option<bool>,
    /// The cgroup2 mount (default: found in /proc/self/mountinfo).
    pub(crate) cgroup_root: Option<std::path::PathBuf>,
    /// Identify bridged containers through the Docker Engine API.
    pub(crate) docker: bool,
    /// Docker's socket.
    pub(crate) docker_socket: Option<std::path::PathBuf>,
    /// The environment variable in which a container names its role.
    pub(crate) env_role_var: Option<String>,
    /// Roles a container may name for itself (patterns; `*` matches
    /// anything). Empty: containers may not name their role.
    pub(crate) allowed_env_roles: Option<Vec<String>>,
}

/// `[privileges]`: whom the agent becomes once set up.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Privileges {
    /// The user (name or uid) to drop to when started as root.
    pub(crate) user: Option<String>,
    /// Its group (default: the user's primary group).
    pub(crate) group: Option<String>,
    /// Supplementary groups to keep (`docker` for the Docker watcher).
    pub(crate) supplementary_groups: Vec<String>,
}

/// `[server]`: where and how the IMDS is served.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Server {
    /// Addresses to listen on (default: where `[host]` puts the IMDS).
    pub(crate) listen: Option<Vec<String>>,
    /// `optional` (IMDSv1 and v2) or `required` (v2 only), as EC2's
    /// `HttpTokens`.
    pub(crate) http_tokens: HttpTokens,
    /// IP TTL of token responses, 1 to 64, as EC2's
    /// `HttpPutResponseHopLimit`.
    pub(crate) hop_limit: u64,
    /// Connections served at once; more wait in the listen backlog.
    pub(crate) max_connections: u64,
    /// Of those, at most this many per workload (with attribution on); a
    /// user's workloads together get a quarter of `max_connections`.
    pub(crate) max_connections_per_workload: u64,
    /// Threads serving requests. One serves over 100 000 requests/s; more
    /// only help on hosts with many cores and very busy clients.
    pub(crate) worker_threads: u64,
    /// DNS names accepted in `Host` besides IP addresses, `localhost` and
    /// `instance-data[.ec2.internal]`. Requests naming any other host are
    /// refused, so a web page that rebinds its DNS name to the agent's
    /// address can't read credentials.
    pub(crate) host_names: Vec<String>,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: None,
            http_tokens: HttpTokens::Optional,
            hop_limit: 1,
            max_connections: 1024,
            max_connections_per_workload: 128,
            worker_threads: 1,
            host_names: Vec::new(),
        }
    }
}

/// `[instance]`: the metadata values. Anything left out is derived from the
/// host's machine id, so it is plausible and stable across restarts.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Instance {
    pub(crate) account_id: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) availability_zone: Option<String>,
    pub(crate) availability_zone_id: Option<String>,
    pub(crate) instance_id: Option<String>,
    pub(crate) ami_id: Option<String>,
    pub(crate) instance_type: Option<String>,
    pub(crate) instance_life_cycle: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) local_hostname: Option<String>,
    pub(crate) local_ipv4: Option<String>,
    pub(crate) public_hostname: Option<String>,
    pub(crate) public_ipv4: Option<String>,
    pub(crate) mac: Option<String>,
    pub(crate) reservation_id: Option<String>,
    pub(crate) security_groups: Option<Vec<String>>,
    pub(crate) block_device_mapping: Option<BTreeMap<String, String>>,
    pub(crate) public_keys: BTreeMap<String, String>,
    pub(crate) tags: Option<BTreeMap<String, String>>,
    pub(crate) user_data: Option<String>,
    pub(crate) user_data_file: Option<PathBuf>,
}

/// Where credentials come from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SourceKind {
    /// Fixed keys from this file or the environment.
    #[default]
    Static,
    /// Temporary credentials from STS.
    Sts,
}

/// Where the agent's own credentials come from (`source = "sts"`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BaseKind {
    /// The standard chain: environment, shared files, SSO, web identity.
    #[default]
    Chain,
    /// Posted to the admin socket after start.
    Bootstrap,
    /// The `[profiles.*]` tables.
    Profiles,
    /// `[credentials.roles_anywhere]`: sessions from the host's certificate.
    #[serde(rename = "roles-anywhere")]
    RolesAnywhere,
}

/// `[credentials.roles_anywhere]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RolesAnywhere {
    pub(crate) certificate: Option<PathBuf>,
    pub(crate) pkcs12: Option<PathBuf>,
    pub(crate) chain: Option<PathBuf>,
    pub(crate) private_key: Option<PathBuf>,
    pub(crate) pkcs11_module: Option<PathBuf>,
    pub(crate) private_key_passphrase_file: Option<PathBuf>,
    pub(crate) private_key_passphrase_credential: Option<String>,
    pub(crate) trust_anchor_arn: Option<String>,
    pub(crate) profile_arn: Option<String>,
    pub(crate) role_arn: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) fips: bool,
    pub(crate) dual_stack: bool,
    pub(crate) ca_bundle: Option<PathBuf>,
    pub(crate) duration_seconds: Option<u64>,
    pub(crate) session_name: Option<String>,
}

/// What STS is asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ModeKind {
    /// Each workload's role.
    #[default]
    AssumeRole,
    /// A session token of the agent's own identity.
    SessionToken,
    /// The agent's own (Roles Anywhere) session.
    Direct,
}

/// `[credentials]`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Credentials {
    pub(crate) source: SourceKind,
    // source = "static"
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<String>,
    pub(crate) session_token: Option<String>,
    /// Take the keys from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN` instead.
    pub(crate) from_env: bool,
    /// How long served static credentials claim to live, in seconds.
    pub(crate) lifetime_seconds: u64,
    // source = "sts"
    pub(crate) base: Option<BaseKind>,
    pub(crate) profile: Option<String>,
    pub(crate) mode: Option<ModeKind>,
    pub(crate) region: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) duration_seconds: Option<u64>,
    pub(crate) external_id: Option<String>,
    pub(crate) mfa_serial: Option<String>,
    pub(crate) mfa_secret: Option<String>,
    pub(crate) mfa_session_seconds: Option<u64>,
    pub(crate) instance_profile: Option<bool>,
    pub(crate) refresh_before_expiry_seconds: Option<u64>,
    pub(crate) error_ttl_seconds: Option<u64>,
    pub(crate) rate_per_second: Option<f64>,
    pub(crate) burst: Option<u64>,
    pub(crate) max_roles: Option<u64>,
    pub(crate) source_identity: Option<bool>,
    pub(crate) session_tags: Option<bool>,
    pub(crate) first_fetch_wait_ms: Option<u64>,
    pub(crate) idle_ttl_seconds: Option<u64>,
    pub(crate) mfa_prompt_wait_seconds: Option<u64>,
    pub(crate) prefetch_spread_seconds: Option<u64>,
    pub(crate) roles_anywhere: Option<RolesAnywhere>,
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            source: SourceKind::Static,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            from_env: false,
            lifetime_seconds: 6 * 3600,
            base: None,
            profile: None,
            mode: None,
            region: None,
            endpoint: None,
            duration_seconds: None,
            external_id: None,
            mfa_serial: None,
            mfa_secret: None,
            mfa_session_seconds: None,
            instance_profile: None,
            refresh_before_expiry_seconds: None,
            error_ttl_seconds: None,
            rate_per_second: None,
            burst: None,
            max_roles: None,
            source_identity: None,
            session_tags: None,
            first_fetch_wait_ms: None,
            idle_ttl_seconds: None,
            mfa_prompt_wait_seconds: None,
            prefetch_spread_seconds: None,
            roles_anywhere: None,
        }
    }
}

/// `[profiles.NAME]`: an identity of the agent's own, for developer
/// machines with several accounts (`credentials.base = "profiles"`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Profile {
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<String>,
    pub(crate) session_token: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) role: Option<String>,
    pub(crate) mode: Option<ModeKind>,
    pub(crate) duration_seconds: Option<u64>,
    pub(crate) external_id: Option<String>,
    pub(crate) mfa_serial: Option<String>,
    pub(crate) mfa_secret: Option<String>,
}

/// `[admin]`: the control socket.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Admin {
    /// The socket's path.
    pub(crate) socket: Option<std::path::PathBuf>,
    /// A group whose members may use the socket too (mode 0660).
    pub(crate) group: Option<String>,
    /// Also serve `GET /metrics` (and nothing else) on this TCP address.
    pub(crate) metrics_listen: Option<String>,
    /// Serve the `/manage` page on this loopback address and port.
    pub(crate) web_listen: Option<String>,
}

/// `[roles]`: which workload gets which role.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Roles {
    /// The role of every workload no rule matches (`name`, `name@account`
    /// or an ARN). Without it such workloads get no role.
    pub(crate) default: Option<String>,
    /// The role of containers no rule matches and whose environment names
    /// none.
    pub(crate) container_default: Option<String>,
    /// The rule files' directory.
    pub(crate) dir: Option<std::path::PathBuf>,
    /// Name each role session after its workload (unit, container).
    pub(crate) session_per_workload: Option<bool>,
}

/// `[log]`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Log {
    /// A `tracing` filter: `info`, `debug`, `imds_agent=debug,warn`, …
    pub(crate) level: String,
    /// Where logs go: `auto` (the journal when systemd connected stderr to
    /// it, else stderr), `journald` or `stderr`.
    pub(crate) target: LogTarget,
}

/// `log.target`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// The journal under systemd, stderr otherwise.
    #[default]
    Auto,
    /// The journal, with structured fields.
    Journald,
    /// stderr, as text.
    Stderr,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            target: LogTarget::Auto,
        }
    }
}

impl From<super::HostMode> for HostMode {
    fn from(mode: super::HostMode) -> Self {
        match mode {
            super::HostMode::Off => HostMode::Off,
            super::HostMode::Alias => HostMode::Alias,
            super::HostMode::Dnat => HostMode::Dnat,
            super::HostMode::Ebpf => HostMode::Ebpf,
        }
    }
}
