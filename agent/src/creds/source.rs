//! The credential-source trait and the values it hands out.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use std::time::SystemTime;

use super::Role;

/// A string that must never reach a log: `Debug` prints a placeholder, and
/// the only way to the value is `expose`, which is easy to audit.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it to a client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One set of AWS keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `AccessKeyId`. Not secret by itself, but only its last four
    /// characters are ever logged (`key_suffix`).
    pub access_key_id: String,
    /// `SecretAccessKey`.
    pub secret_access_key: Secret,
    /// `Token` (the session token).
    pub session_token: Secret,
}

impl Keys {
    /// The access key id's suffix as a value that outlives the keys.
    pub fn suffix(&self) -> KeySuffix {
        let text = self.key_suffix();
        let mut bytes = [0u8; 16];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        KeySuffix {
            bytes,
            len: text.len() as u8,
        }
    }

    /// The last four characters of the access key id: all a log may show.
    pub fn key_suffix(&self) -> &str {
        let id = &self.access_key_id;
        let start = id.char_indices().rev().nth(3).map_or(0, |(index, _)| index);
        &id[start..]
    }
}

/// The last four characters of an access key id, held without allocating
/// (a request log carries one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySuffix {
    /// Four characters of UTF-8 take at most 16 bytes.
    bytes: [u8; 16],
    len: u8,
}

impl KeySuffix {
    /// The suffix.
    pub fn as_str(&self) -> &str {
        // Safe to unwrap because the bytes were copied from a &str at a
        // character boundary.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

/// A role's credentials as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The keys.
    pub keys: Arc<Keys>,
    /// `LastUpdated`: when these keys were obtained.
    pub last_updated: SystemTime,
    /// `Expiration`.
    pub expiration: SystemTime,
    /// The account the keys belong to, when known (the extended credentials
    /// document's `AccountId`).
    pub account_id: Option<Arc<str>>,
    /// The documents served for them, rendered on first use.
    pub rendered: Rendered,
}

/// The IMDS documents of one issue of credentials, rendered once and shared
/// by every clone: credentials never change once issued, and rendering (JSON
/// escaping of a session token of a kilobyte) is most of the work of a
/// request otherwise.
#[derive(Clone, Default)]
pub struct Rendered {
    plain: Arc<OnceLock<Bytes>>,
    extended: Arc<OnceLock<Bytes>>,
}

impl Rendered {
    /// The document (`extended` with `AccountId`), rendered by `render` the
    /// first time.
    pub fn get(&self, extended: bool, render: impl FnOnce() -> Bytes) -> Bytes {
        let cell = if extended {
            &self.extended
        } else {
            &self.plain
        };
        cell.get_or_init(render).clone()
    }
}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Rendered documents hold secrets.
        f.write_str("Rendered(..)")
    }
}

impl PartialEq for Rendered {
    /// A cache: equal whatever it holds.
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for Rendered {}

/// Why a role has no credentials to serve right now. EC2 answers this with a
/// 200 whose `Code` is not `Success` (SDKs read `Code`), so the fields are
/// what it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// EC2's code, such as `AssumeRoleUnauthorizedAccess`.
    pub code: Cow<'static, str>,
    /// A human-readable reason. Must not contain secrets; it is served to
    /// the workload.
    pub message: String,
    /// When this was last tried.
    pub last_updated: SystemTime,
}

/// The answer of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Credentials to serve.
    Ready(Credentials),
    /// None to serve, and why.
    Unavailable(Unavailable),
}

/// A future that completes when something changed.
pub type Changed = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Who is using a role's credentials, as far as the agent can check it is
/// still there: the engine keeps an entry fresh while one of its holders
/// lives, however long the workload goes between requests (SDKs come back
/// only when their copy nears expiry).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holder {
    /// A cgroup, by its id: gone when the cgroup is removed.
    Cgroup(u64),
    /// A container, by its id: gone when the container stops.
    Container(Arc<str>),
    /// A workload known only by its address: its life can't be checked.
    Unchecked,
}

/// A workload asking for a role's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// What the agent can check it by.
    pub holder: Holder,
    /// Who made it, when that may be a local user making workloads by the
    /// hundred (a user's own cgroups): the fetches that user's workloads
    /// start take turns, so they can't keep everyone else's waiting.
    /// `None` for the host's own units and containers.
    pub owner: Option<Arc<str>>,
}

/// Where the credentials for a role come from.
///
/// `lookup` is called on the request path, so it must answer from memory:
/// no STS call, no file read, no waiting on a lock held across I/O. A source
/// that has nothing yet says so with `Lookup::Unavailable` and fetches in the
/// background.
pub trait CredentialSource: Send + Sync + fmt::Debug {
    /// The credentials to serve for `role` at `now`.
    fn lookup(&self, role: &Role, now: SystemTime) -> Lookup;

    /// Called on every request that reads `role`'s credentials, before
    /// `lookup`: records that `user` uses them (they are kept fresh while it
    /// lives) and, when there is nothing to serve yet (no valid credentials
    /// and no error), makes sure a fetch is under way and returns a future
    /// that completes when it ends. The HTTP layer waits on it, for a short
    /// bounded time, so that a workload's first request gets credentials
    /// instead of an error. `None`: serve what `lookup` says now.
    fn prepare(&self, _role: &Role, _user: &User) -> Option<Changed> {
        None
    }

    /// The name `iam/security-credentials/` lists for `role`: its own, or,
    /// for a name with `${aws:username}`, the name it became once the user
    /// is known. Answered from memory.
    fn served_name<'a>(&self, role: &'a Role) -> Cow<'a, str> {
        Cow::Borrowed(&role.name)
    }

    /// How long a request for a credentials document may wait on the fetch
    /// `prepare` returned, because it waits for a person to hand in an MFA
    /// code; zero when no person is needed. Answered from memory.
    fn person_wait(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}
