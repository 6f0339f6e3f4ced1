//! From the file as written to a checked `Config`: parse, apply command-line
//! overrides, fill defaults, check every value.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use bytes::Bytes;

use super::error::{ConfigError, Origin, Source};
use super::file::{self, FileConfig};
use super::host::{Derived, HostFacts, availability_zone_id, private_dns_name};
use super::{Config, CredentialsConfig, Env, Overrides, StsBase};

/// The IMDS address.
const IMDS_V4: std::net::IpAddr = std::net::IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254));
use crate::imds::{DEFAULT_HOST_NAMES, InstanceData, NetworkInterface, Settings};

/// EC2 refuses user data over 16 KiB (before base64).
const MAX_USER_DATA: usize = 16 * 1024;

impl Config {
    /// Checks `text`, which came from `origin`.
    pub fn parse(
        text: &str,
        origin: Origin,
        overrides: &Overrides,
        host: &HostFacts,
        env: Env<'_>,
    ) -> Result<Config, ConfigError> {
        let src = Source {
            origin: &origin,
            text,
        };
        let mut file = deserialize(src)?;
        if let Some(mode) = overrides.host_mode {
            file.host.mode = super::file::HostMode::from(mode);
        }
        let settings = settings(&file.server, overrides, src)?;
        let host_config = super::network::host(&file, src)?;
        let attribution = super::network::attribution(&file, &host_config, src)?;
        let privileges = super::network::privileges(&file, &host_config, src)?;
        let roles = super::network::roles(&file, src)?;
        let listen = match (&overrides.listen, &file.server.listen) {
            (Some(listen), _) => listen.clone(),
            (None, Some(addrs)) => listen(addrs, src)?,
            (None, None) => host_config.default_listen(),
        };
        super::network::check_ebpf_listen(&host_config, &listen, src)?;
        let proxy = super::network::proxy(&file, &host_config, &listen, src)?;
        let admin_group = admin_group(&file, src)?;
        let metrics_listen = metrics_listen(&file, &listen, src)?;
        let web_listen = web_listen(&file, &listen, metrics_listen, src)?;
        let max_connections = match file.server.max_connections {
            n @ 1..=65_536 => n as usize,
            _ => return Err(src.invalid("server.max_connections", "must be from 1 to 65536")),
        };
        let max_connections_per_workload = match file.server.max_connections_per_workload {
            n if n >= 1 && n as usize <= max_connections => n as usize,
            _ => {
                return Err(src.invalid(
                    "server.max_connections_per_workload",
                    format!("must be from 1 to server.max_connections ({max_connections})"),
                ));
            }
        };
        let worker_threads = match file.server.worker_threads {
            n @ 1..=64 => n as usize,
            _ => return Err(src.invalid("server.worker_threads", "must be from 1 to 64")),
        };
        let instance = instance(&file.instance, src, host)?;
        let credentials = super::credentials::credentials(
            &file,
            overrides.credentials_from_env,
            &instance.region,
            src,
            env,
        )?;
        if let CredentialsConfig::Sts(sts) = &credentials
            && matches!(
                sts.base,
                StsBase::Chain {
                    instance_profile: true
                }
            )
            && listen.iter().any(|a| a.ip() == IMDS_V4)
        {
            return Err(src.invalid(
                "credentials.instance_profile",
                "the real IMDS can't be reached while the agent itself listens on 169.254.169.254: \
                 its own requests would come back to it",
            ));
        }
        let log_level = overrides
            .log_level
            .clone()
            .unwrap_or_else(|| file.log.level.clone());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return Err(src.invalid(
                "log.level",
                format!("{log_level:?} is not a log filter: {e}"),
            ));
        }
        Ok(Config {
            origin,
            listen,
            settings,
            max_connections,
            max_connections_per_workload,
            worker_threads,
            instance,
            credentials,
            roles,
            host: host_config,
            proxy,
            attribution,
            privileges,
            configured_account: file.instance.account_id.clone(),
            log_level,
            log_target: file.log.target,
            admin_group,
            metrics_listen,
            web_listen,
            desktop: false,
            admin_socket: overrides
                .admin_socket
                .clone()
                .or_else(|| file.admin.socket.clone()),
            hostname: host.hostname.clone(),
            holds_secrets: holds_secrets(&file),
        })
    }
}

fn deserialize(src: Source<'_>) -> Result<FileConfig, ConfigError> {
    src.deserialize()
}

fn settings(
    server: &file::Server,
    overrides: &Overrides,
    src: Source<'_>,
) -> Result<Settings, ConfigError> {
    let hop_limit = match overrides.hop_limit {
        Some(n) => n,
        None => match server.hop_limit {
            n @ 1..=64 => n as u8,
            _ => return Err(src.invalid("server.hop_limit", "must be from 1 to 64")),
        },
    };
    let mut host_names: Vec<String> = DEFAULT_HOST_NAMES.iter().map(|n| (*n).to_owned()).collect();
    for name in &server.host_names {
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return Err(src.invalid("server.host_names", format!("{name:?} is not a DNS name")));
        }
        host_names.push(name.trim_end_matches('.').to_ascii_lowercase());
    }
    Ok(Settings {
        http_tokens: overrides.http_tokens.unwrap_or(server.http_tokens),
        hop_limit,
        host_names,
    })
}

fn listen(addrs: &[String], src: Source<'_>) -> Result<Vec<SocketAddr>, ConfigError> {
    if addrs.is_empty() {
        return Err(src.invalid("server.listen", "needs at least one address"));
    }
    addrs
        .iter()
        .map(|a| {
            a.parse().map_err(|_| {
                src.invalid(
                    "server.listen",
                    format!("{a:?} is not an address with a port, such as \"169.254.169.254:80\""),
                )
            })
        })
        .collect()
}

fn instance(
    inst: &file::Instance,
    src: Source<'_>,
    host: &HostFacts,
) -> Result<InstanceData, ConfigError> {
    let derived = Derived::new(host);
    let check = |key: &str, value: Option<&String>, ok: fn(&str) -> bool, shape: &str| match value {
        Some(v) if !ok(v) => {
            Err(src.invalid(&format!("instance.{key}"), format!("{v:?} is not {shape}")))
        }
        _ => Ok(value.cloned()),
    };
    let region = check(
        "region",
        inst.region.as_ref(),
        is_region,
        "a region such as \"us-east-1\"",
    )?
    .unwrap_or_else(|| "us-east-1".to_owned());
    let availability_zone = inst
        .availability_zone
        .clone()
        .unwrap_or_else(|| format!("{region}a"));
    if !is_zone_of(&availability_zone, &region) {
        return Err(src.invalid(
            "instance.availability_zone",
            format!(
                "{availability_zone:?} is not a zone of region {region:?} (such as \"{region}a\")"
            ),
        ));
    }
    let account_id = check(
        "account_id",
        inst.account_id.as_ref(),
        is_account_id,
        "a 12-digit account id",
    )?
    .unwrap_or_else(|| derived.account_id());
    // The EC2 ids: checked when given, derived from the machine id if not.
    let ec2_id = |key: &str, value: Option<&String>, prefix: &str, what: &str| match value {
        Some(v) if !is_ec2_id(v, prefix) => Err(src.invalid(
            &format!("instance.{key}"),
            format!("{v:?} is not {what} such as \"{prefix}-0123456789abcdef0\""),
        )),
        Some(v) => Ok(v.clone()),
        None => Ok(derived.id(prefix)),
    };
    let instance_id = ec2_id(
        "instance_id",
        inst.instance_id.as_ref(),
        "i",
        "an instance id",
    )?;
    let ami_id = ec2_id("ami_id", inst.ami_id.as_ref(), "ami", "an AMI id")?;
    let reservation_id = ec2_id(
        "reservation_id",
        inst.reservation_id.as_ref(),
        "r",
        "a reservation id",
    )?;
    let mac = check(
        "mac",
        inst.mac.as_ref(),
        is_mac,
        "a MAC address such as \"0e:12:34:56:78:9a\"",
    )?
    .unwrap_or_else(|| derived.mac());
    let ipv4 = |key: &str, value: &Option<String>| {
        value
            .as_ref()
            .map(|v| {
                v.parse::<Ipv4Addr>().map_err(|_| {
                    src.invalid(
                        &format!("instance.{key}"),
                        format!("{v:?} is not an IPv4 address"),
                    )
                })
            })
            .transpose()
    };
    let local_ipv4 = ipv4("local_ipv4", &inst.local_ipv4)?.unwrap_or_else(|| derived.local_ipv4());
    let public_ipv4 = ipv4("public_ipv4", &inst.public_ipv4)?;
    let dns_name = private_dns_name(local_ipv4, &region);
    let names = [
        ("hostname", &inst.hostname),
        ("local_hostname", &inst.local_hostname),
        ("public_hostname", &inst.public_hostname),
        ("instance_type", &inst.instance_type),
        ("instance_life_cycle", &inst.instance_life_cycle),
        ("availability_zone_id", &inst.availability_zone_id),
    ];
    for (key, value) in names {
        check(key, value.as_ref(), is_single_line, "one non-empty line")?;
    }
    let security_groups = inst
        .security_groups
        .clone()
        .unwrap_or_else(|| vec!["default".to_owned()]);
    if security_groups.is_empty() || !security_groups.iter().all(|g| is_single_line(g)) {
        return Err(src.invalid(
            "instance.security_groups",
            "needs one or more single-line names",
        ));
    }
    let block_device_mapping = match &inst.block_device_mapping {
        Some(map) => entries(map, "instance.block_device_mapping", src)?,
        None => vec![
            ("ami".into(), "/dev/xvda".into()),
            ("root".into(), "/dev/xvda".into()),
        ],
    };
    let public_keys = entries(&inst.public_keys, "instance.public_keys", src)?;
    if let Some((name, _)) = public_keys.iter().find(|(n, _)| n.contains('=')) {
        return Err(src.invalid(
            &format!("instance.public_keys.{name}"),
            "a key name can't contain '='",
        ));
    }
    let tags = match &inst.tags {
        Some(t) => Some(entries(t, "instance.tags", src)?),
        // A Name tag, as most instances have, when the host has a name.
        None if !host.hostname.is_empty() => Some(vec![("Name".to_owned(), host.hostname.clone())]),
        None => None,
    };
    let user_data = user_data(inst, src)?;
    let partition = partition_of(&region);
    let security_group_ids = security_groups
        .iter()
        .map(|g| derived.id_for("sg", g))
        .collect();
    let [a, b, c, _] = local_ipv4.octets();
    Ok(InstanceData {
        availability_zone_id: inst
            .availability_zone_id
            .clone()
            .unwrap_or_else(|| availability_zone_id(&region, &availability_zone)),
        domain: if partition == "aws-cn" {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        }
        .to_owned(),
        partition: partition.to_owned(),
        account_id,
        availability_zone,
        instance_id,
        ami_id,
        ami_launch_index: 0,
        ami_manifest_path: "(unknown)".to_owned(),
        instance_type: inst
            .instance_type
            .clone()
            .unwrap_or_else(|| "m5.large".to_owned()),
        instance_life_cycle: inst
            .instance_life_cycle
            .clone()
            .unwrap_or_else(|| "on-demand".to_owned()),
        architecture: host.architecture.clone(),
        hostname: inst.hostname.clone().unwrap_or_else(|| dns_name.clone()),
        local_hostname: inst.local_hostname.clone().unwrap_or(dns_name),
        local_ipv4,
        public_hostname: inst.public_hostname.clone(),
        public_ipv4,
        mac,
        reservation_id,
        profile: "default-hvm".to_owned(),
        network: NetworkInterface {
            interface_id: derived.id("eni"),
            subnet_id: derived.id("subnet"),
            vpc_id: derived.id("vpc"),
            subnet_ipv4_cidr_block: format!("{a}.{b}.{c}.0/24"),
            vpc_ipv4_cidr_block: format!("{a}.{b}.0.0/16"),
            security_group_ids,
        },
        security_groups,
        block_device_mapping,
        public_keys,
        tags,
        user_data,
        pending_time: host.boot_time,
        last_modified: host.boot_time,
        region,
    })
}

/// Checks the keys and values of a table that becomes a metadata directory:
/// keys become path segments, so they must be usable as one.
fn entries(
    map: &std::collections::BTreeMap<String, String>,
    key: &str,
    src: Source<'_>,
) -> Result<Vec<(String, String)>, ConfigError> {
    map.iter()
        .map(|(name, value)| {
            let bad_name = name.is_empty()
                || name == "."
                || name == ".."
                || name.contains('/')
                || !is_single_line(name);
            if bad_name {
                return Err(src.invalid(
                    &format!("{key}.{name}"),
                    "a name must be one line, not empty, '.' or '..', and without '/'",
                ));
            }
            if value.contains('\n') {
                return Err(src.invalid(&format!("{key}.{name}"), "the value must be one line"));
            }
            Ok((name.clone(), value.clone()))
        })
        .collect()
}

fn user_data(inst: &file::Instance, src: Source<'_>) -> Result<Option<Bytes>, ConfigError> {
    let data = match (&inst.user_data, &inst.user_data_file) {
        (Some(_), Some(_)) => {
            return Err(src.invalid(
                "instance.user_data_file",
                "set user_data or user_data_file, not both",
            ));
        }
        (Some(text), None) => Bytes::from(text.clone()),
        (None, Some(path)) => {
            let path = resolve_relative(src.origin, path);
            let bytes = read_user_data_file(&path)
                .map_err(|e| src.unreadable("instance.user_data_file", &path, e))?;
            Bytes::from(bytes)
        }
        (None, None) => return Ok(None),
    };
    if data.len() > MAX_USER_DATA {
        let key = if inst.user_data.is_some() {
            "instance.user_data"
        } else {
            "instance.user_data_file"
        };
        return Err(src.invalid(
            key,
            format!("is over {MAX_USER_DATA} bytes; EC2 allows at most {MAX_USER_DATA}"),
        ));
    }
    Ok(Some(data))
}

/// A regular file's bytes, at most one more than EC2 allows (enough to
/// say it is too long). Anything else is refused before it is opened: a
/// FIFO would hang the agent at open, `/dev/zero` would fill its memory,
/// and opening a device can act on it (a tty would become the agent's
/// controlling terminal). The opened file must be the one looked at.
fn read_user_data_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let not_regular =
        || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
    let looked = std::fs::metadata(path)?;
    if !looked.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let opened = file.metadata()?;
    if !opened.is_file() || (opened.dev(), opened.ino()) != (looked.dev(), looked.ino()) {
        return Err(not_regular());
    }
    let mut bytes = Vec::new();
    file.take(MAX_USER_DATA as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A relative path in a config file is relative to the file's directory.
fn resolve_relative(origin: &Origin, path: &Path) -> std::path::PathBuf {
    match origin {
        Origin::File(file) if path.is_relative() => {
            file.parent().unwrap_or(Path::new(".")).join(path)
        }
        _ => path.to_owned(),
    }
}

fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// `us-east-1`, `ap-southeast-2`, `us-gov-west-1`: lower-case words joined
/// by `-`, the last one a number.
/// Whether the file itself carries keys or a TOTP secret.
fn holds_secrets(file: &FileConfig) -> bool {
    let c = &file.credentials;
    c.secret_access_key.is_some()
        || c.mfa_secret.is_some()
        || file
            .profiles
            .values()
            .any(|p| p.secret_access_key.is_some() || p.mfa_secret.is_some())
}

pub(super) fn is_region(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

fn is_zone_of(zone: &str, region: &str) -> bool {
    zone.strip_prefix(region)
        .is_some_and(|rest| rest.len() == 1 && rest.bytes().all(|b| b.is_ascii_lowercase()))
}

fn is_account_id(v: &str) -> bool {
    v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit())
}

/// `prefix-` and 8 or 17 lower-case hex digits.
fn is_ec2_id(v: &str, prefix: &str) -> bool {
    v.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| {
            matches!(hex.len(), 8 | 17)
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

fn is_mac(v: &str) -> bool {
    let parts: Vec<&str> = v.split(':').collect();
    parts.len() == 6
        && parts.iter().all(|p| {
            p.len() == 2
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

fn is_single_line(v: &str) -> bool {
    !v.trim().is_empty() && !v.contains(['\n', '\r'])
}

fn admin_group(file: &FileConfig, src: Source<'_>) -> Result<Option<String>, ConfigError> {
    match &file.admin.group {
        Some(group) if group.is_empty() || group.len() > 32 || group.contains([':', '/', ' ']) => {
            Err(src.invalid(
                "admin.group",
                format!("{group:?} is not a group name or gid"),
            ))
        }
        other => Ok(other.clone()),
    }
}

/// `key`'s address and port, if it is set.
fn address(
    text: Option<&str>,
    key: &str,
    src: Source<'_>,
) -> Result<Option<SocketAddr>, ConfigError> {
    text.map(|text| {
        text.parse()
            .map_err(|_| src.invalid(key, format!("{text:?} is not an address and port")))
    })
    .transpose()
}

fn metrics_listen(
    file: &FileConfig,
    listen: &[SocketAddr],
    src: Source<'_>,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(addr) = address(
        file.admin.metrics_listen.as_deref(),
        "admin.metrics_listen",
        src,
    )?
    else {
        return Ok(None);
    };
    // Workloads reach the IMDS addresses: metrics never live there.
    let imds = [IMDS_V4, std::net::IpAddr::V6(crate::config::IMDS_V6)];
    if listen.contains(&addr) || imds.contains(&addr.ip()) {
        return Err(src.invalid(
            "admin.metrics_listen",
            "must not be an address the IMDS is served on",
        ));
    }
    Ok(Some(addr))
}

/// `admin.web_listen`: the `/manage` page changes the agent's session, so
/// it is only ever on loopback, and never where workloads reach the IMDS
/// or the metrics.
fn web_listen(
    file: &FileConfig,
    listen: &[SocketAddr],
    metrics: Option<SocketAddr>,
    src: Source<'_>,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(addr) = address(file.admin.web_listen.as_deref(), "admin.web_listen", src)? else {
        return Ok(None);
    };
    if !addr.ip().is_loopback() {
        return Err(src.invalid(
            "admin.web_listen",
            "must be a loopback address (127.0.0.1:PORT or [::1]:PORT)",
        ));
    }
    // Port 0 is a free port the kernel picks: it meets nothing.
    if addr.port() != 0 && listen.contains(&addr) {
        return Err(src.invalid(
            "admin.web_listen",
            "must not be an address the IMDS is served on",
        ));
    }
    if addr.port() != 0 && metrics == Some(addr) {
        return Err(src.invalid("admin.web_listen", "must not be the metrics address"));
    }
    Ok(Some(addr))
}
