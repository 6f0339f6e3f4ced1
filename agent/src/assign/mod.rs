//! Which role a workload gets.

use std::fmt;
use std::sync::Arc;

use crate::attribution::Workload;
use crate::creds::Role;
use crate::creds::engine::Engine;

/// Looks up a workload's role. Called on every request, so it answers from
/// memory.
pub trait RoleAssignment: Send + Sync + fmt::Debug {
    /// The role of `workload`, or `None` if it has none (then every
    /// credential path answers 404).
    fn role_for(&self, workload: &Workload) -> Option<Arc<Role>>;

    /// Every role this assignment can hand out now: what the credentials
    /// engine fetches ahead of need.
    fn roles(&self) -> Vec<Role>;
}

/// Every workload gets the same role: the active profile's, if it names
/// one, else the configured default; or none.
#[derive(Debug, Clone, Default)]
pub struct DefaultRole {
    configured: Option<Arc<Role>>,
    profiles: Option<Engine>,
}

impl DefaultRole {
    /// Gives everyone `role`, unless `profiles` (an engine with profiles)
    /// has an active profile that names a role.
    pub fn new(role: Option<Role>, profiles: Option<Engine>) -> Self {
        Self {
            configured: role.map(Arc::new),
            profiles,
        }
    }

    fn current(&self) -> Option<Arc<Role>> {
        self.profiles
            .as_ref()
            .and_then(Engine::profile_role)
            .or_else(|| self.configured.clone())
    }
}

impl RoleAssignment for DefaultRole {
    fn role_for(&self, _workload: &Workload) -> Option<Arc<Role>> {
        self.current()
    }

    fn roles(&self) -> Vec<Role> {
        self.current().map(|r| (*r).clone()).into_iter().collect()
    }
}
