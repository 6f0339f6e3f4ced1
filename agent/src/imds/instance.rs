//! The instance's metadata values, as the configuration settled them. Plain
//! data: where the defaults come from is the config module's business.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use bytes::Bytes;

/// Everything the metadata tree and the identity document say about "the
/// instance". Every field is already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceData {
    /// `accountId` of the identity document; also the account of roles given
    /// by bare name.
    pub account_id: String,
    /// `aws`, `aws-cn` or `aws-us-gov` (`services/partition`).
    pub partition: String,
    /// `services/domain`: `amazonaws.com`, or `amazonaws.com.cn` in China.
    pub domain: String,
    /// `placement/region`.
    pub region: String,
    /// `placement/availability-zone`.
    pub availability_zone: String,
    /// `placement/availability-zone-id`.
    pub availability_zone_id: String,
    /// `instance-id`.
    pub instance_id: String,
    /// `ami-id`.
    pub ami_id: String,
    /// `ami-launch-index`.
    pub ami_launch_index: u32,
    /// `ami-manifest-path`.
    pub ami_manifest_path: String,
    /// `instance-type`.
    pub instance_type: String,
    /// `instance-life-cycle`: `on-demand`, `spot` or `scheduled`.
    pub instance_life_cycle: String,
    /// The identity document's `architecture` (`x86_64` or `arm64`).
    pub architecture: String,
    /// `hostname`.
    pub hostname: String,
    /// `local-hostname`.
    pub local_hostname: String,
    /// `local-ipv4`.
    pub local_ipv4: Ipv4Addr,
    /// `public-hostname`, absent like on an instance without a public address.
    pub public_hostname: Option<String>,
    /// `public-ipv4`.
    pub public_ipv4: Option<Ipv4Addr>,
    /// `mac` of the primary interface.
    pub mac: String,
    /// `reservation-id`.
    pub reservation_id: String,
    /// `profile` (`default-hvm`).
    pub profile: String,
    /// `security-groups`, by name.
    pub security_groups: Vec<String>,
    /// The primary interface under `network/interfaces/macs/<mac>/`.
    pub network: NetworkInterface,
    /// `block-device-mapping/<name>` → device, in listing order.
    pub block_device_mapping: Vec<(String, String)>,
    /// `public-keys/<n>=<name>` → OpenSSH public key, in index order.
    pub public_keys: Vec<(String, String)>,
    /// `tags/instance/<key>` → value. `None` when tags are not exposed in
    /// metadata (then `tags/` is absent, as on EC2 by default).
    pub tags: Option<Vec<(String, String)>>,
    /// `user-data`; `None` answers 404, as EC2 does when none was given.
    pub user_data: Option<Bytes>,
    /// The identity document's `pendingTime` (when the instance launched).
    pub pending_time: SystemTime,
    /// When this data was last changed, for `Last-Modified`.
    pub last_modified: SystemTime,
}

/// The primary network interface's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInterface {
    /// `interface-id` (`eni-…`).
    pub interface_id: String,
    /// `subnet-id`.
    pub subnet_id: String,
    /// `vpc-id`.
    pub vpc_id: String,
    /// `subnet-ipv4-cidr-block`.
    pub subnet_ipv4_cidr_block: String,
    /// `vpc-ipv4-cidr-block`.
    pub vpc_ipv4_cidr_block: String,
    /// `security-group-ids`, in the order of `security-groups`.
    pub security_group_ids: Vec<String>,
}
