//! Proxy mode's policy: which paths the agent forwards to the real IMDS
//! (on EC2 hosts), and how forwarded directory listings are trimmed. Denies
//! by default; never forwards the instance's credentials.
//!
//! An allowlist entry is a path below the version, without a leading `/`:
//! `meta-data/instance-id` allows that value; `meta-data/placement/` (a
//! trailing `/`) allows the directory and everything under it. A directory
//! that is only partly allowed (`meta-data/`, when some of its children
//! are) is forwarded with its listing trimmed to the allowed children.
//!
//! The agent's own paths are never forwarded: the token endpoint and
//! `meta-data/iam/` (the workload's role, served by the agent). Neither is
//! `meta-data/identity-credentials/`, the instance's own EC2 credentials.

use bytes::Bytes;

/// Paths no allowlist may name: the agent serves `iam/` itself, and the
/// instance's identity credentials must never reach a workload.
const NEVER: &[&str] = &["meta-data/iam", "meta-data/identity-credentials"];

/// The default allowlist: what EC2 tells about the instance, without
/// anything that can hold a secret (user data, credentials) or that
/// belongs to the agent (`iam/`).
pub const DEFAULT_ALLOW: &[&str] = &[
    "meta-data/ami-id",
    "meta-data/ami-launch-index",
    "meta-data/ami-manifest-path",
    "meta-data/autoscaling/",
    "meta-data/block-device-mapping/",
    "meta-data/events/",
    "meta-data/hostname",
    "meta-data/instance-action",
    "meta-data/instance-id",
    "meta-data/instance-life-cycle",
    "meta-data/instance-type",
    "meta-data/local-hostname",
    "meta-data/local-ipv4",
    "meta-data/mac",
    "meta-data/network/",
    "meta-data/placement/",
    "meta-data/public-hostname",
    "meta-data/public-ipv4",
    "meta-data/public-keys/",
    "meta-data/reservation-id",
    "meta-data/security-groups",
    "meta-data/services/",
    "meta-data/spot/",
    "meta-data/tags/",
    "dynamic/instance-identity/",
];

/// A rejected allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowError {
    /// Not a path below the version.
    #[error(
        "{0:?} is not a path below the version (\"meta-data/instance-id\", \"meta-data/placement/\")"
    )]
    Malformed(String),
    /// A path the agent never forwards.
    #[error(
        "{0:?} is never forwarded: the agent serves iam/ itself, and identity-credentials/ are the instance's own"
    )]
    Never(String),
}

/// The paths forwarded to the real IMDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    /// Leaves and directories (ending in `/`), checked.
    entries: Vec<String>,
}

/// What to do with a path below the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Forward it as it is.
    Forward,
    /// Forward it and keep only these children of its listing (names
    /// without the trailing `/`).
    ForwardListing(Vec<String>),
    /// Not forwarded: 404.
    Deny,
}

impl Allowlist {
    /// Checks `entries`.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<Self, AllowError> {
        let mut checked = Vec::new();
        for entry in entries {
            let entry = entry.as_ref();
            let path = entry.strip_suffix('/').unwrap_or(entry);
            let segments: Vec<&str> = path.split('/').collect();
            let well_formed = !path.is_empty()
                && segments.iter().all(|s| {
                    !s.is_empty()
                        && *s != "."
                        && *s != ".."
                        && s.bytes().all(|b| b.is_ascii_graphic())
                })
                && matches!(segments[0], "meta-data" | "dynamic" | "user-data");
            if !well_formed {
                return Err(AllowError::Malformed(entry.to_owned()));
            }
            if NEVER
                .iter()
                .any(|never| is_within(path, never) || is_within(never, path))
            {
                return Err(AllowError::Never(entry.to_owned()));
            }
            checked.push(entry.to_owned());
        }
        Ok(Self { entries: checked })
    }

    /// The default list.
    pub fn default_list() -> Self {
        Self::new(DEFAULT_ALLOW).expect("the default allowlist is valid")
    }

    /// The route for `rel`, the path's segments below the version.
    pub fn route(&self, rel: &[&str]) -> Route {
        let path = rel.join("/");
        if NEVER.iter().any(|never| is_within(&path, never)) {
            return Route::Deny;
        }
        let covered = self
            .entries
            .iter()
            .any(|entry| match entry.strip_suffix('/') {
                Some(dir) => is_within(&path, dir),
                None => *entry == path,
            });
        if covered {
            return Route::Forward;
        }
        // A directory some entries lie under: its listing, trimmed.
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut children: Vec<String> = self
            .entries
            .iter()
            .filter_map(|entry| entry.strip_prefix(&prefix))
            .filter_map(|rest| rest.split('/').next())
            .filter(|child| !child.is_empty())
            .map(str::to_owned)
            .collect();
        children.sort();
        children.dedup();
        if children.is_empty() {
            Route::Deny
        } else {
            Route::ForwardListing(children)
        }
    }
}

/// Whether `path` is `dir` or below it.
fn is_within(path: &str, dir: &str) -> bool {
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Trims a forwarded listing `body` to `keep`'s children, and adds the
/// agent's own `extra` entries (`iam/` in `meta-data/` for a caller with a
/// role). Entries keep their form (`placement/` stays a directory).
pub fn trim_listing(body: &[u8], keep: &[String], extra: &[&str]) -> Bytes {
    let text = String::from_utf8_lossy(body);
    let mut lines: Vec<&str> = text
        .split('\n')
        .filter(|line| {
            let name = line.strip_suffix('/').unwrap_or(line);
            keep.iter().any(|k| k == name)
        })
        .collect();
    lines.extend_from_slice(extra);
    lines.sort_unstable();
    lines.dedup();
    Bytes::from(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(list: &Allowlist, path: &str) -> Route {
        let rel: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        list.route(&rel)
    }

    #[test]
    fn default_routes() {
        let list = Allowlist::default_list();
        assert_eq!(route(&list, "meta-data/instance-id"), Route::Forward);
        assert_eq!(
            route(&list, "meta-data/placement/availability-zone"),
            Route::Forward
        );
        assert_eq!(route(&list, "meta-data/placement"), Route::Forward);
        assert_eq!(
            route(&list, "dynamic/instance-identity/document"),
            Route::Forward
        );
        assert_eq!(
            route(&list, "meta-data/iam/security-credentials/x"),
            Route::Deny
        );
        assert_eq!(
            route(
                &list,
                "meta-data/identity-credentials/ec2/security-credentials/ec2-instance"
            ),
            Route::Deny
        );
        assert_eq!(route(&list, "meta-data/identity-credentials"), Route::Deny);
        assert_eq!(
            route(&list, "user-data"),
            Route::Deny,
            "user data may hold secrets: opt-in"
        );
        assert_eq!(route(&list, "meta-data/instance-idx"), Route::Deny);
        assert_eq!(route(&list, "meta-data/unknown/thing"), Route::Deny);
        let Route::ForwardListing(children) = route(&list, "meta-data") else {
            panic!()
        };
        assert!(
            children.contains(&"instance-id".to_owned())
                && children.contains(&"placement".to_owned())
        );
        assert!(
            !children
                .iter()
                .any(|c| c == "iam" || c == "identity-credentials")
        );
        assert_eq!(
            route(&list, ""),
            Route::ForwardListing(vec!["dynamic".into(), "meta-data".into()])
        );
        assert_eq!(
            route(&list, "dynamic"),
            Route::ForwardListing(vec!["instance-identity".into()])
        );
    }

    #[test]
    fn entries_are_checked() {
        assert!(Allowlist::new(&["user-data", "meta-data/tags/instance/Name"]).is_ok());
        for never in [
            "meta-data/iam/",
            "meta-data/iam/info",
            "meta-data/identity-credentials/",
            "meta-data/",
        ] {
            assert!(
                matches!(Allowlist::new(&[never]), Err(AllowError::Never(_))),
                "{never}"
            );
        }
        for bad in [
            "/meta-data/x",
            "meta-data//x",
            "meta-data/../iam",
            "",
            "latest/meta-data/x",
            "meta-data/a b",
        ] {
            assert!(
                matches!(Allowlist::new(&[bad]), Err(AllowError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn listings_are_trimmed_and_extended() {
        let upstream = b"ami-id\nhostname\niam/\nidentity-credentials/\ninstance-id\nplacement/";
        let keep = vec![
            "instance-id".to_owned(),
            "placement".to_owned(),
            "hostname".to_owned(),
        ];
        assert_eq!(
            trim_listing(upstream, &keep, &["iam/"]),
            Bytes::from_static(b"hostname\niam/\ninstance-id\nplacement/")
        );
        assert_eq!(
            trim_listing(upstream, &keep, &[]),
            Bytes::from_static(b"hostname\ninstance-id\nplacement/")
        );
    }
}
