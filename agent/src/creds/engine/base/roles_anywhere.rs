//! IAM Roles Anywhere: the agent's own credentials are sessions from the
//! host's certificate (`creds::roles_anywhere`), cached and refreshed by
//! the STS client like any provider's, or served as they are in `direct`
//! mode.

use aws_credential_types::provider::SharedCredentialsProvider;

use super::{Base, Identity};
use crate::creds::roles_anywhere::provider::RolesAnywhere;
use crate::creds::sts::BaseCreds;

#[derive(Debug)]
pub(super) struct FromCertificate {
    pub(super) provider: RolesAnywhere,
    pub(super) identity: Identity,
    /// The certificate's file, for status and logs.
    pub(super) certificate: String,
}

impl Base for FromCertificate {
    fn initial(&self) -> Option<BaseCreds> {
        Some(BaseCreds::Chain(SharedCredentialsProvider::new(
            self.provider.clone(),
        )))
    }

    fn renewed(&self) -> Option<BaseCreds> {
        // Each wrapping has a cache slot of its own.
        self.initial()
    }

    fn identity(&self, _: Option<&str>) -> &Identity {
        &self.identity
    }

    fn describe(&self, _: Option<&BaseCreds>, _: Option<&str>) -> String {
        format!("IAM Roles Anywhere ({})", self.certificate)
    }

    fn roles_anywhere(&self) -> Option<&RolesAnywhere> {
        Some(&self.provider)
    }

    fn fingerprint(&self, _: Option<&str>) -> Option<String> {
        Some(format!(
            "roles anywhere {} {:?}",
            self.provider.fingerprint()?,
            self.identity
        ))
    }
}
