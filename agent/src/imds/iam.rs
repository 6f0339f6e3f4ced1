//! The `meta-data/iam/` subtree, which differs per caller: a caller sees its
//! own role and nothing else, and a caller without a role sees no `iam/` at
//! all (every path under it is the same 404 as a path that never existed).

use std::time::SystemTime;

use bytes::Bytes;

use super::json::{Value, object};
use super::response::{Class, ContentType, Response};
use crate::creds::{CredentialSource, Credentials, Lookup, Role, Unavailable, unique_id};
use crate::timefmt::iso8601;

/// The instance's account, where `iam/info` places the instance profile:
/// on EC2 a profile lives in the instance's account whatever role it holds,
/// so `iam/info` and the identity document always agree on the account.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Home<'a> {
    pub(crate) account_id: &'a str,
    pub(crate) partition: &'a str,
}

/// What `meta-data/iam/<rest>` names for a caller with a role named
/// `role_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IamPath {
    /// `iam/` itself.
    Listing,
    /// `iam/info`.
    Info,
    /// `iam/security-credentials[-extended]/`: the role's name.
    RoleName,
    /// The caller's own credentials document.
    Credentials { extended: bool },
    /// Anything else (another role's name included).
    NotFound,
}

impl IamPath {
    pub(crate) fn of(rest: &[&str], role_name: &str) -> Self {
        match rest {
            [] => IamPath::Listing,
            ["info"] => IamPath::Info,
            ["security-credentials" | "security-credentials-extended"] => IamPath::RoleName,
            [
                kind @ ("security-credentials" | "security-credentials-extended"),
                name,
            ] if *name == role_name => IamPath::Credentials {
                extended: *kind == "security-credentials-extended",
            },
            _ => IamPath::NotFound,
        }
    }

    /// Whether an SDK reads it on its way to credentials (the role's name,
    /// `info`, the document): where a first request waits for its fetch.
    pub(crate) fn leads_to_credentials(self) -> bool {
        matches!(
            self,
            IamPath::Info | IamPath::RoleName | IamPath::Credentials { .. }
        )
    }
}

/// Answers `meta-data/iam/<rest>` for a caller with `role`.
pub(crate) fn respond(
    rest: &[&str],
    role: Option<&Role>,
    home: Home<'_>,
    source: &dyn CredentialSource,
    now: SystemTime,
) -> Response {
    let Some(role) = role else {
        return Response::not_found(Class::Iam);
    };
    let listing = |body: &str| {
        Response::ok(
            ContentType::TextPlain,
            Bytes::from(body.to_owned()),
            Class::Iam,
        )
    };
    let name = source.served_name(role);
    match IamPath::of(rest, &name) {
        IamPath::Listing => listing("info\nsecurity-credentials/"),
        IamPath::Info => info(role, home, &source.lookup(role, now)),
        IamPath::RoleName => listing(&name),
        IamPath::Credentials { extended } => {
            credentials(role, home, &source.lookup(role, now), extended)
        }
        IamPath::NotFound => Response::not_found(Class::Iam),
    }
}

fn info(role: &Role, home: Home<'_>, lookup: &Lookup) -> Response {
    let body = match lookup {
        Lookup::Ready(c) => {
            let updated = iso8601(c.last_updated);
            // A profile named after the role, as the console creates them,
            // with an id that is stable for its ARN.
            let profile_arn = format!(
                "arn:{}:iam::{}:instance-profile/{}",
                home.partition, home.account_id, role.name
            );
            let profile_id = unique_id("AIPA", &profile_arn);
            object(&[
                ("Code", Value::Str("Success")),
                ("LastUpdated", Value::Str(&updated)),
                ("InstanceProfileArn", Value::Str(&profile_arn)),
                ("InstanceProfileId", Value::Str(&profile_id)),
            ])
        }
        Lookup::Unavailable(u) => failure(u),
    };
    Response::ok(ContentType::TextPlain, Bytes::from(body), Class::Iam)
}

fn credentials(role: &Role, home: Home<'_>, lookup: &Lookup, extended: bool) -> Response {
    let (body, key_suffix) = match lookup {
        // With its account known, a document depends on nothing but the
        // credentials: render it once.
        Lookup::Ready(c) if c.account_id.is_some() => (
            c.rendered.get(extended, || {
                Bytes::from(credentials_document(role, home, c, extended))
            }),
            Some(c.keys.suffix()),
        ),
        Lookup::Ready(c) => (
            Bytes::from(credentials_document(role, home, c, extended)),
            Some(c.keys.suffix()),
        ),
        Lookup::Unavailable(u) => (Bytes::from(failure(u)), None),
    };
    let mut response = Response::ok(ContentType::TextPlain, body, Class::Credentials);
    response.key_suffix = key_suffix;
    response
}

/// The credentials document, in EC2's field order; the extended form adds
/// `AccountId` (read by the JS, Java, Ruby and PHP SDKs): the account the
/// credentials belong to, as STS said, else the role's, else the instance's.
fn credentials_document(role: &Role, home: Home<'_>, c: &Credentials, extended: bool) -> String {
    let updated = iso8601(c.last_updated);
    let expiration = iso8601(c.expiration);
    let mut fields = vec![
        ("Code", Value::Str("Success")),
        ("LastUpdated", Value::Str(&updated)),
        ("Type", Value::Str("AWS-HMAC")),
        ("AccessKeyId", Value::Str(&c.keys.access_key_id)),
        (
            "SecretAccessKey",
            Value::Str(c.keys.secret_access_key.expose()),
        ),
        ("Token", Value::Str(c.keys.session_token.expose())),
        ("Expiration", Value::Str(&expiration)),
    ];
    if extended {
        let account = c
            .account_id
            .as_deref()
            .or(role.spec.account_id())
            .unwrap_or(home.account_id);
        fields.push(("AccountId", Value::Str(account)));
    }
    object(&fields)
}

/// What EC2 serves when it cannot get a role's credentials: a 200 whose
/// `Code` names the problem. botocore then finds no keys and moves on; the
/// Rust SDK reports the code.
fn failure(u: &Unavailable) -> String {
    let updated = iso8601(u.last_updated);
    object(&[
        ("Code", Value::Str(&u.code)),
        ("Message", Value::Str(&u.message)),
        ("LastUpdated", Value::Str(&updated)),
    ])
}
