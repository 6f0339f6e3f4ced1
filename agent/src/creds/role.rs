//! Role names as users write them, and roles as assignments give them.
//!
//! Three forms are accepted wherever a role is named (config, assignment
//! files, a container's `IAM_ROLE`):
//! - `name`: the role in the default account (the configured account, else
//!   the account of the agent's own credentials);
//! - `name@123456789012`: the role in that account;
//! - `arn:<partition>:iam::<account>:role[/path/]name`: exactly that role.
//!
//! A name may hold `${aws:username}`, as aws-mock-metadata allows: the
//! user name of the agent's own credentials (an IAM user's), so one config
//! serves each developer their own role (`dev-${aws:username}`).

use std::fmt;
use std::time::Duration;

use ring::digest;

/// A role as written, not yet tied to an account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RoleSpec {
    name: String,
    path: String,
    account_id: Option<String>,
    partition: Option<String>,
}

/// How a role's session is opened: the optional parameters of AssumeRole.
/// Part of the cache key: two assignments of one role with different
/// parameters get separate sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SessionParams {
    /// `ExternalId`.
    pub external_id: Option<String>,
    /// `RoleSessionName`, already valid for STS.
    pub session_name: Option<String>,
    /// `DurationSeconds`.
    pub duration: Option<Duration>,
    /// `SourceIdentity`, already valid for STS.
    pub source_identity: Option<String>,
    /// Session tags, in order.
    pub tags: Vec<(String, String)>,
}

/// A role as an assignment gives it to a workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Role {
    /// The role's name: what `iam/security-credentials/` lists.
    pub name: String,
    /// The role as written.
    pub spec: RoleSpec,
    /// How its session is opened.
    pub session: SessionParams,
}

/// Why a role name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// Empty.
    #[error("the role is empty")]
    Empty,
    /// Not a valid IAM role name.
    #[error("{0:?} is not a valid role name: 1 to 64 characters of letters, digits and +=,.@_-")]
    Name(String),
    /// `@` followed by something that is not an account id.
    #[error("{0:?}: after '@' expected a 12-digit account id")]
    Account(String),
    /// An ARN that is not an IAM role ARN.
    #[error(
        "{0:?} is not an IAM role ARN (arn:<aws|aws-cn|aws-us-gov>:iam::<12-digit account>:role/[path/]name)"
    )]
    Arn(String),
    /// A bare name when no account is known yet.
    #[error("role {0:?} names no account, and the default account is not known yet")]
    NoAccount(String),
    /// `${aws:username}` with credentials that are not an IAM user's.
    #[error(
        "the role names ${{aws:username}}, and the agent's own credentials are not an IAM user's ({0})"
    )]
    NoUserName(String),
}

/// The variable a role name may hold: the agent's own IAM user's name.
const USERNAME_VARIABLE: &str = "${aws:username}";

const PARTITIONS: &[&str] = &["aws", "aws-cn", "aws-us-gov"];

impl RoleSpec {
    /// Parses any of the three forms.
    pub fn parse(spec: &str) -> Result<Self, RoleError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(RoleError::Empty);
        }
        if spec.starts_with("arn:") {
            return parse_arn(spec);
        }
        let (name, account_id) = match spec.rsplit_once('@') {
            Some((name, account)) if is_account_id(account) => (name, Some(account.to_owned())),
            Some(_) => return Err(RoleError::Account(spec.to_owned())),
            None => (spec, None),
        };
        check_name(name)?;
        Ok(RoleSpec {
            name: name.to_owned(),
            path: "/".to_owned(),
            account_id,
            partition: None,
        })
    }

    /// The role's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the name holds `${aws:username}`.
    pub fn names_user(&self) -> bool {
        self.name.contains(USERNAME_VARIABLE)
    }

    /// The name with `${aws:username}` replaced by `user`.
    pub fn name_for(&self, user: &str) -> String {
        self.name.replace(USERNAME_VARIABLE, user)
    }

    /// The role for the caller whose ARN is `caller_arn` (what
    /// GetCallerIdentity says): `${aws:username}` becomes the IAM user's
    /// name (the ARN's last segment, after any path). Another caller (an
    /// assumed role, a federated user) has no user name.
    pub fn for_caller(&self, caller_arn: &str) -> Result<RoleSpec, RoleError> {
        if !self.names_user() {
            return Ok(self.clone());
        }
        let user =
            user_name(caller_arn).ok_or_else(|| RoleError::NoUserName(caller_arn.to_owned()))?;
        let name = self.name_for(user);
        check_name(&name)?;
        Ok(RoleSpec {
            name,
            ..self.clone()
        })
    }

    /// The account, when the spec names one.
    pub fn account_id(&self) -> Option<&str> {
        self.account_id.as_deref()
    }

    /// The role's ARN: its own account, else `default_account`; the ARN's
    /// partition, else `default_partition`.
    pub fn arn(
        &self,
        default_account: Option<&str>,
        default_partition: &str,
    ) -> Result<String, RoleError> {
        let account_id = self
            .account_id
            .as_deref()
            .or(default_account)
            .ok_or_else(|| RoleError::NoAccount(self.name.clone()))?;
        let partition = self.partition.as_deref().unwrap_or(default_partition);
        Ok(format!(
            "arn:{partition}:iam::{account_id}:role{}{}",
            self.path, self.name
        ))
    }
}

impl Role {
    /// The role `spec`, opened with `session`.
    pub fn new(spec: RoleSpec, session: SessionParams) -> Self {
        Self {
            name: spec.name.clone(),
            spec,
            session,
        }
    }

    /// Parses `spec` into a role with default session parameters.
    pub fn parse(spec: &str) -> Result<Self, RoleError> {
        Ok(Self::new(RoleSpec::parse(spec)?, SessionParams::default()))
    }
}

impl fmt::Display for RoleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.partition, &self.account_id) {
            (Some(p), Some(a)) => write!(f, "arn:{p}:iam::{a}:role{}{}", self.path, self.name),
            (None, Some(a)) => write!(f, "{}@{a}", self.name),
            _ => f.write_str(&self.name),
        }
    }
}

fn parse_arn(arn: &str) -> Result<RoleSpec, RoleError> {
    let bad = || RoleError::Arn(arn.to_owned());
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    if !PARTITIONS.contains(&partition) || !is_account_id(account) {
        return Err(bad());
    }
    let rest = resource.strip_prefix("role/").ok_or_else(bad)?;
    let (path, name) = match rest.rfind('/') {
        Some(i) => (format!("/{}", &rest[..=i]), &rest[i + 1..]),
        None => ("/".to_owned(), rest),
    };
    let path_ok = path.len() <= 512
        && !path.contains("//")
        && path.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if !path_ok {
        return Err(bad());
    }
    check_name(name).map_err(|_| bad())?;
    Ok(RoleSpec {
        name: name.to_owned(),
        path,
        account_id: Some(account.to_owned()),
        partition: Some(partition.to_owned()),
    })
}

/// Whether `s` is a 12-digit AWS account id.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The IAM user's name in `arn` (`arn:aws:iam::123456789012:user[/path]/NAME`).
pub(crate) fn user_name(arn: &str) -> Option<&str> {
    let resource = arn.splitn(6, ':').nth(5)?;
    let rest = resource.strip_prefix("user/")?;
    let name = rest.rsplit('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// IAM's rule for role names; `${aws:username}` counts as one character
/// (what it becomes is checked once known).
fn check_name(name: &str) -> Result<(), RoleError> {
    let plain = name.replace(USERNAME_VARIABLE, "u");
    let ok = (1..=64).contains(&plain.len())
        && plain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RoleError::Name(name.to_owned()))
    }
}

/// An IAM-style unique id: `prefix` and 17 characters of base32, derived
/// from `seed` so that it is the same on every start.
pub fn unique_id(prefix: &str, seed: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = digest::digest(&digest::SHA256, seed.as_bytes());
    let mut id = String::with_capacity(prefix.len() + 17);
    id.push_str(prefix);
    id.extend(
        hash.as_ref()
            .iter()
            .take(17)
            .map(|b| char::from(ALPHABET[usize::from(b % 32)])),
    );
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_name_variable() {
        let spec = RoleSpec::parse("dev-${aws:username}").unwrap();
        assert!(spec.names_user());
        let alice = spec
            .for_caller("arn:aws:iam::123456789012:user/team/alice")
            .unwrap();
        assert_eq!(alice.name(), "dev-alice");
        assert!(!alice.names_user());
        assert_eq!(
            spec.for_caller("arn:aws:sts::123456789012:assumed-role/x/y"),
            Err(RoleError::NoUserName(
                "arn:aws:sts::123456789012:assumed-role/x/y".into()
            ))
        );
        let long = format!("arn:aws:iam::123456789012:user/{}", "a".repeat(64));
        assert!(matches!(spec.for_caller(&long), Err(RoleError::Name(_))));
        assert!(RoleSpec::parse("${aws:userid}").is_err());
        assert!(RoleSpec::parse("a${aws:username").is_err());
        let plain = RoleSpec::parse("app").unwrap();
        assert_eq!(
            plain.for_caller("arn:aws:sts::1:assumed-role/x/y").unwrap(),
            plain
        );
        assert_eq!(user_name("arn:aws:iam::123456789012:user/bob"), Some("bob"));
        assert_eq!(user_name("arn:aws:iam::123456789012:root"), None);
    }

    fn arn_of(spec: &str) -> Result<String, RoleError> {
        RoleSpec::parse(spec)?.arn(Some("111111111111"), "aws")
    }

    #[test]
    fn the_three_forms() {
        let cases = [
            ("demo", "arn:aws:iam::111111111111:role/demo"),
            ("  demo  ", "arn:aws:iam::111111111111:role/demo"),
            ("demo@222222222222", "arn:aws:iam::222222222222:role/demo"),
            ("a.b@c@333333333333", "arn:aws:iam::333333333333:role/a.b@c"),
            (
                "arn:aws:iam::444444444444:role/demo",
                "arn:aws:iam::444444444444:role/demo",
            ),
            (
                "arn:aws-cn:iam::444444444444:role/team/app/demo",
                "arn:aws-cn:iam::444444444444:role/team/app/demo",
            ),
            (
                "arn:aws-us-gov:iam::444444444444:role/x",
                "arn:aws-us-gov:iam::444444444444:role/x",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(arn_of(spec).as_deref(), Ok(want), "{spec:?}");
        }
    }

    #[test]
    fn bad_roles() {
        let cases = [
            "",
            " ",
            "demo@",
            "demo@12345",
            "demo@1234567890123",
            "demo@abcdefghijkl",
            "has space",
            "slash/name",
            &"x".repeat(65),
            "arn:aws:iam::444444444444:user/demo",
            "arn:aws:iam::44444444444:role/demo",
            "arn:aws:iam:us-east-1:444444444444:role/demo",
            "arn:aws:s3::444444444444:role/demo",
            "arn:aws-iso:iam::444444444444:role/demo",
            "arn:aws:iam::444444444444:role/",
            "arn:aws:iam::444444444444:role//demo",
            "arn:aws:iam::444444444444:role/path/",
            "arn:aws:iam::444444444444",
            "arn:",
        ];
        for spec in cases {
            assert!(arn_of(spec).is_err(), "{spec:?} was accepted");
        }
    }

    #[test]
    fn bare_name_needs_an_account() {
        let spec = RoleSpec::parse("demo").unwrap();
        assert_eq!(
            spec.arn(None, "aws"),
            Err(RoleError::NoAccount("demo".into()))
        );
        let with = RoleSpec::parse("demo@222222222222").unwrap();
        assert_eq!(
            with.arn(None, "aws-cn").unwrap(),
            "arn:aws-cn:iam::222222222222:role/demo"
        );
    }

    #[test]
    fn role_name_is_the_last_segment() {
        let role = Role::parse("arn:aws:iam::444444444444:role/team/demo").unwrap();
        assert_eq!(role.name, "demo");
        assert_eq!(role.spec.account_id(), Some("444444444444"));
    }

    #[test]
    fn unique_ids_are_stable_and_shaped_like_iam() {
        let a = unique_id("AIPA", "seed");
        assert_eq!(a, unique_id("AIPA", "seed"));
        assert_ne!(a, unique_id("AIPA", "other"));
        assert_eq!(a.len(), 21);
        assert!(
            a[4..]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            "demo",
            "demo@222222222222",
            "arn:aws:iam::444444444444:role/p/demo",
        ] {
            let parsed = RoleSpec::parse(spec).unwrap();
            assert_eq!(parsed.to_string(), spec);
            assert_eq!(RoleSpec::parse(&parsed.to_string()).unwrap(), parsed);
        }
    }
}
