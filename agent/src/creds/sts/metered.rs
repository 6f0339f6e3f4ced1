//! An `Sts` that counts the calls it passes on (`imds_sts_calls_total`, by
//! outcome) and times them (`imds_sts_call_duration_seconds`), in front of
//! the real one.

use std::time::{Duration, Instant};

use super::{AssumeRoleRequest, BaseCreds, BoxFuture, CallerIdentity, Issued, Mfa, Sts, StsError};
use crate::metrics::{self, StsAction, StsOutcome};

/// Counts every call to `inner` by action and outcome.
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
}

impl<S> Metered<S> {
    /// Counts `inner`'s calls.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

fn counted<'a, T: Send + 'a>(
    action: StsAction,
    call: BoxFuture<'a, Result<T, StsError>>,
) -> BoxFuture<'a, Result<T, StsError>> {
    Box::pin(async move {
        let started = Instant::now();
        let result = call.await;
        metrics::global().sts_call(action, outcome(&result), started.elapsed());
        result
    })
}

/// What kind of outcome `result` is, for the operator's alerts.
fn outcome<T>(result: &Result<T, StsError>) -> StsOutcome {
    match result {
        Ok(_) => StsOutcome::Success,
        Err(StsError::Throttled(_)) => StsOutcome::Throttled,
        // IAM's own code, and the spelling of services that follow the
        // newer convention.
        Err(StsError::Refused { code, .. })
            if code == "AccessDenied" || code == "AccessDeniedException" =>
        {
            StsOutcome::AccessDenied
        }
        Err(_) => StsOutcome::Error,
    }
}

impl<S: Sts> Sts for Metered<S> {
    fn assume_role<'a>(
        &'a self,
        base: &'a BaseCreds,
        region: &'a str,
        request: &'a AssumeRoleRequest,
        mfa: Option<&'a Mfa>,
    ) -> BoxFuture<'a, Result<Issued, StsError>> {
        counted(
            StsAction::AssumeRole,
            self.inner.assume_role(base, region, request, mfa),
        )
    }

    fn get_session_token<'a>(
        &'a self,
        base: &'a BaseCreds,
        region: &'a str,
        duration: Duration,
        mfa: Option<&'a Mfa>,
    ) -> BoxFuture<'a, Result<Issued, StsError>> {
        counted(
            StsAction::GetSessionToken,
            self.inner.get_session_token(base, region, duration, mfa),
        )
    }

    fn get_caller_identity<'a>(
        &'a self,
        base: &'a BaseCreds,
        region: &'a str,
    ) -> BoxFuture<'a, Result<CallerIdentity, StsError>> {
        counted(
            StsAction::GetCallerIdentity,
            self.inner.get_caller_identity(base, region),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_by_kind() {
        let refused = |code: &str| -> Result<(), StsError> {
            Err(StsError::Refused {
                code: code.to_owned(),
                message: String::new(),
            })
        };
        assert_eq!(outcome(&Ok::<(), StsError>(())), StsOutcome::Success);
        assert_eq!(
            outcome::<()>(&Err(StsError::Throttled("Rate exceeded".into()))),
            StsOutcome::Throttled
        );
        assert_eq!(outcome(&refused("AccessDenied")), StsOutcome::AccessDenied);
        assert_eq!(outcome(&refused("ExpiredToken")), StsOutcome::Error);
        assert_eq!(
            outcome::<()>(&Err(StsError::Unavailable("timeout".into()))),
            StsOutcome::Error
        );
    }
}
