//! An `Sts` that counts the calls it passes on (`imds_sts_calls_total`), in
//! front of the real one.

use std::time::Duration;

use super::{AssumeRoleRequest, BaseCreds, BoxFuture, CallerIdentity, Issued, Mfa, Sts, StsError};
use crate::metrics::{self, StsAction};

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
        let result = call.await;
        metrics::global().sts_call(action, result.is_ok());
        result
    })
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
