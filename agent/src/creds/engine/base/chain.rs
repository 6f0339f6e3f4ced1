//! The standard credential chain, as SDKs resolve it (environment, shared
//! files, SSO, web identity, optionally the real instance profile): its
//! provider caches and refreshes what it finds.

use aws_credential_types::provider::SharedCredentialsProvider;

use super::{Base, Identity};
use crate::creds::sts::BaseCreds;

#[derive(Debug)]
pub(super) struct Chain {
    pub(super) provider: SharedCredentialsProvider,
    pub(super) identity: Identity,
}

impl Base for Chain {
    fn initial(&self) -> Option<BaseCreds> {
        Some(BaseCreds::Chain(self.provider.clone()))
    }

    fn renewed(&self) -> Option<BaseCreds> {
        // A new provider around the same one: a cache slot of its own.
        Some(BaseCreds::Chain(SharedCredentialsProvider::new(
            self.provider.clone(),
        )))
    }

    fn identity(&self, _: Option<&str>) -> &Identity {
        &self.identity
    }

    fn describe(&self, _: Option<&BaseCreds>, _: Option<&str>) -> String {
        "the standard credential chain".to_owned()
    }

    fn fingerprint(&self, _: Option<&str>) -> Option<String> {
        // Who the chain resolves to is not known without asking: a change
        // of its keys behind the same config is not seen (the README says
        // so), and bare role names are taken back only with a configured
        // account.
        Some(format!("chain {:?}", self.identity))
    }
}
