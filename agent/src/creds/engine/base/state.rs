//! What the engine keeps of the base in force: its credentials, the
//! active profile, the generation that says whose cached credentials are
//! whose.

use std::sync::Arc;

use super::{Base, BaseConfig, Identity};
use crate::creds::Role;
use crate::creds::sts::BaseCreds;

/// The base as it is now.
#[derive(Debug, Clone)]
pub(crate) struct BaseState {
    pub(crate) base: Arc<dyn Base>,
    /// The credentials, when known.
    pub(crate) creds: Option<BaseCreds>,
    /// The active profile (profiles only).
    pub(crate) profile: Option<String>,
    /// Bumped whenever the base changes: everything cached under an older
    /// generation is discarded.
    pub(crate) generation: u64,
    /// The generation the active profile (and so perhaps the account)
    /// took over at: credentials from before it are another identity's,
    /// never served on its behalf once it fails to replace them.
    pub(crate) profile_generation: u64,
    /// The TOTP step whose code was last used: AWS refuses a code twice.
    pub(crate) last_totp_step: Option<u64>,
}

impl BaseState {
    pub(crate) fn new(config: BaseConfig) -> Self {
        let base = config.into_base();
        Self {
            creds: base.initial(),
            profile: base.initial_profile(),
            base,
            generation: 1,
            profile_generation: 1,
            last_totp_step: None,
        }
    }

    /// The settings in force.
    pub(crate) fn identity(&self) -> &Identity {
        self.base.identity(self.profile.as_deref())
    }

    /// The active profile's role, if it sets one.
    pub(crate) fn profile_role(&self) -> Option<&Arc<Role>> {
        let name = self.profile.as_ref()?;
        self.base.profiles()?.get(name)?.role.as_ref()
    }

    /// How the base is described in status and logs.
    pub(crate) fn describe(&self) -> String {
        self.base
            .describe(self.creds.as_ref(), self.profile.as_deref())
    }
}
