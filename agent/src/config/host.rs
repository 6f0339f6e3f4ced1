//! Facts about the host that defaults are derived from, and the derivation.
//! Reading the facts is the only I/O here (`HostFacts::read`); `Derived` is
//! a pure function of them, so every default is the same on every start of
//! the same machine and different between machines.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::digest;

/// What the defaults are made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// `/etc/machine-id` (or the D-Bus one), the seed of every derived id.
    pub machine_id: String,
    /// When the host booted: the instance's "launch" (`pendingTime`).
    pub boot_time: SystemTime,
    /// `x86_64` or `arm64`, as EC2 names architectures.
    pub architecture: String,
    /// The host's name: the default `Name` tag.
    pub hostname: String,
}

impl HostFacts {
    /// Reads the facts of this host. Missing files fall back to fixed values
    /// rather than failing: the defaults only need to be plausible.
    pub fn read() -> Self {
        let machine_id = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "imds-agent-no-machine-id".to_owned());
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| boot_time_from_proc_stat(&stat))
            .unwrap_or(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Self {
            machine_id,
            boot_time,
            architecture: ec2_architecture(std::env::consts::ARCH).to_owned(),
            hostname,
        }
    }
}

fn boot_time_from_proc_stat(stat: &str) -> Option<SystemTime> {
    let secs = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

fn ec2_architecture(rust_arch: &str) -> &str {
    match rust_arch {
        "aarch64" => "arm64",
        "x86" => "i386",
        other => other,
    }
}

/// Values derived from the machine id.
#[derive(Debug, Clone)]
pub(crate) struct Derived {
    seed: Vec<u8>,
}

impl Derived {
    pub(crate) fn new(facts: &HostFacts) -> Self {
        Self {
            seed: facts.machine_id.as_bytes().to_vec(),
        }
    }

    /// 32 bytes for `purpose`, independent between purposes.
    fn bytes(&self, purpose: &str) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"imds-agent/");
        ctx.update(purpose.as_bytes());
        ctx.update(b"/");
        ctx.update(&self.seed);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// An EC2-style id: `prefix-` and 17 hex digits.
    pub(crate) fn id(&self, prefix: &str) -> String {
        self.id_for(prefix, "")
    }

    /// Like `id`, for one of several things of a kind (`name`).
    pub(crate) fn id_for(&self, prefix: &str, name: &str) -> String {
        let hex: String = self
            .bytes(&format!("{prefix}/{name}"))
            .iter()
            .take(9)
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{prefix}-{}", &hex[..17])
    }

    /// A 12-digit account id that does not start with 0.
    pub(crate) fn account_id(&self) -> String {
        let b = self.bytes("account");
        let n = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        format!("{}", 100_000_000_000 + n % 900_000_000_000)
    }

    /// A primary private address in `10.a.b.0/24`, avoiding the addresses
    /// EC2 reserves in every subnet (the first four and the last).
    pub(crate) fn local_ipv4(&self) -> Ipv4Addr {
        let b = self.bytes("local-ipv4");
        Ipv4Addr::new(10, b[0], b[1], 4 + b[2] % 250)
    }

    /// A locally administered unicast MAC, as EC2 assigns (`02`, `06`,
    /// `0a` or `0e` first).
    pub(crate) fn mac(&self) -> String {
        let b = self.bytes("mac");
        let first = 0x02 | (b[0] & 0x0c);
        format!(
            "{first:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// The private DNS name EC2 gives an address: `ip-10-1-2-3.ec2.internal` in
/// us-east-1, `ip-10-1-2-3.<region>.compute.internal` elsewhere.
pub(crate) fn private_dns_name(ip: Ipv4Addr, region: &str) -> String {
    let [a, b, c, d] = ip.octets();
    if region == "us-east-1" {
        format!("ip-{a}-{b}-{c}-{d}.ec2.internal")
    } else {
        format!("ip-{a}-{b}-{c}-{d}.{region}.compute.internal")
    }
}

/// A zone id in EC2's style (`use1-az1` for `us-east-1a`): the region's
/// short name and the zone letter's position.
pub(crate) fn availability_zone_id(region: &str, zone: &str) -> String {
    let mut parts = region.split('-');
    let mut short = String::new();
    if let Some(geo) = parts.next() {
        short.push_str(geo);
    }
    for part in parts {
        let abbreviation = match part {
            "north" => "n",
            "south" => "s",
            "east" => "e",
            "west" => "w",
            "central" => "c",
            "northeast" => "ne",
            "northwest" => "nw",
            "southeast" => "se",
            "southwest" => "sw",
            "gov" => "gov",
            other => other,
        };
        short.push_str(abbreviation);
    }
    let letter = zone.chars().last().unwrap_or('a');
    let index = u32::from(letter).saturating_sub(u32::from('a')) + 1;
    format!("{short}-az{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(id: &str) -> HostFacts {
        HostFacts {
            machine_id: id.to_owned(),
            boot_time: UNIX_EPOCH,
            architecture: "x86_64".to_owned(),
            hostname: "host".to_owned(),
        }
    }

    #[test]
    fn derived_values_are_stable_and_per_host() {
        let a = Derived::new(&facts("aaaa"));
        let a2 = Derived::new(&facts("aaaa"));
        let b = Derived::new(&facts("bbbb"));
        assert_eq!(a.id("i"), a2.id("i"));
        assert_ne!(a.id("i"), b.id("i"));
        assert_ne!(a.id("i")[2..], a.id("ami")[4..]);
        assert_eq!(a.id("i").len(), 19);
        assert!(a.id("i")[2..].bytes().all(|c| c.is_ascii_hexdigit()));
        let account = a.account_id();
        assert_eq!(account.len(), 12);
        assert!(!account.starts_with('0'));
        let ip = a.local_ipv4();
        assert_eq!(ip.octets()[0], 10);
        assert!((4..=253).contains(&ip.octets()[3]));
        let mac = a.mac();
        assert_eq!(mac.len(), 17);
        assert!(["02", "06", "0a", "0e"].contains(&&mac[..2]), "{mac}");
    }

    #[test]
    fn names_in_ec2_style() {
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        assert_eq!(
            private_dns_name(ip, "us-east-1"),
            "ip-10-1-2-3.ec2.internal"
        );
        assert_eq!(
            private_dns_name(ip, "eu-west-1"),
            "ip-10-1-2-3.eu-west-1.compute.internal"
        );
        assert_eq!(availability_zone_id("us-east-1", "us-east-1a"), "use1-az1");
        assert_eq!(
            availability_zone_id("eu-central-1", "eu-central-1c"),
            "euc1-az3"
        );
        assert_eq!(
            availability_zone_id("ap-southeast-2", "ap-southeast-2b"),
            "apse2-az2"
        );
        assert_eq!(
            availability_zone_id("us-gov-west-1", "us-gov-west-1a"),
            "usgovw1-az1"
        );
    }

    #[test]
    fn boot_time_parsing() {
        let stat = "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n";
        assert_eq!(
            boot_time_from_proc_stat(stat),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(boot_time_from_proc_stat("cpu 1\n"), None);
        assert_eq!(ec2_architecture("aarch64"), "arm64");
        assert_eq!(ec2_architecture("x86_64"), "x86_64");
    }
}
