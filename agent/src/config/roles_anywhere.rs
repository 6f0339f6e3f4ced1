//! `[credentials.roles_anywhere]`: the agent's own credentials from IAM
//! Roles Anywhere.

use std::path::PathBuf;
use std::time::Duration;

use super::error::{ConfigError, Source};
use super::file;
use crate::creds::roles_anywhere::client::SessionParams;
use crate::creds::roles_anywhere::provider::{Passphrase, Settings, Token};

/// An ARN's parts: partition, service, region, account, resource.
fn arn_parts(arn: &str) -> Option<[&str; 5]> {
    let mut parts = arn.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    let p = [
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    ];
    (p.iter().enumerate().all(|(i, s)| !s.is_empty() || i == 2)).then_some(p)
}

/// `host[:port]`: a DNS name or an IP address (IPv6 in brackets), and
/// nothing a URL would read as more (`@`, `/`, `?`, `#`, spaces).
fn is_host_and_port(text: &str) -> bool {
    let bracketed_v6 = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    if bracketed_v6 || text.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (text, None),
    };
    // An absolute name's final dot is allowed; `_` is in some internal
    // names.
    let host = host.strip_suffix('.').unwrap_or(host);
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    name_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// Reads the table (`base = "roles-anywhere"`).
pub(crate) fn settings(
    table: Option<&file::RolesAnywhere>,
    src: Source<'_>,
) -> Result<Settings, ConfigError> {
    let key = |k: &str| format!("credentials.roles_anywhere.{k}");
    let Some(t) = table else {
        return Err(src.invalid(
            "credentials.base",
            "\"roles-anywhere\" needs a [credentials.roles_anywhere] table",
        ));
    };
    let path = |name: &str, value: &Option<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
        match value {
            Some(p) if !p.is_absolute() => Err(src.invalid(&key(name), "must be an absolute path")),
            other => Ok(other.clone()),
        }
    };
    let required = |name: &str, value: Option<PathBuf>| {
        value.ok_or_else(|| src.invalid(&key(name), "is required"))
    };
    // A key in a token: private_key = "pkcs11:…" with the module's path.
    let token_uri = t
        .private_key
        .as_deref()
        .and_then(|p| p.to_str())
        .filter(|p| p.starts_with("pkcs11:"))
        .map(str::to_owned);
    let token = match (&token_uri, path("pkcs11_module", &t.pkcs11_module)?) {
        (Some(uri), Some(module)) => Some(Token {
            module,
            uri: uri.clone(),
        }),
        (Some(_), None) => {
            return Err(src.invalid(
                &key("pkcs11_module"),
                "is required for a pkcs11: private_key (the token's module, e.g. /usr/lib/softhsm/libsofthsm2.so)",
            ));
        }
        (None, Some(_)) => {
            return Err(src.invalid(
                &key("pkcs11_module"),
                "is only read with a pkcs11: private_key",
            ));
        }
        (None, None) => None,
    };
    let pkcs12 = path("pkcs12", &t.pkcs12)?;
    let (certificate, private_key, chain) = match pkcs12 {
        Some(file) => {
            if t.certificate.is_some() || t.private_key.is_some() || t.chain.is_some() {
                return Err(src.invalid(
                    &key("pkcs12"),
                    "holds the certificate, its chain and the key: leave certificate, chain and private_key out",
                ));
            }
            (file.clone(), file, None)
        }
        None if token.is_some() => (
            required("certificate", path("certificate", &t.certificate)?)?,
            t.private_key.clone().unwrap_or_default(),
            path("chain", &t.chain)?,
        ),
        None => (
            required("certificate", path("certificate", &t.certificate)?)?,
            required("private_key", path("private_key", &t.private_key)?)?,
            path("chain", &t.chain)?,
        ),
    };
    let ca_bundle = path("ca_bundle", &t.ca_bundle)?;
    let passphrase = match (
        path(
            "private_key_passphrase_file",
            &t.private_key_passphrase_file,
        )?,
        &t.private_key_passphrase_credential,
    ) {
        (Some(_), Some(_)) => {
            return Err(src.invalid(
                &key("private_key_passphrase_credential"),
                "give the passphrase one way: a file or a systemd credential",
            ));
        }
        (Some(file), None) => Some(Passphrase::File(file)),
        (None, Some(name)) if name.is_empty() || name.contains('/') => {
            return Err(src.invalid(
                &key("private_key_passphrase_credential"),
                "is a credential's name (LoadCredential=NAME:…), not a path",
            ));
        }
        (None, Some(name)) => Some(Passphrase::Credential(name.clone())),
        (None, None) => None,
    };
    let arn = |name: &str, value: &Option<String>, service: &str, kind: &str| {
        let value = value
            .as_deref()
            .ok_or_else(|| src.invalid(&key(name), "is required"))?;
        match arn_parts(value) {
            // Roles Anywhere's ARNs are regional (the region makes the
            // endpoint and the signature's scope); IAM's are not.
            Some([_, s, region, _, resource])
                if s == service
                    && resource.starts_with(kind)
                    && (service == "iam" || super::validate::is_region(region)) =>
            {
                Ok(value.to_owned())
            }
            _ => Err(src.invalid(
                &key(name),
                format!("must be an ARN like arn:aws:{service}:…:{kind}…"),
            )),
        }
    };
    let trust_anchor_arn = arn(
        "trust_anchor_arn",
        &t.trust_anchor_arn,
        "rolesanywhere",
        "trust-anchor/",
    )?;
    let profile_arn = arn("profile_arn", &t.profile_arn, "rolesanywhere", "profile/")?;
    let role_arn = arn("role_arn", &t.role_arn, "iam", "role/")?;
    let [partition, _, anchor_region, ..] =
        arn_parts(&trust_anchor_arn).unwrap_or(["aws", "", "", "", ""]);
    let [_, _, profile_region, ..] = arn_parts(&profile_arn).unwrap_or(["", "", "", "", ""]);
    if anchor_region != profile_region {
        return Err(src.invalid(
            &key("profile_arn"),
            format!("is in {profile_region}, the trust anchor in {anchor_region}: they must be in one region"),
        ));
    }
    let region = t.region.clone().unwrap_or_else(|| anchor_region.to_owned());
    if region != anchor_region {
        return Err(src.invalid(
            &key("region"),
            format!("the trust anchor is in {anchor_region}"),
        ));
    }
    if t.endpoint.is_some() && (t.fips || t.dual_stack) {
        return Err(src.invalid(
            &key("endpoint"),
            "fips and dual_stack choose AWS's endpoints; with an endpoint of your own leave them out",
        ));
    }
    let service = if t.fips {
        "rolesanywhere-fips"
    } else {
        "rolesanywhere"
    };
    let domain = match (partition, t.dual_stack) {
        ("aws-cn", false) => "amazonaws.com.cn",
        ("aws-cn", true) => "api.amazonwebservices.com.cn",
        (_, false) => "amazonaws.com",
        (_, true) => "api.aws",
    };
    let endpoint = match &t.endpoint {
        Some(e) if !is_host_and_port(e) => {
            return Err(src.invalid(
                &key("endpoint"),
                "is a host name, with a port if need be (HTTPS is implied): rolesanywhere-fips.us-east-1.amazonaws.com",
            ));
        }
        Some(e) => e.clone(),
        None => format!("{service}.{region}.{domain}"),
    };
    let duration = match t.duration_seconds {
        None => 3600,
        Some(d) if (900..=43_200).contains(&d) => d,
        Some(_) => return Err(src.invalid(&key("duration_seconds"), "must be from 900 to 43200")),
    };
    let session_name = match &t.session_name {
        Some(n) if crate::creds::session_name::sanitize(n).as_deref() != Some(n.as_str()) => {
            return Err(src.invalid(
                &key("session_name"),
                "must be 2-64 characters of letters, digits and +=,.@-",
            ));
        }
        other => other.clone(),
    };
    Ok(Settings {
        pkcs12: t.pkcs12.is_some(),
        certificate,
        chain,
        private_key,
        passphrase,
        token,
        endpoint,
        region,
        ca_bundle,
        session: SessionParams {
            trust_anchor_arn,
            profile_arn,
            role_arn,
            duration: Duration::from_secs(duration),
            session_name,
        },
    })
}
