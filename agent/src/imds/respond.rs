//! The protocol: one `Request` in, one `Response` out. No I/O, no clock read
//! (the caller passes `Now`), so every rule is a unit test.
//!
//! Order of checks, as EC2 applies them:
//! 1. The token path (`PUT /<version>/api/token`) is answered on its own.
//! 2. A token, when present, must be valid in every mode; in `required` mode
//!    it must be present. This happens before routing, so a missing token is
//!    401 on every path, existing or not.
//! 3. Only GET and HEAD read metadata.
//! 4. The path is looked up: static tree, per-caller IAM subtree, user data.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::catalog::{self, Catalog, Node};
use super::iam;
use super::instance::InstanceData;
use super::request::{HeaderField, Method, Path, Request};
use super::response::{Answer, Class, ContentType, Forward, Forwarded, Response};
use super::token::{TokenAuthority, parse_ttl};
use super::upstream::{Allowlist, Route};
use crate::clock::Now;
use crate::creds::{CredentialSource, Role};

/// EC2's `HttpTokens` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    /// IMDSv1 and IMDSv2 both work; a token that is sent must be valid.
    #[default]
    Optional,
    /// Every request needs a valid token (IMDSv2 only).
    Required,
}

impl HttpTokens {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpTokens::Optional => "optional",
            HttpTokens::Required => "required",
        }
    }
}

/// The protocol settings: EC2's per-instance options, and the host names
/// the agent answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `HttpTokens`.
    pub http_tokens: HttpTokens,
    /// `HttpPutResponseHopLimit`, 1 to 64.
    pub hop_limit: u8,
    /// DNS names accepted in `Host` besides IP addresses, lower case.
    pub host_names: Vec<String>,
}

/// The names clients use for IMDS besides its addresses.
pub const DEFAULT_HOST_NAMES: &[&str] =
    &["localhost", "instance-data", "instance-data.ec2.internal"];

impl Settings {
    /// Whether `host` (a `Host` header) names this IMDS: absent (HTTP/1.0),
    /// an IP address, or one of `host_names`, with or without a port.
    pub fn host_allowed(&self, host: HeaderField<'_>) -> bool {
        let value = match host {
            HeaderField::Absent => return true,
            HeaderField::Malformed => return false,
            HeaderField::One(value) => value,
        };
        if let Some(rest) = value.strip_prefix('[') {
            return rest.split_once(']').is_some_and(|(ip, port)| {
                ip.parse::<std::net::Ipv6Addr>().is_ok() && is_port_suffix(port)
            });
        }
        let name = match value.rsplit_once(':') {
            Some((name, port)) if is_port_suffix(&format!(":{port}")) => name,
            Some(_) => return false,
            None => value,
        };
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return true;
        }
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        self.host_names.contains(&name)
    }
}

/// `""` or `:` and 1 to 5 digits.
fn is_port_suffix(s: &str) -> bool {
    s.is_empty()
        || s.strip_prefix(':')
            .is_some_and(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Who is asking, as far as the protocol cares.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The caller's identity, as bytes a token is bound to. Two callers
    /// with different bindings can't use each other's tokens.
    pub binding: &'a [u8],
    /// The caller's role, if it has one.
    pub role: Option<&'a Role>,
}

/// The IMDS of one agent.
#[derive(Debug)]
pub struct Imds {
    /// Replaced whole by a config reload (`replace_instance`).
    catalog: ArcSwap<Catalog>,
    account_id: String,
    partition: String,
    tokens: TokenAuthority,
    settings: Settings,
    credentials: Arc<dyn CredentialSource>,
    upstream: Option<Allowlist>,
}

impl Imds {
    /// An IMDS serving `data`, minting tokens with `tokens`, and answering
    /// credential paths from `credentials`.
    pub fn new(
        data: &InstanceData,
        settings: Settings,
        tokens: TokenAuthority,
        credentials: Arc<dyn CredentialSource>,
    ) -> Self {
        Self {
            catalog: ArcSwap::from_pointee(Catalog::build(data)),
            account_id: data.account_id.clone(),
            partition: data.partition.clone(),
            tokens,
            settings,
            credentials,
            upstream: None,
        }
    }

    /// Proxy mode: instance metadata comes from the real IMDS, for the
    /// paths `allow` lets through; the agent still answers tokens and
    /// `iam/` itself.
    pub fn with_upstream(mut self, allow: Allowlist) -> Self {
        self.upstream = Some(allow);
        self
    }

    /// Serves `data` from now on (a config reload). The account and the
    /// partition stay: role ARNs and rules were resolved with them, so a
    /// change to those needs a restart, and the caller keeps them.
    pub fn replace_instance(&self, data: &InstanceData) {
        self.catalog.store(Arc::new(Catalog::build(data)));
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Answers one request.
    pub fn respond(&self, req: &Request<'_>, caller: &Caller<'_>, now: Now) -> Answer {
        if !self.settings.host_allowed(req.host) {
            return Answer::Local(Response::forbidden_host());
        }
        let path = Path::parse(req.path);
        if let Some(path) = &path
            && is_token_path(path)
        {
            return Answer::Local(self.token_endpoint(req, path, caller, now));
        }
        let token_ttl = match self.check_token(req, caller, now) {
            Ok(ttl) => ttl,
            Err(refused) => return Answer::Local(refused),
        };
        if !matches!(req.method, Method::Get | Method::Head) {
            return Answer::Local(Response::method_not_allowed("GET, HEAD", Class::Refused));
        }
        let Some(path) = path else {
            return Answer::Local(Response::not_found(Class::Metadata));
        };
        match self.lookup(&path, caller, now) {
            Answer::Local(mut response) => {
                if response.status.is_success() {
                    response.token_ttl = token_ttl;
                }
                Answer::Local(response)
            }
            Answer::Forward(mut forwarded) => {
                forwarded.token_ttl = token_ttl;
                Answer::Forward(forwarded)
            }
        }
    }

    /// Whether `req` would be answered with the caller's own credentials,
    /// or with the role listing or `iam/info` an SDK reads first: a GET or
    /// HEAD with a valid token (where one is required) of `iam/info`,
    /// `iam/security-credentials[-extended]/` or `…/<the caller's role>`.
    /// Only these start (and wait for) the role's first fetch: a tokenless
    /// or misdirected request costs no STS call.
    pub fn asks_for_credentials(&self, req: &Request<'_>, caller: &Caller<'_>, now: Now) -> bool {
        self.credentials_path(req, caller, now).is_some()
    }

    /// Whether `req` is one `asks_for_credentials` allows, for the
    /// credentials document itself (not the role's name or `iam/info`):
    /// the one request that may wait for a person's MFA code.
    pub fn asks_for_document(&self, req: &Request<'_>, caller: &Caller<'_>, now: Now) -> bool {
        matches!(
            self.credentials_path(req, caller, now),
            Some(iam::IamPath::Credentials { .. })
        )
    }

    fn credentials_path(
        &self,
        req: &Request<'_>,
        caller: &Caller<'_>,
        now: Now,
    ) -> Option<iam::IamPath> {
        let role = caller.role?;
        if !self.settings.host_allowed(req.host)
            || !matches!(req.method, Method::Get | Method::Head)
        {
            return None;
        }
        let path = Path::parse(req.path)?;
        let [version, "meta-data", "iam", rest @ ..] = path.segments() else {
            return None;
        };
        let iam_path = iam::IamPath::of(rest, &self.credentials.served_name(role));
        (iam_path.leads_to_credentials()
            && catalog::is_version(version)
            && catalog::has_iam(version)
            && self.check_token(req, caller, now).is_ok())
        .then_some(iam_path)
    }

    /// `PUT /<version>/api/token`.
    fn token_endpoint(
        &self,
        req: &Request<'_>,
        path: &Path<'_>,
        caller: &Caller<'_>,
        now: Now,
    ) -> Response {
        match req.method {
            Method::Put => {}
            Method::Options => {
                let mut ok = Response::ok(ContentType::TextPlain, Default::default(), Class::Token);
                ok.allow = Some("OPTIONS, PUT");
                return ok;
            }
            _ => return Response::method_not_allowed("OPTIONS, PUT", Class::Token),
        }
        // EC2 refuses a proxied PUT, so a token can't be minted for a remote
        // client through a misconfigured proxy on the host. It also refuses
        // `/latest/api/token/` with a 403.
        if req.forwarded_for || path.trailing_slash {
            return Response::forbidden();
        }
        let ttl = match req.token_ttl {
            HeaderField::One(value) => match parse_ttl(value) {
                Ok(ttl) => ttl,
                Err(_) => return Response::bad_request(),
            },
            HeaderField::Absent | HeaderField::Malformed => return Response::bad_request(),
        };
        let token = self.tokens.mint(caller.binding, ttl, now.mono);
        let mut ok = Response::ok(ContentType::TextPlain, token.into(), Class::Token);
        ok.token_ttl = Some(ttl);
        ok.hop_limit = Some(self.settings.hop_limit);
        ok
    }

    /// Checks the token of a metadata request: `Ok(Some(seconds left))` for
    /// a valid token, `Ok(None)` for none where none is needed.
    fn check_token(
        &self,
        req: &Request<'_>,
        caller: &Caller<'_>,
        now: Now,
    ) -> Result<Option<u32>, Response> {
        match req.token {
            HeaderField::Absent => match self.settings.http_tokens {
                HttpTokens::Optional => Ok(None),
                HttpTokens::Required => Err(Response::unauthorized()),
            },
            HeaderField::One(token) => self
                .tokens
                .verify(token, caller.binding, now.mono)
                .map(Some)
                .map_err(|_| Response::unauthorized()),
            HeaderField::Malformed => Err(Response::unauthorized()),
        }
    }

    fn lookup(&self, path: &Path<'_>, caller: &Caller<'_>, now: Now) -> Answer {
        let (version, rest) = match path.segments() {
            [] => return Answer::Local(listing(&self.catalog.load().versions)),
            [version, rest @ ..] if catalog::is_version(version) => (*version, rest),
            _ => return Answer::Local(Response::not_found(Class::Metadata)),
        };
        if let Some(allow) = &self.upstream {
            return self.proxied(allow, path, version, rest, caller, now);
        }
        Answer::Local(self.local(version, rest, caller, now))
    }

    /// The agent's own answer for `/<version>/<rest…>`.
    fn local(&self, version: &str, rest: &[&str], caller: &Caller<'_>, now: Now) -> Response {
        let tree = self.catalog.load();
        match rest {
            [] => listing(&tree.version_root),
            ["meta-data", tail @ ..] => self.meta_data(version, tail, caller, now),
            ["dynamic", tail @ ..] => match tail {
                [] => listing(tree.dynamic.listing()),
                _ => node(tree.dynamic.find(tail), Class::Metadata),
            },
            ["user-data"] => match &tree.user_data {
                Some(data) => Response::ok(ContentType::OctetStream, data.clone(), Class::UserData),
                None => Response::not_found(Class::UserData),
            },
            _ => Response::not_found(Class::Metadata),
        }
    }

    fn meta_data(&self, version: &str, tail: &[&str], caller: &Caller<'_>, now: Now) -> Response {
        let with_iam = catalog::has_iam(version);
        let tree = self.catalog.load();
        match tail {
            [] if with_iam && caller.role.is_some() => listing(&tree.meta_data_listing_with_iam),
            [] => listing(tree.meta_data.listing()),
            ["iam", rest @ ..] if with_iam => {
                let home = iam::Home {
                    account_id: &self.account_id,
                    partition: &self.partition,
                };
                iam::respond(rest, caller.role, home, &*self.credentials, now.wall)
            }
            _ => node(tree.meta_data.find(tail), Class::Metadata),
        }
    }
}

impl Imds {
    /// Proxy mode's lookup: `iam/` is the agent's, the rest is the real
    /// IMDS's if the allowlist lets it through and every segment is plain.
    fn proxied(
        &self,
        allow: &Allowlist,
        path: &Path<'_>,
        version: &str,
        rest: &[&str],
        caller: &Caller<'_>,
        now: Now,
    ) -> Answer {
        let with_iam = catalog::has_iam(version);
        if with_iam && let ["meta-data", "iam", ..] = rest {
            return Answer::Local(self.meta_data(version, &rest[1..], caller, now));
        }
        let class = match rest {
            ["user-data"] => Class::UserData,
            _ => Class::Metadata,
        };
        // The upstream (EC2's IMDS, or a proxy in front of it) may decode
        // or resolve what the allowlist saw as a name (`%2e%2e`, `..;`,
        // `..\`): only plain names go out.
        if !rest.iter().all(|segment| is_plain(segment)) {
            return Answer::Local(Response::not_found(class));
        }
        let mut normalised = format!("/{version}");
        for segment in rest {
            normalised.push('/');
            normalised.push_str(segment);
        }
        if path.trailing_slash || rest.is_empty() {
            normalised.push('/');
        }
        let (keep, extra) = match allow.route(rest) {
            Route::Deny => return Answer::Local(Response::not_found(class)),
            Route::Forward => (None, Vec::new()),
            Route::ForwardListing(keep) => {
                let extra = if rest == ["meta-data"] && with_iam && caller.role.is_some() {
                    vec!["iam/"]
                } else {
                    Vec::new()
                };
                (Some(keep), extra)
            }
        };
        Answer::Forward(Forwarded {
            request: Forward {
                path: normalised,
                keep,
                extra,
            },
            class,
            token_ttl: None,
        })
    }
}

/// A path segment that means the same to any HTTP server: visible ASCII,
/// and none of the bytes servers and proxies decode or split on (`%`,
/// `\`, `;`). Every name EC2's IMDS has (MACs, addresses, tags) is plain.
fn is_plain(segment: &str) -> bool {
    segment
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'%' | b'\\' | b';'))
}

/// `/<version>/api/token`, with or without a trailing slash.
fn is_token_path(path: &Path<'_>) -> bool {
    matches!(path.segments(), [version, "api", "token"] if catalog::is_version(version))
}

fn listing(body: &bytes::Bytes) -> Response {
    Response::ok(ContentType::TextPlain, body.clone(), Class::Metadata)
}

/// A trailing slash does not change what a path names: EC2 answers a
/// directory with its listing either way (it has not redirected since
/// 2022, and clients don't follow redirects), and a value either way
/// (botocore reads the region from `placement/availability-zone/`).
fn node(found: Option<&Node>, class: Class) -> Response {
    match found {
        Some(Node::Dir(dir)) => listing(dir.listing()),
        Some(Node::Leaf(leaf)) => Response::ok(leaf.content_type, leaf.body.clone(), class),
        None => Response::not_found(class),
    }
}
