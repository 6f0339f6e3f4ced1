//! STS as the credentials engine sees it: three calls behind a trait, so
//! the engine's lifecycle can be tested against a scripted STS, and the real
//! one (`client.rs`, aws-sdk-sts) against moto.

mod client;
mod metered;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use client::{AwsSts, default_chain, endpoint_from_env};
pub use metered::Metered;

use super::Keys;
use super::mfa::MfaCode;
use aws_credential_types::provider::SharedCredentialsProvider;

/// A boxed future, as trait methods return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The credentials STS is called with.
#[derive(Clone)]
pub enum BaseCreds {
    /// A provider that resolves (and refreshes) them: the standard chain.
    Chain(SharedCredentialsProvider),
    /// Fixed keys: bootstrapped, from a profile, or an MFA session.
    Keys(Arc<Keys>),
}

impl fmt::Debug for BaseCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaseCreds::Chain(_) => f.write_str("BaseCreds::Chain"),
            BaseCreds::Keys(keys) => write!(f, "BaseCreds::Keys(…{})", keys.key_suffix()),
        }
    }
}

/// An MFA device and a code from it.
#[derive(Debug, Clone)]
pub struct Mfa {
    /// `SerialNumber`: the device's ARN (or a hardware serial).
    pub serial: String,
    /// `TokenCode`.
    pub code: MfaCode,
}

/// `AssumeRole`'s parameters.
#[derive(Debug, Clone)]
pub struct AssumeRoleRequest {
    /// `RoleArn`.
    pub role_arn: String,
    /// `RoleSessionName`.
    pub session_name: String,
    /// `DurationSeconds`.
    pub duration: Duration,
    /// `ExternalId`.
    pub external_id: Option<String>,
    /// `SourceIdentity`.
    pub source_identity: Option<String>,
    /// `Tags`.
    pub tags: Vec<(String, String)>,
}

/// Credentials STS issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The keys.
    pub keys: Keys,
    /// When they expire.
    pub expiration: SystemTime,
    /// The account they belong to, when STS said.
    pub account_id: Option<String>,
}

/// Who the base credentials are (`GetCallerIdentity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// `Account`.
    pub account: String,
    /// `Arn`.
    pub arn: String,
}

/// Why an STS call failed, in the terms the engine acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StsError {
    /// STS refused: the caller may not do this (AccessDenied, expired or
    /// invalid keys, a bad parameter). Retrying soon will not help.
    #[error("STS refused the call: {code}: {message}")]
    Refused {
        /// STS's error code.
        code: String,
        /// STS's message (names ARNs, never secrets).
        message: String,
    },
    /// STS is throttling the agent.
    #[error("STS is throttling: {0}")]
    Throttled(String),
    /// STS could not be reached or failed (network, timeout, 5xx).
    #[error("STS is unavailable: {0}")]
    Unavailable(String),
    /// The base credentials could not be resolved.
    #[error("the agent's own credentials could not be loaded: {0}")]
    NoCredentials(String),
}

impl StsError {
    /// Whether retrying with backoff may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StsError::Throttled(_) | StsError::Unavailable(_))
    }
}

/// The three STS calls the agent makes, each as `base`, to the STS of
/// `region`.
pub trait Sts: Send + Sync + fmt::Debug {
    /// `AssumeRole`, with an MFA code if `mfa` is given.
    fn assume_role<'a>(
        &'a self,
        base: &'a BaseCreds,
        region: &'a str,
        request: &'a AssumeRoleRequest,
        mfa: Option<&'a Mfa>,
    ) -> BoxFuture<'a, Result<Issued, StsError>>;

    /// `GetSessionToken`, with an MFA code if `mfa` is given.
    fn get_session_token<'a>(
        &'a self,
        base: &'a BaseCreds,
        region: &'a str,
        duration: Duration,
        mfa: Option<&'a Mfa>,
    ) -> BoxFuture<'a, Result<Issued, StsError>>;

    /// `GetCallerIdentity`.
    fn get_caller_identity<'a>(
        &'a self,
        base: &'a BaseCreds,
        region: &'a str,
    ) -> BoxFuture<'a, Result<CallerIdentity, StsError>>;
}

/// The account in an ARN (`arn:aws:sts::123456789012:assumed-role/…`).
pub fn account_of_arn(arn: &str) -> Option<String> {
    let account = arn.split(':').nth(4)?;
    super::role::is_account_id(account).then(|| account.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_of_arns() {
        assert_eq!(
            account_of_arn("arn:aws:sts::123456789012:assumed-role/app/s").as_deref(),
            Some("123456789012")
        );
        assert_eq!(account_of_arn("arn:aws:iam::x:role/a"), None);
        assert_eq!(account_of_arn("nonsense"), None);
    }
}
