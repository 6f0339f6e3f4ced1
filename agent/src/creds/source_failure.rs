//! How the agent's own credential source failed, so that the STS calls
//! made with it are retried as what it was: an outage with backoff (Roles
//! Anywhere down or throttling, a provider that took too long), a refusal
//! after `error_ttl` (a certificate the service does not trust, no
//! credentials at all, a misconfigured profile).

use aws_credential_types::provider::error::CredentialsError;

/// The source could not answer now; asking again later may work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceUnavailable(pub String);

/// The source refused (a certificate it does not trust, a profile that
/// does not allow the role): asking again soon gets the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceRefused(pub String);

/// What a failure of the agent's own source was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFailure {
    /// Asking again later may work.
    Outage,
    /// Asking again soon gets the same.
    Refusal,
}

/// What `error` says of the agent's own source, when it says anything: the
/// marks above, a provider that timed out, or one with nothing (or a bad
/// config) to give. Any other provider error (SSO, a profile's role chain,
/// IMDS: often the network) says nothing.
pub fn source_failure(error: &(dyn std::error::Error + 'static)) -> Option<SourceFailure> {
    if find_source::<SourceUnavailable>(error).is_some() {
        return Some(SourceFailure::Outage);
    }
    if find_source::<SourceRefused>(error).is_some() {
        return Some(SourceFailure::Refusal);
    }
    match find_source::<CredentialsError>(error)? {
        CredentialsError::ProviderTimedOut(_) => Some(SourceFailure::Outage),
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            Some(SourceFailure::Refusal)
        }
        _ => None,
    }
}

/// The first `T` in `error` or the errors behind it.
fn find_source<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// `error` and the errors behind it, `: `-joined (an SDK error's own
/// Display is often only "an error occurred").
pub fn source_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out = format!("{out}: {text}");
        }
        next = e.source();
    }
    out
}
