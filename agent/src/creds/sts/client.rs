//! The real STS: aws-sdk-sts over rustls (ring), with the region, endpoint,
//! timeouts and retry policy the agent wants.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
use aws_credential_types::Credentials as SdkCredentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_sts::config::{IdentityCache, Region, SharedIdentityCache};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::types::Tag;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

use super::{
    AssumeRoleRequest, BaseCreds, BoxFuture, CallerIdentity, Issued, Mfa, Sts, StsError,
    account_of_arn,
};
use crate::creds::{Keys, Secret, SourceFailure};

/// aws-sdk-sts. Each call builds a client for its region and base
/// credentials; the HTTPS connection pool and the chain's credential cache
/// are shared by all of them.
pub struct AwsSts {
    http: SharedHttpClient,
    endpoint: Option<String>,
    chain_cache: SharedIdentityCache,
}

impl fmt::Debug for AwsSts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSts")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The endpoint the environment sets for STS, as SDKs read it:
/// `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`, unless
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is true.
pub fn endpoint_from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    env("AWS_ENDPOINT_URL_STS")
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .filter(|v| !v.is_empty())
}

/// The HTTPS client every AWS call uses: rustls with ring.
fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// A provider config for the standard chain's providers.
fn provider_config(region: &str) -> ProviderConfig {
    ProviderConfig::without_region()
        .with_http_client(http_client())
        .with_region(Some(Region::new(region.to_owned())))
}

/// The standard credential chain, as SDKs use it: environment, shared
/// config and credentials files (profiles, `credential_process`, SSO, role
/// chains), web identity tokens. The EC2 instance profile comes last and only
/// when `instance_profile` is set: on an EC2 host the agent itself answers at
/// 169.254.169.254, so the real IMDS is reachable only in the redirect modes
/// that exempt the agent's own traffic.
pub fn default_chain(region: &str, instance_profile: bool) -> SharedCredentialsProvider {
    let conf = provider_config(region);
    let chain = CredentialsProviderChain::first_try(
        "Environment",
        EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else(
        "Profile",
        ProfileFileCredentialsProvider::builder()
            .configure(&conf)
            .build(),
    )
    .or_else(
        "WebIdentityToken",
        WebIdentityTokenCredentialsProvider::builder()
            .configure(&conf)
            .build(),
    );
    let chain = if instance_profile {
        chain.or_else(
            "Ec2InstanceMetadata",
            aws_config::imds::credentials::ImdsCredentialsProvider::builder()
                .configure(&conf)
                .build(),
        )
    } else {
        chain
    };
    SharedCredentialsProvider::new(chain)
}

impl AwsSts {
    /// STS at `endpoint` if given, else each region's regional endpoint
    /// (never the global one).
    pub fn new(endpoint: Option<String>) -> Self {
        Self {
            http: http_client(),
            endpoint,
            // Longer than a Roles Anywhere session takes (its own
            // deadline is 10 s, and a token's signature comes first).
            chain_cache: IdentityCache::lazy()
                .load_timeout(Duration::from_secs(20))
                .build(),
        }
    }

    fn client(&self, base: &BaseCreds, region: &str) -> aws_sdk_sts::Client {
        let mut config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .http_client(self.http.clone())
            // Retrying is the engine's job (with backoff, an error cache and
            // a rate budget), so each call is one attempt.
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .operation_timeout(Duration::from_secs(10))
                    .build(),
            );
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let config = match base {
            // Handed over as it is: `credentials_provider()` would wrap it
            // in a new provider, with a cache slot of its own, and the
            // cache would never hit (every call a new session).
            BaseCreds::Chain(provider) => {
                config.set_credentials_provider(Some(provider.clone()));
                config.identity_cache(self.chain_cache.clone())
            }
            // Fixed keys need no cache, and a cache per call would grow.
            BaseCreds::Keys(keys) => config
                .credentials_provider(sdk_credentials(keys))
                .identity_cache(IdentityCache::no_cache()),
        };
        aws_sdk_sts::Client::from_conf(config.build())
    }
}

fn sdk_credentials(keys: &Keys) -> SdkCredentials {
    let token = keys.session_token.expose();
    SdkCredentials::new(
        &keys.access_key_id,
        keys.secret_access_key.expose(),
        (!token.is_empty()).then(|| token.to_owned()),
        None,
        "imds-agent",
    )
}

impl Sts for AwsSts {
    fn assume_role<'a>(
        &'a self,
        base: &'a BaseCreds,
        region: &'a str,
        request: &'a AssumeRoleRequest,
        mfa: Option<&'a Mfa>,
    ) -> BoxFuture<'a, Result<Issued, StsError>> {
        Box::pin(async move {
            let mut call = self
                .client(base, region)
                .assume_role()
                .role_arn(&request.role_arn)
                .role_session_name(&request.session_name)
                .duration_seconds(request.duration.as_secs() as i32)
                .set_external_id(request.external_id.clone())
                .set_source_identity(request.source_identity.clone());
            for (key, value) in &request.tags {
                let tag = Tag::builder().key(key).value(value).build().map_err(|e| {
                    StsError::Refused {
                        code: "InvalidParameter".to_owned(),
                        message: e.to_string(),
                    }
                })?;
                call = call.tags(tag);
            }
            if let Some(mfa) = mfa {
                call = call
                    .serial_number(&mfa.serial)
                    .token_code(mfa.code.expose());
            }
            let output = call.send().await.map_err(classify)?;
            let account = output
                .assumed_role_user()
                .and_then(|u| account_of_arn(u.arn()));
            issued(output.credentials(), account)
        })
    }

    fn get_session_token<'a>(
        &'a self,
        base: &'a BaseCreds,
        region: &'a str,
        duration: Duration,
        mfa: Option<&'a Mfa>,
    ) -> BoxFuture<'a, Result<Issued, StsError>> {
        Box::pin(async move {
            let mut call = self
                .client(base, region)
                .get_session_token()
                .duration_seconds(duration.as_secs() as i32);
            if let Some(mfa) = mfa {
                call = call
                    .serial_number(&mfa.serial)
                    .token_code(mfa.code.expose());
            }
            let output = call.send().await.map_err(classify)?;
            issued(output.credentials(), None)
        })
    }

    fn get_caller_identity<'a>(
        &'a self,
        base: &'a BaseCreds,
        region: &'a str,
    ) -> BoxFuture<'a, Result<CallerIdentity, StsError>> {
        Box::pin(async move {
            let output = self
                .client(base, region)
                .get_caller_identity()
                .send()
                .await
                .map_err(classify)?;
            match (output.account(), output.arn()) {
                (Some(account), Some(arn)) => Ok(CallerIdentity {
                    account: account.to_owned(),
                    arn: arn.to_owned(),
                }),
                _ => Err(StsError::Unavailable(
                    "GetCallerIdentity answered without Account or Arn".to_owned(),
                )),
            }
        })
    }
}

fn issued(
    credentials: Option<&aws_sdk_sts::types::Credentials>,
    account_id: Option<String>,
) -> Result<Issued, StsError> {
    let c = credentials
        .ok_or_else(|| StsError::Unavailable("STS answered without credentials".to_owned()))?;
    let expiration = SystemTime::try_from(*c.expiration())
        .map_err(|e| StsError::Unavailable(format!("STS answered an unusable expiration: {e}")))?;
    Ok(Issued {
        keys: Keys {
            access_key_id: c.access_key_id().to_owned(),
            secret_access_key: Secret::new(c.secret_access_key()),
            session_token: Secret::new(c.session_token()),
        },
        expiration,
        account_id,
    })
}

/// Error codes STS uses when it throttles.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
];

/// Sorts an SDK error into what the engine does about it.
fn classify<E>(err: SdkError<E, aws_smithy_runtime_api::http::Response>) -> StsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown").to_owned();
            let message = service.err().message().unwrap_or("").to_owned();
            let status = service.raw().status().as_u16();
            if THROTTLING.contains(&code.as_str()) || status == 429 {
                StsError::Throttled(format!("{code}: {message}"))
            } else if status >= 500 {
                StsError::Unavailable(format!("HTTP {status} {code}: {message}"))
            } else {
                StsError::Refused { code, message }
            }
        }
        SdkError::ConstructionFailure(_) => {
            StsError::NoCredentials(DisplayErrorContext(&err).to_string())
        }
        _ => {
            let text = DisplayErrorContext(&err).to_string();
            // The SDK resolves credentials while dispatching: a source that
            // is down is an outage; one that refused or found nothing is
            // not (asking again soon gets the same).
            match crate::creds::source_failure(&err) {
                Some(SourceFailure::Outage) => StsError::Unavailable(text),
                Some(SourceFailure::Refusal) => StsError::NoCredentials(text),
                None if text.contains("credentials") && text.contains("provider") => {
                    StsError::NoCredentials(text)
                }
                None => StsError::Unavailable(text),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::error::CredentialsError;
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    use aws_smithy_runtime_api::client::result::ConnectorError;

    /// The error an STS call ends with when the agent's own credentials
    /// could not be had: the SDK's, around the provider's.
    fn failed_dispatch(
        cause: CredentialsError,
    ) -> SdkError<AssumeRoleError, aws_smithy_runtime_api::http::Response> {
        SdkError::dispatch_failure(ConnectorError::other(Box::new(cause), None))
    }

    #[test]
    fn a_source_that_refused_is_no_outage_and_one_that_is_down_is() {
        let refused = failed_dispatch(CredentialsError::provider_error(
            crate::creds::SourceRefused(
                "Roles Anywhere refused the session (403 AccessDeniedException): no".into(),
            ),
        ));
        assert!(
            matches!(classify(refused), StsError::NoCredentials(_)),
            "a refusal is retried at error_ttl"
        );
        let not_loaded = failed_dispatch(CredentialsError::not_loaded("no usable certificate"));
        assert!(matches!(classify(not_loaded), StsError::NoCredentials(_)));
        let down = failed_dispatch(CredentialsError::provider_error(
            crate::creds::SourceUnavailable("Roles Anywhere could not be reached".into()),
        ));
        assert!(matches!(classify(down), StsError::Unavailable(_)));
        let slow = failed_dispatch(CredentialsError::provider_timed_out(Duration::from_secs(
            20,
        )));
        assert!(matches!(classify(slow), StsError::Unavailable(_)));
        // The standard chain's providers report their network failures
        // (SSO, a profile's role chain, IMDS) as provider errors: outages.
        let sso_down = failed_dispatch(CredentialsError::provider_error(std::io::Error::other(
            "dns error: failed to lookup address information",
        )));
        assert!(matches!(classify(sso_down), StsError::Unavailable(_)));
        let misconfigured =
            failed_dispatch(CredentialsError::invalid_configuration("no such profile"));
        assert!(matches!(
            classify(misconfigured),
            StsError::NoCredentials(_)
        ));
        let network = SdkError::<AssumeRoleError, _>::dispatch_failure(ConnectorError::io(
            Box::new(std::io::Error::other("connection refused")),
        ));
        assert!(matches!(classify(network), StsError::Unavailable(_)));
    }
}
