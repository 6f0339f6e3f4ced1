//! The metadata tree, built once from `InstanceData`: directories with their
//! listings already rendered, leaves with their bodies. Lookups borrow from
//! it and allocate nothing. The IAM subtree is not in here: it depends on
//! the caller and lives in `iam.rs`.

use bytes::Bytes;

use super::instance::InstanceData;
use super::json::{Value, object};
use super::response::ContentType;
use crate::timefmt::iso8601;

/// Every version prefix EC2 lists at `/`, oldest first, then `latest`.
pub(crate) const VERSIONS: &[&str] = &[
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2011-05-01",
    "2012-01-12",
    "2014-02-25",
    "2014-11-05",
    "2015-10-20",
    "2016-04-19",
    "2016-06-30",
    "2016-09-02",
    "2018-03-28",
    "2018-08-17",
    "2018-09-24",
    "2019-10-01",
    "2020-10-27",
    "2021-01-03",
    "2021-03-23",
    "2021-07-15",
    "2022-09-24",
    "2024-04-11",
    "latest",
];

/// The first version that has `meta-data/iam/`.
const FIRST_IAM_VERSION: &str = "2012-01-12";

/// Whether `version` is one EC2 serves.
pub(crate) fn is_version(version: &str) -> bool {
    VERSIONS.contains(&version)
}

/// Whether `version` has the `iam/` subtree. Dated versions compare as
/// strings because they are ISO dates; `1.0` sorts before all of them.
pub(crate) fn has_iam(version: &str) -> bool {
    version == "latest" || version >= FIRST_IAM_VERSION
}

/// A node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// A directory.
    Dir(Dir),
    /// A value.
    Leaf(Leaf),
}

/// A directory and its rendered listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dir {
    children: Vec<(String, Node)>,
    listing: Bytes,
}

/// A value and its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leaf {
    pub(crate) body: Bytes,
    pub(crate) content_type: ContentType,
}

impl Dir {
    /// The listing: one entry a line, subdirectories ending in `/`, no final
    /// newline.
    pub(crate) fn listing(&self) -> &Bytes {
        &self.listing
    }

    /// Walks `segments` down from this directory.
    pub(crate) fn find(&self, segments: &[&str]) -> Option<&Node> {
        let (first, rest) = segments.split_first()?;
        let child = self
            .children
            .iter()
            .find_map(|(name, node)| (name == first).then_some(node))?;
        match (child, rest.is_empty()) {
            (node, true) => Some(node),
            (Node::Dir(dir), false) => dir.find(rest),
            (Node::Leaf(_), false) => None,
        }
    }
}

/// Builds a `Dir`. Entries keep the order they are added in, because some
/// listings are not alphabetical (`public-keys/` is by index).
#[derive(Debug, Default)]
pub(crate) struct DirBuilder {
    entries: Vec<(String, String, Node)>,
}

impl DirBuilder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A `text/plain` value.
    pub(crate) fn text(self, name: &str, value: impl Into<String>) -> Self {
        let body = Bytes::from(value.into());
        self.node(
            name,
            name,
            Node::Leaf(Leaf {
                body,
                content_type: ContentType::TextPlain,
            }),
        )
    }

    /// A `text/plain` value that is only present when `value` is.
    pub(crate) fn text_opt(self, name: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(value) => self.text(name, value),
            None => self,
        }
    }

    /// A multi-line value (one item a line, no final newline).
    pub(crate) fn lines(self, name: &str, items: &[String]) -> Self {
        self.text(name, items.join("\n"))
    }

    /// A subdirectory, listed as `name/`.
    pub(crate) fn dir(self, name: &str, dir: DirBuilder) -> Self {
        let listed = format!("{name}/");
        self.node(name, &listed, Node::Dir(dir.build()))
    }

    /// A subdirectory listed under another name (`public-keys/0=name`).
    pub(crate) fn dir_listed_as(self, name: &str, listed_as: &str, dir: DirBuilder) -> Self {
        self.node(name, listed_as, Node::Dir(dir.build()))
    }

    fn node(mut self, name: &str, listed_as: &str, node: Node) -> Self {
        self.entries
            .push((name.to_owned(), listed_as.to_owned(), node));
        self
    }

    pub(crate) fn build(self) -> Dir {
        let listing: Vec<&str> = self.entries.iter().map(|(_, l, _)| l.as_str()).collect();
        let listing = Bytes::from(listing.join("\n"));
        let children = self
            .entries
            .into_iter()
            .map(|(n, _, node)| (n, node))
            .collect();
        Dir { children, listing }
    }
}

/// The whole static tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Catalog {
    /// `GET /`.
    pub(crate) versions: Bytes,
    /// `GET /<version>/`.
    pub(crate) version_root: Bytes,
    /// `meta-data/` without `iam/`.
    pub(crate) meta_data: Dir,
    /// The `meta-data/` listing for a caller that has a role: with `iam/`.
    pub(crate) meta_data_listing_with_iam: Bytes,
    /// `dynamic/`.
    pub(crate) dynamic: Dir,
    /// `user-data`.
    pub(crate) user_data: Option<Bytes>,
}

impl Catalog {
    pub(crate) fn build(data: &InstanceData) -> Self {
        let meta_data = meta_data(data, false).build();
        let meta_data_listing_with_iam = meta_data_listing(data, true);
        let mut root = vec!["dynamic", "meta-data"];
        if data.user_data.is_some() {
            root.push("user-data");
        }
        Catalog {
            versions: Bytes::from(VERSIONS.join("\n")),
            version_root: Bytes::from(root.join("\n")),
            meta_data,
            meta_data_listing_with_iam,
            dynamic: dynamic(data).build(),
            user_data: data.user_data.clone(),
        }
    }
}

/// The listing of `meta-data/` with or without `iam/`. Built from the same
/// builder as the tree so the two can't disagree.
fn meta_data_listing(data: &InstanceData, with_iam: bool) -> Bytes {
    meta_data(data, with_iam).build().listing
}

fn meta_data(data: &InstanceData, with_iam: bool) -> DirBuilder {
    let mut b = DirBuilder::new()
        .text("ami-id", &data.ami_id)
        .text("ami-launch-index", data.ami_launch_index.to_string())
        .text("ami-manifest-path", &data.ami_manifest_path)
        .dir("block-device-mapping", pairs(&data.block_device_mapping))
        .text("hostname", &data.hostname);
    if with_iam {
        // Only the listing needs the entry; `iam/` itself is served by iam.rs.
        b = b.dir("iam", DirBuilder::new());
    }
    b = b
        .text("instance-id", &data.instance_id)
        .text("instance-life-cycle", &data.instance_life_cycle)
        .text("instance-type", &data.instance_type)
        .text("local-hostname", &data.local_hostname)
        .text("local-ipv4", data.local_ipv4.to_string())
        .text("mac", &data.mac)
        .dir("network", network(data))
        .dir(
            "placement",
            DirBuilder::new()
                .text("availability-zone", &data.availability_zone)
                .text("availability-zone-id", &data.availability_zone_id)
                .text("region", &data.region),
        )
        .text("profile", &data.profile)
        .text_opt("public-hostname", data.public_hostname.clone())
        .text_opt("public-ipv4", data.public_ipv4.map(|ip| ip.to_string()));
    if !data.public_keys.is_empty() {
        b = b.dir("public-keys", public_keys(&data.public_keys));
    }
    b = b
        .text("reservation-id", &data.reservation_id)
        .lines("security-groups", &data.security_groups)
        .dir(
            "services",
            DirBuilder::new()
                .text("domain", &data.domain)
                .text("partition", &data.partition),
        );
    if let Some(tags) = &data.tags {
        b = b.dir("tags", DirBuilder::new().dir("instance", pairs(tags)));
    }
    b
}

fn pairs(items: &[(String, String)]) -> DirBuilder {
    items
        .iter()
        .fold(DirBuilder::new(), |b, (k, v)| b.text(k, v.as_str()))
}

fn public_keys(keys: &[(String, String)]) -> DirBuilder {
    keys.iter()
        .enumerate()
        .fold(DirBuilder::new(), |b, (i, (name, key))| {
            let index = i.to_string();
            let listed = format!("{index}={name}");
            b.dir_listed_as(
                &index,
                &listed,
                DirBuilder::new().text("openssh-key", key.as_str()),
            )
        })
}

fn network(data: &InstanceData) -> DirBuilder {
    let n = &data.network;
    let interface = DirBuilder::new()
        .text("device-number", "0")
        .text("interface-id", &n.interface_id)
        .text("local-hostname", &data.local_hostname)
        .text("local-ipv4s", data.local_ipv4.to_string())
        .text("mac", &data.mac)
        .text("owner-id", &data.account_id)
        .text_opt("public-hostname", data.public_hostname.clone())
        .text_opt("public-ipv4s", data.public_ipv4.map(|ip| ip.to_string()))
        .lines("security-group-ids", &n.security_group_ids)
        .lines("security-groups", &data.security_groups)
        .text("subnet-id", &n.subnet_id)
        .text("subnet-ipv4-cidr-block", &n.subnet_ipv4_cidr_block)
        .text("vpc-id", &n.vpc_id)
        .text("vpc-ipv4-cidr-block", &n.vpc_ipv4_cidr_block)
        .text("vpc-ipv4-cidr-blocks", &n.vpc_ipv4_cidr_block);
    DirBuilder::new().dir(
        "interfaces",
        DirBuilder::new().dir("macs", DirBuilder::new().dir(&data.mac, interface)),
    )
}

fn dynamic(data: &InstanceData) -> DirBuilder {
    DirBuilder::new().dir(
        "instance-identity",
        DirBuilder::new().text("document", identity_document(data)),
    )
}

/// `dynamic/instance-identity/document`, fields in EC2's order.
pub fn identity_document(data: &InstanceData) -> String {
    let pending = iso8601(data.pending_time);
    let private_ip = data.local_ipv4.to_string();
    object(&[
        ("accountId", Value::Str(&data.account_id)),
        ("architecture", Value::Str(&data.architecture)),
        ("availabilityZone", Value::Str(&data.availability_zone)),
        ("billingProducts", Value::Null),
        ("devpayProductCodes", Value::Null),
        ("marketplaceProductCodes", Value::Null),
        ("imageId", Value::Str(&data.ami_id)),
        ("instanceId", Value::Str(&data.instance_id)),
        ("instanceType", Value::Str(&data.instance_type)),
        ("kernelId", Value::Null),
        ("pendingTime", Value::Str(&pending)),
        ("privateIp", Value::Str(&private_ip)),
        ("ramdiskId", Value::Null),
        ("region", Value::Str(&data.region)),
        ("version", Value::Str("2017-09-30")),
    ])
}
