//! What the agent's own credentials can't give, which role assignments
//! (the defaults and every rule file) must not ask for. Checked at start,
//! by `check-config`, and at every rules reload (a refused set leaves the
//! last good one in force), so that nothing is first found out by STS, or
//! worse, not at all.

use std::time::Duration;

use super::rules::RuleSet;
use crate::creds::Role;

/// AWS caps a chained role session at an hour.
const CHAINED_MAX: Duration = Duration::from_secs(3600);

/// The limits.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Every role is assumed with a role session (Roles Anywhere's), so
    /// every session is chained.
    pub chained: bool,
    /// `mode = "direct"`: every workload given any role is served this
    /// role's session (its ARN), so a rule naming another role would hand
    /// out this one under that name.
    pub direct_role: Option<String>,
    /// The account and partition a role named without them is in.
    pub default_account: Option<String>,
    pub partition: String,
}

impl Policy {
    /// Why `role` (given by `origin`) can't be served as asked.
    pub fn problems_of(&self, role: &Role, origin: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.chained
            && self.direct_role.is_none()
            && role.session.duration.is_some_and(|d| d > CHAINED_MAX)
        {
            out.push(format!(
                "{origin}: duration_seconds over 3600: with Roles Anywhere every role is assumed with a role session, and AWS caps a chained session at one hour"
            ));
        }
        if let Some(direct) = &self.direct_role {
            let account = self
                .default_account
                .as_deref()
                .or_else(|| direct.split(':').nth(4));
            let arn = role.spec.arn(account, &self.partition).ok();
            if arn.as_deref() != Some(direct.as_str()) {
                out.push(format!(
                    "{origin}: names {}, but mode = \"direct\" serves every workload given a role the session of {direct}: name that role, or assume each workload's role (leave mode out)",
                    role.spec
                ));
            } else if role.session.duration.is_some() || role.session.external_id.is_some() {
                out.push(format!(
                    "{origin}: mode = \"direct\" serves the Roles Anywhere session as it is: a rule's duration_seconds or external_id would be ignored"
                ));
            }
        }
        out
    }

    /// Why the rules of `rules` can't be served as they ask.
    pub fn problems(&self, rules: &RuleSet) -> Vec<String> {
        rules
            .rules()
            .iter()
            .flat_map(|r| self.problems_of(&r.role, &r.origin))
            .collect()
    }
}
