//! An outage of the agent's own credential source (Roles Anywhere down or
//! throttling), marked so that the STS calls made with it are retried as
//! an outage, with backoff, and not taken for missing keys.

/// The source could not answer now; asking again later may work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceUnavailable(pub String);

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
