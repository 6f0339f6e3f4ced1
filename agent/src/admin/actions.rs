//! What the admin socket and the `/manage` page both do to the agent's own
//! session: hand in an MFA code and hear what became of it, switch
//! profile. Each surface maps the errors to its own answers.

use std::time::Duration;

use super::state::AdminState;
use crate::creds::engine::{BaseError, CodeOutcome};
use crate::creds::mfa::MfaCode;

/// How long a code's sender waits to hear whether it opened the session:
/// beyond the STS call's own bounds.
const CODE_ANSWER_WAIT: Duration = Duration::from_secs(25);

/// Why an action was not done.
#[derive(Debug, thiserror::Error)]
pub(super) enum ActionError {
    /// The agent serves fixed keys: there is no session.
    #[error(
        "the agent serves fixed keys (credentials.source = \"static\"); there is no STS session"
    )]
    NoSession,
    /// The engine refused (no such profile, no MFA device, ...).
    #[error(transparent)]
    Base(#[from] BaseError),
    /// STS refused the code.
    #[error("{0}")]
    CodeRefused(String),
    /// The code could not be used.
    #[error("{0}")]
    CodeFailed(String),
}

/// What a code opened: the session's expiry and key suffix.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct Opened {
    pub(super) expiration: String,
    pub(super) access_key_suffix: String,
}

/// Hands `code` in and waits (boundedly) for what became of it.
pub(super) async fn hand_in_code(state: &AdminState, code: MfaCode) -> Result<Opened, ActionError> {
    let engine = state.engine.as_ref().ok_or(ActionError::NoSession)?;
    let outcome = engine.submit_code(code)?;
    match tokio::time::timeout(CODE_ANSWER_WAIT, outcome).await {
        Ok(Ok(CodeOutcome::Opened {
            expiration,
            access_key_suffix,
        })) => Ok(Opened {
            expiration: crate::timefmt::iso8601(expiration),
            access_key_suffix,
        }),
        Ok(Ok(CodeOutcome::Refused(why))) => Err(ActionError::CodeRefused(why)),
        Ok(Ok(CodeOutcome::Failed(why))) => Err(ActionError::CodeFailed(why)),
        Ok(Err(_)) => Err(ActionError::CodeFailed(
            "the code was not used (the session was opened without it, or cleared)".into(),
        )),
        Err(_) => Err(ActionError::CodeFailed(
            "no answer from STS yet: the agent's log says more".into(),
        )),
    }
}

/// Makes `name` the active profile. The new profile may give workloads
/// another role: the old one's credentials go, the new one's are fetched.
/// Working out what to prefetch reads the cgroup tree: not on a worker.
pub(super) async fn switch_profile(state: &AdminState, name: String) -> Result<(), ActionError> {
    let engine = state.engine.clone().ok_or(ActionError::NoSession)?;
    let roles = std::sync::Arc::clone(&state.roles);
    tokio::task::spawn_blocking(move || {
        engine.use_profile(&name, |role| roles.still_assigned(role), || roles.wanted())
    })
    .await
    .map_err(|e| ActionError::CodeFailed(format!("switching profile: {e}")))??;
    Ok(())
}
