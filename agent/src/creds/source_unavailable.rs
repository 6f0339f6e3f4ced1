//! An outage or a refusal of the agent's own credential source (Roles
//! Anywhere down or throttling; or refusing the certificate), marked so
//! that the STS calls made with it are retried as what they are: an outage
//! with backoff, a refusal after `error_ttl`.

/// The source could not answer now; asking again later may work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceUnavailable(pub String);

/// The source refused (a certificate it does not trust, a profile that
/// does not allow the role): asking again soon gets the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceRefused(pub String);

/// Whether `error` or any error behind it is a [`SourceUnavailable`].
pub fn is_outage(error: &(dyn std::error::Error + 'static)) -> bool {
    has_source::<SourceUnavailable>(error)
}

/// Whether `error` or any error behind it is a `T`.
pub fn has_source<T: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<T>() {
            return true;
        }
        next = e.source();
    }
    false
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
