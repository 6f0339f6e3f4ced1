//! `CreateSession` over HTTPS: the signed request, and the service's
//! answer turned into credentials or an error that says what to fix.

use std::time::{Duration, SystemTime};

use aws_smithy_http_client::Connector;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::HttpConnector as _;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use http_body_util::BodyExt as _;

use super::sign::{PATH, Request, SignError, Signer, sign};
use crate::creds::sts::Issued;
use crate::creds::{Keys, Secret};

/// A session's answer is small: anything larger is not the service.
const MAX_ANSWER: usize = 64 * 1024;

/// How long one `CreateSession` may take, the signature and the answer's
/// body included (the STS call it is made for allows 10 s in all).
pub const TIMEOUT: Duration = Duration::from_secs(8);

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What `CreateSession` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    pub trust_anchor_arn: String,
    pub profile_arn: String,
    pub role_arn: String,
    pub duration: Duration,
    /// `roleSessionName` (the profile must accept it).
    pub session_name: Option<String>,
}

/// Why there is no session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateSessionError {
    /// The service said no: a certificate it does not trust, a profile or
    /// role it does not know or allow. Asking again soon gets the same.
    #[error("Roles Anywhere refused the session ({status} {kind}): {message}")]
    Refused {
        status: u16,
        kind: String,
        message: String,
    },
    /// It could not answer now (5xx, throttling, network): worth retrying.
    #[error("Roles Anywhere could not be reached or failed: {0}")]
    Transient(String),
    /// Its answer was not a session.
    #[error("Roles Anywhere's answer was not a session: {0}")]
    Malformed(String),
    /// The request could not be signed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

impl CreateSessionError {
    /// Whether asking again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            CreateSessionError::Transient(_) => true,
            CreateSessionError::Refused { status, kind, .. } => {
                *status == 429 || kind.contains("Throttling")
            }
            _ => false,
        }
    }
}

/// The HTTPS connector: rustls with ring, trusting the system's roots and, when given,
/// `extra_roots` (DER: a private endpoint, a proxy that inspects TLS, a
/// test service). Each root is checked here: the HTTP stack panics on one
/// it can't parse.
pub fn connector(extra_roots: &[Vec<u8>]) -> Result<Connector, String> {
    use base64::Engine as _;
    let mut roots = TrustStore::empty().with_native_roots(true);
    for (n, der) in extra_roots.iter().enumerate() {
        rustls::RootCertStore::empty()
            .add(rustls::pki_types::CertificateDer::from(der.as_slice()))
            .map_err(|e| format!("certificate {} of the CA bundle: {e}", n + 1))?;
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        );
        roots = roots.with_pem_certificate(pem.into_bytes());
    }
    let context = TlsContext::builder()
        .with_trust_store(roots)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Connector::builder()
        .connector_settings(
            aws_smithy_runtime_api::client::http::HttpConnectorSettings::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(TIMEOUT)
                .build(),
        )
        .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(context)
        .build())
}

/// The JSON body: every parameter there (the service takes them in the
/// query or the body).
fn body(params: &SessionParams) -> Vec<u8> {
    let mut fields = serde_json::Map::new();
    fields.insert(
        "durationSeconds".into(),
        serde_json::Value::from(params.duration.as_secs()),
    );
    fields.insert("profileArn".into(), params.profile_arn.clone().into());
    fields.insert("roleArn".into(), params.role_arn.clone().into());
    fields.insert(
        "trustAnchorArn".into(),
        params.trust_anchor_arn.clone().into(),
    );
    if let Some(name) = &params.session_name {
        fields.insert("roleSessionName".into(), name.clone().into());
    }
    serde_json::Value::Object(fields).to_string().into_bytes()
}

/// Asks `host` (`host[:port]`, over HTTPS) for a session, signed by
/// `signer` (on a blocking thread: a token may take its time, and the
/// deadline covers it too).
#[allow(clippy::too_many_arguments)]
pub async fn create_session(
    connector: &Connector,
    host: &str,
    region: &str,
    params: &SessionParams,
    certificate: &[u8],
    chain: &[Vec<u8>],
    signer: std::sync::Arc<dyn Signer>,
    now: SystemTime,
) -> Result<Issued, CreateSessionError> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let body = body(params);
    let signing = {
        let (host, region, body) = (host.to_owned(), region.to_owned(), body.clone());
        let (certificate, chain) = (certificate.to_vec(), chain.to_vec());
        tokio::task::spawn_blocking(move || {
            let request = Request {
                host: &host,
                query: &[],
                body: &body,
                region: &region,
                time: now,
                certificate: &certificate,
                chain: &chain,
            };
            sign(&request, &*signer)
        })
    };
    let headers = tokio::time::timeout_at(deadline, signing)
        .await
        .map_err(|_| {
            CreateSessionError::Transient(format!("the key did not sign within {TIMEOUT:?}"))
        })?
        .map_err(|e| SignError::Key(format!("the signing thread: {e}")))??;
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("https://{host}{PATH}"));
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let request = request
        .header("content-length", body.len())
        .body(SdkBody::from(body))
        .map_err(|e| CreateSessionError::Malformed(format!("building the request: {e}")))?;
    let request = HttpRequest::try_from(request)
        .map_err(|e| CreateSessionError::Malformed(format!("building the request: {e}")))?;
    // One deadline for the whole exchange: a peer that sends the head and
    // then stalls must not hold the session (and every role behind it).
    let exchange = async {
        let answer = connector
            .call(request)
            .await
            .map_err(|e| CreateSessionError::Transient(crate::creds::source_chain(&e)))?;
        let status = answer.status().as_u16();
        let error_type = answer
            .headers()
            .get("x-amzn-errortype")
            .map(|v| v.split(':').next().unwrap_or(v).to_owned());
        let body = http_body_util::Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| CreateSessionError::Transient(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok::<_, CreateSessionError>((status, error_type, body))
    };
    let (status, error_type, body) = tokio::time::timeout_at(deadline, exchange)
        .await
        .map_err(|_| CreateSessionError::Transient(format!("no answer in {TIMEOUT:?}")))??;
    parse_answer(status, error_type, &body, &params.role_arn)
}

/// The service's answer: 201 and a credential set, or an error.
pub fn parse_answer(
    status: u16,
    error_type: Option<String>,
    body: &[u8],
    role_arn: &str,
) -> Result<Issued, CreateSessionError> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        let field = |name: &str| {
            json.as_ref()
                .and_then(|j| j.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let kind = error_type
            .or_else(|| field("__type"))
            .or_else(|| field("code"))
            .unwrap_or_else(|| "UnknownError".to_owned());
        let message = field("message")
            .or_else(|| field("Message"))
            .unwrap_or_else(|| "(no message)".to_owned());
        // 408: the request timed out on the way; asking again may work.
        if status >= 500 || status == 408 {
            return Err(CreateSessionError::Transient(format!(
                "{status} {kind}: {message}"
            )));
        }
        return Err(CreateSessionError::Refused {
            status,
            kind,
            message,
        });
    }
    let malformed = |what: &str| CreateSessionError::Malformed(what.to_owned());
    let creds = json
        .as_ref()
        .and_then(|j| j.get("credentialSet"))
        .and_then(|s| s.get(0))
        .and_then(|s| s.get("credentials"))
        .ok_or_else(|| malformed("no credentialSet"))?;
    let text = |name: &str| {
        creds
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| malformed(&format!("no {name}")))
    };
    let expiration = aws_smithy_types::DateTime::from_str(
        text("expiration")?,
        aws_smithy_types::date_time::Format::DateTime,
    )
    .ok()
    .and_then(|t| SystemTime::try_from(t).ok())
    .ok_or_else(|| malformed("an expiration that is not a date"))?;
    Ok(Issued {
        keys: Keys {
            access_key_id: text("accessKeyId")?.to_owned(),
            secret_access_key: Secret::new(text("secretAccessKey")?),
            session_token: Secret::new(text("sessionToken")?),
        },
        expiration,
        account_id: role_arn.split(':').nth(4).map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::123456789012:role/host";

    #[test]
    fn a_session() {
        let body = br#"{"credentialSet":[{"credentials":{"accessKeyId":"ASIAEXAMPLE","secretAccessKey":"s","sessionToken":"t","expiration":"2030-01-02T03:04:05Z"},"roleArn":"x"}],"subjectArn":"y"}"#;
        let issued = parse_answer(201, None, body, ROLE).unwrap();
        assert_eq!(issued.keys.access_key_id, "ASIAEXAMPLE");
        assert_eq!(issued.account_id.as_deref(), Some("123456789012"));
        assert_eq!(
            crate::timefmt::iso8601(issued.expiration),
            "2030-01-02T03:04:05Z"
        );
    }

    #[test]
    fn errors_say_what_the_service_said() {
        let refused = parse_answer(
            403,
            Some("AccessDeniedException".into()),
            br#"{"message":"Untrusted signing certificate"}"#,
            ROLE,
        )
        .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "Roles Anywhere refused the session (403 AccessDeniedException): Untrusted signing certificate"
        );
        assert!(!refused.is_transient());
        let throttled =
            parse_answer(429, None, br#"{"__type":"ThrottlingException"}"#, ROLE).unwrap_err();
        assert!(throttled.is_transient(), "{throttled}");
        assert!(
            parse_answer(503, None, b"<html>", ROLE)
                .unwrap_err()
                .is_transient()
        );
        for bad in [
            &b"not json"[..],
            br#"{"credentialSet":[]}"#,
            br#"{"credentialSet":[{"credentials":{"accessKeyId":"A","secretAccessKey":"s","sessionToken":"t","expiration":"soon"}}]}"#,
            br#"{"credentialSet":[{"credentials":{"accessKeyId":"","secretAccessKey":"s","sessionToken":"t","expiration":"2030-01-02T03:04:05Z"}}]}"#,
        ] {
            let e = parse_answer(201, None, bad, ROLE).unwrap_err();
            assert!(matches!(e, CreateSessionError::Malformed(_)), "{e}");
        }
    }
}
