//! Named profiles, each with its own keys and settings (and optionally a
//! role every workload gets while it is active); one is active, and a
//! person switches between them at run time (`imds-agent profile use`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Base, BaseError, Identity, Profile};
use crate::creds::sts::BaseCreds;

#[derive(Debug)]
pub(super) struct Profiles {
    profiles: BTreeMap<String, Profile>,
    /// The one active at start; the config checks that it exists.
    active: String,
}

impl Profiles {
    /// Profiles are never empty: the config refuses `base = "profiles"`
    /// without one.
    pub(super) fn new(profiles: BTreeMap<String, Profile>, active: String) -> Self {
        assert!(!profiles.is_empty(), "profiles are never empty");
        Self { profiles, active }
    }

    fn get(&self, name: Option<&str>) -> &Profile {
        let name = name.unwrap_or(&self.active);
        // `name` only ever names a configured profile; the first is a
        // fallback that can't be reached.
        self.profiles
            .get(name)
            .or_else(|| self.profiles.get(&self.active))
            .or_else(|| self.profiles.values().next())
            .expect("profiles are never empty")
    }
}

impl Base for Profiles {
    fn initial(&self) -> Option<BaseCreds> {
        Some(BaseCreds::Keys(Arc::new(self.get(None).keys.clone())))
    }

    fn initial_profile(&self) -> Option<String> {
        Some(self.active.clone())
    }

    fn identity(&self, profile: Option<&str>) -> &Identity {
        &self.get(profile).identity
    }

    fn describe(&self, _: Option<&BaseCreds>, profile: Option<&str>) -> String {
        format!("profile {}", profile.unwrap_or("?"))
    }

    fn fingerprint(&self, profile: Option<&str>) -> Option<String> {
        let name = profile.unwrap_or(&self.active);
        let active = self.get(profile);
        Some(format!(
            "profile {name} {} {:?} {:?}",
            active.keys.access_key_id,
            active.identity,
            active.role.as_deref()
        ))
    }

    fn switch_to(&self, name: &str) -> Result<BaseCreds, BaseError> {
        let profile = self
            .profiles
            .get(name)
            .ok_or_else(|| BaseError::UnknownProfile(name.to_owned()))?;
        Ok(BaseCreds::Keys(Arc::new(profile.keys.clone())))
    }

    fn profiles(&self) -> Option<&BTreeMap<String, Profile>> {
        Some(&self.profiles)
    }
}
