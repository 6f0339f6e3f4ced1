//! `[credentials]` and `[profiles.*]`: fixed keys, or STS with the agent's
//! own credentials from the standard chain, a bootstrap post, or profiles.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::error::{ConfigError, Source};
use super::file::{self, BaseKind, ModeKind, SourceKind};
use super::{CredentialsConfig, Env, StsBase, StsConfig};
use crate::creds::engine::{Identity, MfaSettings, Mode, Profile};
use crate::creds::mfa::TotpSecret;
use crate::creds::{Keys, Role, Secret};

/// The keys only `source = "sts"` reads, by config name.
const STS_KEYS: &[&str] = &[
    "base",
    "profile",
    "mode",
    "region",
    "endpoint",
    "duration_seconds",
    "external_id",
    "mfa_serial",
    "mfa_secret",
    "mfa_session_seconds",
    "instance_profile",
    "refresh_before_expiry_seconds",
    "error_ttl_seconds",
    "rate_per_second",
    "burst",
    "max_roles",
    "source_identity",
    "session_tags",
    "first_fetch_wait_ms",
    "idle_ttl_seconds",
    "mfa_prompt_wait_seconds",
    "prefetch_spread_seconds",
];

pub(super) fn credentials(
    file: &file::FileConfig,
    force_env: bool,
    instance_region: &str,
    src: Source<'_>,
    env: Env<'_>,
) -> Result<CredentialsConfig, ConfigError> {
    let creds = &file.credentials;
    match creds.source {
        SourceKind::Static => {
            if let Some(key) = set_sts_keys(creds).first() {
                return Err(src.invalid(
                    &format!("credentials.{key}"),
                    "is only read with source = \"sts\"",
                ));
            }
            if let Some(name) = file.profiles.keys().next() {
                return Err(src.invalid(
                    &format!("profiles.{name}"),
                    "profiles are only read with credentials.source = \"sts\"",
                ));
            }
            static_credentials(creds, force_env, src, env)
        }
        SourceKind::Sts => {
            if force_env {
                return Err(src.invalid(
                    "credentials.source",
                    "--credentials-from-env serves fixed keys; it needs source = \"static\"",
                ));
            }
            sts(file, instance_region, src).map(|s| CredentialsConfig::Sts(Box::new(s)))
        }
    }
}

fn set_sts_keys(c: &file::Credentials) -> Vec<&'static str> {
    let set = [
        c.base.is_some(),
        c.profile.is_some(),
        c.mode.is_some(),
        c.region.is_some(),
        c.endpoint.is_some(),
        c.duration_seconds.is_some(),
        c.external_id.is_some(),
        c.mfa_serial.is_some(),
        c.mfa_secret.is_some(),
        c.mfa_session_seconds.is_some(),
        c.instance_profile.is_some(),
        c.refresh_before_expiry_seconds.is_some(),
        c.error_ttl_seconds.is_some(),
        c.rate_per_second.is_some(),
        c.burst.is_some(),
        c.max_roles.is_some(),
        c.source_identity.is_some(),
        c.session_tags.is_some(),
        c.first_fetch_wait_ms.is_some(),
        c.idle_ttl_seconds.is_some(),
        c.mfa_prompt_wait_seconds.is_some(),
        c.prefetch_spread_seconds.is_some(),
    ];
    STS_KEYS
        .iter()
        .zip(set)
        .filter_map(|(key, set)| set.then_some(*key))
        .collect()
}

/// Fixed keys, from the file or (`from_env`, `--credentials-from-env`) the
/// environment.
fn static_credentials(
    creds: &file::Credentials,
    force_env: bool,
    src: Source<'_>,
    env: Env<'_>,
) -> Result<CredentialsConfig, ConfigError> {
    // Served credentials keep more than half their lifetime; 30 minutes
    // keeps them above the Java SDK's 15-minute refresh threshold.
    if !(1800..=43_200).contains(&creds.lifetime_seconds) {
        return Err(src.invalid(
            "credentials.lifetime_seconds",
            "must be from 1800 (30 minutes) to 43200 (12 hours)",
        ));
    }
    let from_env = creds.from_env || force_env;
    if creds.from_env && !force_env {
        let in_file = [
            ("access_key_id", &creds.access_key_id),
            ("secret_access_key", &creds.secret_access_key),
            ("session_token", &creds.session_token),
        ];
        if let Some((key, _)) = in_file.iter().find(|(_, v)| v.is_some()) {
            return Err(src.invalid(
                &format!("credentials.{key}"),
                "from_env = true takes the keys from the environment; remove this key",
            ));
        }
    }
    let (names, values) = if from_env {
        (
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
            ],
            [
                env("AWS_ACCESS_KEY_ID"),
                env("AWS_SECRET_ACCESS_KEY"),
                env("AWS_SESSION_TOKEN"),
            ],
        )
    } else {
        (
            [
                "credentials.access_key_id",
                "credentials.secret_access_key",
                "credentials.session_token",
            ],
            [
                creds.access_key_id.clone(),
                creds.secret_access_key.clone(),
                creds.session_token.clone(),
            ],
        )
    };
    let key_of = |n: usize| {
        if from_env {
            "credentials.from_env"
        } else {
            names[n]
        }
    };
    let [id, secret, token] = values;
    let id = id.ok_or_else(|| src.invalid(key_of(0), format!("{} is not set", names[0])))?;
    check_access_key_id(&id).map_err(|e| src.invalid(key_of(0), format!("{} {e}", names[0])))?;
    let secret = secret
        .filter(|s| !s.is_empty())
        .ok_or_else(|| src.invalid(key_of(1), format!("{} is not set", names[1])))?;
    // IMDS always serves a session token, and SDKs sign with whatever they
    // get: long-term keys without one would be sent with an empty token.
    let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
        src.invalid(
            key_of(2),
            format!(
                "{} is not set: IMDS credentials always carry a session token (use temporary credentials, or source = \"sts\")",
                names[2]
            ),
        )
    })?;
    Ok(CredentialsConfig::Static {
        keys: Keys {
            access_key_id: id,
            secret_access_key: Secret::new(secret),
            session_token: Secret::new(token),
        },
        lifetime: Duration::from_secs(creds.lifetime_seconds),
    })
}

fn check_access_key_id(id: &str) -> Result<(), &'static str> {
    // The value is not secret, but error messages never repeat it anyway.
    if (16..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err("is not an access key id (16 to 128 letters and digits)")
    }
}

/// A number in a range, or the default.
fn ranged(
    src: Source<'_>,
    key: &str,
    value: Option<u64>,
    range: std::ops::RangeInclusive<u64>,
    default: u64,
) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if range.contains(&v) => Ok(v),
        Some(_) => Err(src.invalid(
            key,
            format!("must be from {} to {}", range.start(), range.end()),
        )),
    }
}

fn sts(
    file: &file::FileConfig,
    instance_region: &str,
    src: Source<'_>,
) -> Result<StsConfig, ConfigError> {
    let c = &file.credentials;
    let fixed = [
        ("access_key_id", &c.access_key_id),
        ("secret_access_key", &c.secret_access_key),
        ("session_token", &c.session_token),
    ];
    if let Some((key, _)) = fixed.iter().find(|(_, v)| v.is_some()) {
        return Err(src.invalid(
            &format!("credentials.{key}"),
            "with source = \"sts\" the agent's own keys come from the standard chain, a bootstrap post, or [profiles.NAME] tables",
        ));
    }
    if c.from_env {
        return Err(src.invalid(
            "credentials.from_env",
            "with source = \"sts\" the standard chain (base = \"chain\") already reads the environment",
        ));
    }
    let defaults = identity(
        src,
        "credentials",
        IdentityKeys {
            region: c.region.as_deref(),
            mode: c.mode,
            duration: c.duration_seconds,
            external_id: c.external_id.as_deref(),
            mfa_serial: c.mfa_serial.as_deref(),
            mfa_secret: c.mfa_secret.as_deref(),
        },
        None,
        instance_region,
    )?;
    let mfa_session = ranged(
        src,
        "credentials.mfa_session_seconds",
        c.mfa_session_seconds,
        900..=129_600,
        43_200,
    )?;
    let defaults = Identity {
        mfa_session: Duration::from_secs(mfa_session),
        ..defaults
    };
    let base = base(file, &defaults, src)?;
    let endpoint = match &c.endpoint {
        Some(url) if !(url.starts_with("https://") || url.starts_with("http://")) => {
            return Err(src.invalid(
                "credentials.endpoint",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        other => other.clone(),
    };
    let rate = match c.rate_per_second {
        None => 10.0,
        Some(r) if (0.1..=1000.0).contains(&r) => r,
        Some(_) => {
            return Err(src.invalid("credentials.rate_per_second", "must be from 0.1 to 1000"));
        }
    };
    Ok(StsConfig {
        base,
        identity: defaults,
        endpoint,
        // Below 15 minutes, served credentials would be what SDKs call
        // expiring: botocore refreshes them on every call.
        keep: Duration::from_secs(ranged(
            src,
            "credentials.refresh_before_expiry_seconds",
            c.refresh_before_expiry_seconds,
            900..=3600,
            1800,
        )?),
        error_ttl: Duration::from_secs(ranged(
            src,
            "credentials.error_ttl_seconds",
            c.error_ttl_seconds,
            5..=3600,
            60,
        )?),
        rate,
        burst: ranged(src, "credentials.burst", c.burst, 1..=1000, 100)? as u32,
        // Making room scans the cache: beyond ten thousand that is felt on
        // the request path. Two at least: prefetch takes half.
        max_roles: ranged(src, "credentials.max_roles", c.max_roles, 2..=10_000, 1024)? as usize,
        source_identity: c.source_identity.unwrap_or(false),
        session_tags: c.session_tags.unwrap_or(false),
        first_fetch_wait: Duration::from_millis(ranged(
            src,
            "credentials.first_fetch_wait_ms",
            c.first_fetch_wait_ms,
            0..=5000,
            500,
        )?),
        idle_ttl: Duration::from_secs(ranged(
            src,
            "credentials.idle_ttl_seconds",
            c.idle_ttl_seconds,
            5..=86_400,
            600,
        )?),
        // Below every SDK's patience for one metadata request once told
        // (botocore's metadata_service_timeout, JS's timeout): the README
        // lists them.
        mfa_prompt_wait: Duration::from_secs(ranged(
            src,
            "credentials.mfa_prompt_wait_seconds",
            c.mfa_prompt_wait_seconds,
            0..=60,
            10,
        )?),
        prefetch_spread: Duration::from_secs(ranged(
            src,
            "credentials.prefetch_spread_seconds",
            c.prefetch_spread_seconds,
            0..=3600,
            0,
        )?),
    })
}

/// The settings a profile may override.
#[derive(Debug, Clone, Copy)]
struct IdentityKeys<'a> {
    region: Option<&'a str>,
    mode: Option<ModeKind>,
    duration: Option<u64>,
    external_id: Option<&'a str>,
    mfa_serial: Option<&'a str>,
    mfa_secret: Option<&'a str>,
}

/// Checks one set of identity settings (under `table`), falling back to
/// `parent` (the `[credentials]` defaults) for what it leaves out.
fn identity(
    src: Source<'_>,
    table: &str,
    keys: IdentityKeys<'_>,
    parent: Option<&Identity>,
    instance_region: &str,
) -> Result<Identity, ConfigError> {
    let key = |name: &str| format!("{table}.{name}");
    let region = match keys.region {
        Some(r) if !super::validate::is_region(r) => {
            return Err(src.invalid(
                &key("region"),
                format!("{r:?} is not a region such as \"us-east-1\""),
            ));
        }
        Some(r) => r.to_owned(),
        None => parent.map_or_else(|| instance_region.to_owned(), |p| p.region.clone()),
    };
    let mode = match (keys.mode, parent) {
        (Some(ModeKind::AssumeRole), _) => Mode::AssumeRole,
        (Some(ModeKind::SessionToken), _) => Mode::SessionToken,
        (Some(ModeKind::Direct), _) => Mode::Direct,
        (None, Some(p)) => p.mode,
        (None, None) => Mode::AssumeRole,
    };
    // AssumeRole sessions last at most 12 hours, session tokens 36.
    let (range, default) = match mode {
        // Direct serves the base's own session (its duration is the
        // base's); the value is only for symmetry.
        Mode::AssumeRole | Mode::Direct => (900..=43_200, 3600),
        Mode::SessionToken => (900..=129_600, 43_200),
    };
    let inherited = parent
        .filter(|p| p.mode == mode)
        .map(|p| p.duration.as_secs());
    let duration = ranged(
        src,
        &key("duration_seconds"),
        keys.duration,
        range,
        inherited.unwrap_or(default),
    )?;
    let external_id = match keys.external_id {
        Some(id) if !is_external_id(id) => {
            return Err(src.invalid(
                &key("external_id"),
                "must be 2 to 1224 characters of letters, digits and +=,.@:/-",
            ));
        }
        Some(id) => Some(id.to_owned()),
        None => parent.and_then(|p| p.external_id.clone()),
    };
    let mfa = match (keys.mfa_serial, keys.mfa_secret) {
        (None, Some(_)) => {
            return Err(src.invalid(
                &key("mfa_secret"),
                "needs mfa_serial, the device the secret belongs to",
            ));
        }
        (Some(serial), secret) => {
            if !is_mfa_serial(serial) {
                return Err(src.invalid(
                    &key("mfa_serial"),
                    format!("{serial:?} is not an MFA device ARN or serial number"),
                ));
            }
            let secret = secret
                .map(TotpSecret::parse)
                .transpose()
                .map_err(|e| src.invalid(&key("mfa_secret"), e.to_string()))?;
            Some(MfaSettings {
                serial: serial.to_owned(),
                secret,
            })
        }
        (None, None) => parent.and_then(|p| p.mfa.clone()),
    };
    Ok(Identity {
        region,
        mode,
        duration: Duration::from_secs(duration),
        external_id,
        mfa,
        mfa_session: parent.map_or(Duration::from_secs(43_200), |p| p.mfa_session),
    })
}

fn base(
    file: &file::FileConfig,
    defaults: &Identity,
    src: Source<'_>,
) -> Result<StsBase, ConfigError> {
    let c = &file.credentials;
    let kind = c.base.unwrap_or_default();
    if kind != BaseKind::Profiles {
        if let Some(name) = file.profiles.keys().next() {
            return Err(src.invalid(
                &format!("profiles.{name}"),
                "profiles are only read with credentials.base = \"profiles\"",
            ));
        }
        if c.profile.is_some() {
            return Err(src.invalid(
                "credentials.profile",
                "is only read with base = \"profiles\"",
            ));
        }
    }
    if defaults.mode == Mode::Direct && kind != BaseKind::RolesAnywhere {
        return Err(src.invalid(
            "credentials.mode",
            "\"direct\" serves the Roles Anywhere session itself: it needs base = \"roles-anywhere\"",
        ));
    }
    if defaults.mode == Mode::Direct && (c.duration_seconds.is_some() || c.external_id.is_some()) {
        return Err(src.invalid(
            if c.duration_seconds.is_some() {
                "credentials.duration_seconds"
            } else {
                "credentials.external_id"
            },
            "\"direct\" serves the Roles Anywhere session as it is (its length is credentials.roles_anywhere.duration_seconds): leave this out",
        ));
    }
    if c.roles_anywhere.is_some() && kind != BaseKind::RolesAnywhere {
        return Err(src.invalid(
            "credentials.roles_anywhere",
            "is only read with base = \"roles-anywhere\"",
        ));
    }
    if kind == BaseKind::RolesAnywhere {
        // What Roles Anywhere gives is a role session: assuming a role with
        // it is role chaining, which AWS caps at an hour, and a role
        // session can't get a session token or use an MFA device.
        if defaults.mode == Mode::SessionToken {
            return Err(src.invalid(
                "credentials.mode",
                "\"session-token\" needs an IAM user's keys; Roles Anywhere gives a role session (leave mode out: each workload's role is assumed with it)",
            ));
        }
        if defaults.mfa.is_some() {
            return Err(src.invalid(
                "credentials.mfa_serial",
                "MFA needs an IAM user's keys; Roles Anywhere gives a role session",
            ));
        }
        if defaults.mode == Mode::AssumeRole && defaults.duration > Duration::from_secs(3600) {
            return Err(src.invalid(
                "credentials.duration_seconds",
                "roles assumed with Roles Anywhere credentials are chained, and AWS caps a chained session at one hour: use 3600 or less",
            ));
        }
    }
    if c.instance_profile.is_some() && kind != BaseKind::Chain {
        return Err(src.invalid(
            "credentials.instance_profile",
            "is only read with base = \"chain\"",
        ));
    }
    match kind {
        BaseKind::Chain => Ok(StsBase::Chain {
            instance_profile: c.instance_profile.unwrap_or(false),
        }),
        BaseKind::Bootstrap => Ok(StsBase::Bootstrap),
        BaseKind::RolesAnywhere => Ok(StsBase::RolesAnywhere(Box::new(
            super::roles_anywhere::settings(c.roles_anywhere.as_ref(), src)?,
        ))),
        BaseKind::Profiles => {
            if file.profiles.is_empty() {
                return Err(src.invalid(
                    "credentials.base",
                    "\"profiles\" needs at least one [profiles.NAME] table",
                ));
            }
            let mut profiles = BTreeMap::new();
            for (name, p) in &file.profiles {
                profiles.insert(name.clone(), profile(name, p, defaults, src)?);
            }
            let active = match (&c.profile, profiles.len()) {
                (Some(name), _) if profiles.contains_key(name) => name.clone(),
                (Some(name), _) => {
                    return Err(
                        src.invalid("credentials.profile", format!("no [profiles.{name}] table"))
                    );
                }
                (None, 1) => profiles.keys().next().cloned().unwrap_or_default(),
                (None, _) => {
                    return Err(src.invalid(
                        "credentials.profile",
                        "name the profile that is active at start",
                    ));
                }
            };
            Ok(StsBase::Profiles { profiles, active })
        }
    }
}

fn profile(
    name: &str,
    p: &file::Profile,
    defaults: &Identity,
    src: Source<'_>,
) -> Result<Profile, ConfigError> {
    let table = format!("profiles.{name}");
    let key = |k: &str| format!("{table}.{k}");
    let id = p
        .access_key_id
        .clone()
        .ok_or_else(|| src.invalid(&key("access_key_id"), "is not set"))?;
    check_access_key_id(&id).map_err(|e| src.invalid(&key("access_key_id"), e))?;
    let secret = p
        .secret_access_key
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| src.invalid(&key("secret_access_key"), "is not set"))?;
    let identity = identity(
        src,
        &table,
        IdentityKeys {
            region: p.region.as_deref(),
            mode: p.mode,
            duration: p.duration_seconds,
            external_id: p.external_id.as_deref(),
            mfa_serial: p.mfa_serial.as_deref(),
            mfa_secret: p.mfa_secret.as_deref(),
        },
        Some(defaults),
        &defaults.region,
    )?;
    if identity.mode == Mode::Direct {
        return Err(src.invalid(
            &key("mode"),
            "\"direct\" serves the Roles Anywhere session itself: a profile's keys have none",
        ));
    }
    let role = p
        .role
        .as_deref()
        .map(Role::parse)
        .transpose()
        .map_err(|e| src.invalid(&key("role"), e.to_string()))?;
    Ok(Profile {
        keys: Keys {
            access_key_id: id,
            secret_access_key: Secret::new(secret),
            session_token: Secret::new(p.session_token.clone().unwrap_or_default()),
        },
        identity,
        role: role.map(Arc::new),
    })
}

fn is_external_id(id: &str) -> bool {
    (2..=1224).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/-_".contains(&b))
}

fn is_mfa_serial(serial: &str) -> bool {
    (9..=256).contains(&serial.len())
        && serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=/:,.@-_".contains(&b))
}
