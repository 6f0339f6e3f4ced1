//! Which role a workload gets.

use std::fmt;
use std::sync::Arc;

use crate::attribution::Workload;
use crate::creds::Role;

/// Looks up a workload's role. Called on every request, so it answers from
/// memory.
pub trait RoleAssignment: Send + Sync + fmt::Debug {
    /// The role of `workload`, or `None` if it has none (then every
    /// credential path answers 404).
    fn role_for(&self, workload: &Workload) -> Option<Arc<Role>>;
}

/// Every workload gets the same role, or none does.
#[derive(Debug, Clone, Default)]
pub struct SameForAll {
    role: Option<Arc<Role>>,
}

impl SameForAll {
    /// Gives everyone `role`.
    pub fn new(role: Option<Role>) -> Self {
        Self {
            role: role.map(Arc::new),
        }
    }
}

impl RoleAssignment for SameForAll {
    fn role_for(&self, _workload: &Workload) -> Option<Arc<Role>> {
        self.role.clone()
    }
}
