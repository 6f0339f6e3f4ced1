//! Keys posted to the admin socket (`imds-agent bootstrap`): none at
//! start, and each post replaces the last (the engine refetches every
//! role with the new keys and serves what it has until then).

use std::sync::Arc;

use super::{Base, BaseError, Identity};
use crate::creds::Keys;
use crate::creds::sts::BaseCreds;

#[derive(Debug)]
pub(super) struct Bootstrap {
    pub(super) identity: Identity,
}

impl Base for Bootstrap {
    fn initial(&self) -> Option<BaseCreds> {
        None
    }

    fn identity(&self, _: Option<&str>) -> &Identity {
        &self.identity
    }

    fn describe(&self, creds: Option<&BaseCreds>, _: Option<&str>) -> String {
        match creds {
            None => "bootstrap (waiting for credentials)".to_owned(),
            Some(creds) => format!("bootstrap ({creds:?})"),
        }
    }

    fn fingerprint(&self, _: Option<&str>) -> Option<String> {
        // The keys come after the start: none vouch for what an earlier
        // run cached.
        None
    }

    fn accept_keys(&self, keys: Keys) -> Result<BaseCreds, BaseError> {
        Ok(BaseCreds::Keys(Arc::new(keys)))
    }
}
