//! Which role a workload gets.
//!
//! In order: the most specific matching rule (`rules.rs`, from
//! `roles.d/*.toml`); for a container, the role its environment asks for
//! (`IAM_ROLE`, when allowed), then `roles.container_default`; then the
//! active profile's role or `roles.default`. A workload attribution could
//! not tell gets nothing.
//!
//! Unless a rule names one, a role's session is named after the workload
//! (its unit or container), so CloudTrail shows who acted.

pub mod files;
pub mod glob;
pub mod policy;
pub mod rules;
pub mod watch;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use self::glob::Glob;
use self::rules::{RuleSet, Subject};
use crate::attribution::Containers;
use crate::attribution::Workload;
use crate::attribution::cgroup::CgroupIndex;
use crate::creds::engine::Engine;
use crate::creds::{Role, session_name};

/// Looks up a workload's role. Called on every request, so it answers from
/// memory.
pub trait RoleAssignment: Send + Sync + fmt::Debug {
    /// The role of `workload`, or `None` if it has none (then every
    /// credential path answers 404).
    fn role_for(&self, workload: &Workload) -> Option<Arc<Role>>;

    /// Changes whenever `role_for` may answer differently for a workload;
    /// callers may cache answers while it stays the same.
    fn generation(&self) -> u64;

    /// The roles to fetch ahead of need: every role the assignment names for
    /// a workload the agent already knows.
    fn wanted(&self) -> Vec<Role>;

    /// The same, by need: the roles of workloads that exist now, and those
    /// only foreseen (named by an exact rule or the default, for workloads
    /// that may come). Roles named only by a rule with a wildcard are in
    /// neither until a workload it matches exists: a glob may match none.
    fn wanted_by_need(&self) -> WantedByNeed {
        WantedByNeed {
            live: self.wanted(),
            foreseen: Vec::new(),
        }
    }

    /// Whether credentials cached for `role` may still be served to
    /// someone: false once no assignment names the role (with its
    /// external id and duration) any more.
    fn still_assigned(&self, role: &Role) -> bool;

    /// Whether a rule names an executable: then a process's executable must
    /// be read (off the request path) before `role_for` is asked.
    fn needs_exe(&self) -> bool {
        false
    }

    /// Whether a rule's executable pattern matches `path`: then whether the
    /// process still runs what it connected with must be checked too.
    fn exe_rule_matches(&self, _path: &str) -> bool {
        false
    }
}

/// `RoleAssignment::wanted_by_need`'s answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WantedByNeed {
    /// Roles of workloads that exist now: fetched at once.
    pub live: Vec<Role>,
    /// Roles for workloads that may come: fetched within the prefetch
    /// spread.
    pub foreseen: Vec<Role>,
}

/// Drops repeats, keeping the first of each (the order is the priority).
fn dedup(roles: &mut Vec<Role>) {
    let mut seen = std::collections::HashSet::new();
    roles.retain(|role| seen.insert(role.clone()));
}

/// Which container roles from the environment are honoured.
#[derive(Debug, Clone)]
pub struct EnvRoles {
    /// Patterns a role must match, as written (`*` matches anything).
    pub allowed: Vec<Glob>,
}

/// The assignment settings that do not change at run time.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// `roles.default`: every attributed workload no rule matches.
    pub default: Option<Role>,
    /// `roles.container_default`: containers no rule matches and whose
    /// environment names no (allowed) role.
    pub container_default: Option<Role>,
    /// Container roles from the environment, if honoured.
    pub env_roles: Option<EnvRoles>,
    /// Name sessions after the workload (else the agent's default name).
    pub session_per_workload: bool,
}

/// The assignments.
#[derive(Debug)]
pub struct Assignments {
    defaults: Defaults,
    rules: RwLock<Arc<RuleSet>>,
    generation: AtomicU64,
    profiles: Option<Engine>,
    containers: Option<Arc<Containers>>,
    cgroups: Option<Arc<CgroupIndex>>,
}

impl Assignments {
    /// Assignments by `rules` and `defaults`. `profiles` (an engine with
    /// profiles) lets the active profile's role replace the default;
    /// `containers` and `cgroups` are what the agent knows of workloads, for
    /// prefetching.
    pub fn new(
        defaults: Defaults,
        rules: RuleSet,
        profiles: Option<Engine>,
        containers: Option<Arc<Containers>>,
        cgroups: Option<Arc<CgroupIndex>>,
    ) -> Self {
        Self {
            defaults,
            rules: RwLock::new(Arc::new(rules)),
            generation: AtomicU64::new(1),
            profiles,
            containers,
            cgroups,
        }
    }

    /// Replaces the rules (a reload of `roles.d`).
    pub fn set_rules(&self, rules: RuleSet) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The settings that do not change at run time.
    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<RuleSet> {
        Arc::clone(&self.rules.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn fallback(&self) -> Option<Arc<Role>> {
        self.profiles
            .as_ref()
            .and_then(Engine::profile_role)
            .or_else(|| self.defaults.default.clone().map(Arc::new))
    }

    fn env_role(&self, workload: &Workload) -> Option<Role> {
        let allowed = &self.defaults.env_roles.as_ref()?.allowed;
        let role = workload.container()?.env_role.as_ref()?;
        let written = role.spec.to_string();
        allowed
            .iter()
            .any(|g| g.matches(&written))
            .then(|| role.clone())
    }

    /// The role for `workload` before its session is named.
    fn base_role(&self, workload: &Workload, rules: &RuleSet) -> Option<Arc<Role>> {
        match workload {
            Workload::Unknown(_) => None,
            Workload::Address(_) => self.fallback(),
            Workload::Process(_) | Workload::Container(_) => {
                if let Some(rule) = rules.find(&Subject::of(workload)) {
                    return Some(Arc::new(rule.role.clone()));
                }
                if let Some(role) = self.env_role(workload) {
                    return Some(Arc::new(role));
                }
                if workload.container().is_some()
                    && let Some(role) = &self.defaults.container_default
                {
                    return Some(Arc::new(role.clone()));
                }
                self.fallback()
            }
        }
    }

    /// Names the session after the workload, unless the role names it.
    fn with_session(&self, role: Arc<Role>, workload: &Workload) -> Arc<Role> {
        if role.session.session_name.is_some() || !self.defaults.session_per_workload {
            return role;
        }
        match workload
            .session_label()
            .and_then(|l| session_name::sanitize(&l))
        {
            Some(name) => {
                let mut named = (*role).clone();
                named.session.session_name = Some(name);
                Arc::new(named)
            }
            None => role,
        }
    }

    /// What the processes of cgroup `entry` will ask for: the roles of the
    /// rules its path matches (most specific first; one naming a uid only
    /// if a process there runs as that uid; one naming an executable
    /// whatever runs there, the request checks), into `ruled`, and, for a
    /// system unit whose processes no rule covers, the fallback named after
    /// the unit, into `units`. Only cgroups root named all of: a user's
    /// own (however many it makes, whatever it calls them) and users'
    /// sessions are fetched when they ask, never ahead, so they can't
    /// crowd the host's units out of the prefetch.
    fn prefetch_cgroup(
        &self,
        rules: &RuleSet,
        root: &std::path::Path,
        entry: &crate::attribution::cgroup::CgroupEntry,
        ruled: &mut Vec<Role>,
        units: &mut Vec<Role>,
    ) {
        let facts = &entry.facts;
        // Users' sessions are root-named too (`session-N.scope`), but a
        // user opens as many as it likes.
        if *facts.trusted != *entry.path
            || facts.user_unit.is_some()
            || facts.user_slice.is_some()
            || facts.container_scope
        {
            return;
        }
        let label = facts.label().and_then(|l| session_name::sanitize(&l));
        let named = |role: &Role| {
            let mut role = role.clone();
            if role.session.session_name.is_none() {
                role.session.session_name.clone_from(&label);
            }
            role
        };
        let subject = Subject::cgroup(facts);
        // The uids not yet covered by a rule, read when a rule asks.
        let mut uncovered: Option<std::collections::BTreeSet<u32>> = None;
        for rule in rules.rules() {
            if !rule.matches_place(&subject) {
                continue;
            }
            match rule.uid() {
                Some(uid) => {
                    let uids = uncovered.get_or_insert_with(|| {
                        crate::attribution::procs::uids_in(root, &entry.path)
                    });
                    if !uids.contains(&uid) {
                        continue;
                    }
                    ruled.push(named(&rule.role));
                    if !rule.names_exe() {
                        uids.remove(&uid);
                        if uids.is_empty() {
                            return;
                        }
                    }
                }
                None => {
                    ruled.push(named(&rule.role));
                    if !rule.names_exe() {
                        return;
                    }
                }
            }
        }
        let unit = facts.unit.as_deref().filter(|u| {
            (u.ends_with(".service") || u.ends_with(".scope"))
                && crate::attribution::facts::user_manager_uid(u).is_none()
        });
        if unit.is_some()
            && let Some(role) = self.fallback()
        {
            units.push(named(&role));
        }
    }

    /// The roles every assignment names, ignoring session names: what
    /// `still_assigned` compares against.
    fn named_roles(&self) -> Vec<Role> {
        let mut named: Vec<Role> = self
            .rules()
            .rules()
            .iter()
            .map(|r| r.role.clone())
            .collect();
        named.extend(self.defaults.default.clone());
        named.extend(self.defaults.container_default.clone());
        if let Some(profiles) = &self.profiles {
            named.extend(profiles.profile_role().map(|r| (*r).clone()));
        }
        if let Some(containers) = &self.containers {
            for container in containers.all() {
                let workload = Workload::Container(container);
                named.extend(self.env_role(&workload));
            }
        }
        named
    }

    /// What `wanted` and `wanted_by_need` are made of: roles of workloads
    /// the agent knows (`live`), and roles foreseen for workloads that may
    /// come (`foreseen`); rules with a wildcard count among the foreseen
    /// only `with_globs`.
    fn by_need(&self, with_globs: bool) -> WantedByNeed {
        let rules = self.rules();
        let per_workload = self.defaults.session_per_workload;
        let mut foreseen = Vec::new();
        // Roles whose session does not depend on the workload.
        for rule in rules.rules() {
            if (rule.role.session.session_name.is_some() || !per_workload)
                && (with_globs || rule.is_exact())
            {
                foreseen.push(rule.role.clone());
            }
        }
        // The fallback as it is (unnamed session): what workloads ask for
        // when sessions are not named after them, or when the agent can't
        // name them (attribution off).
        if let Some(role) = self.fallback()
            && (!per_workload || self.cgroups.is_none())
        {
            foreseen.push((*role).clone());
        }
        // Containers, and the cgroups a rule matches.
        let mut wanted = Vec::new();
        if let Some(containers) = &self.containers {
            for container in containers.all() {
                let workload = Workload::Container(container);
                wanted.extend(self.role_for(&workload).map(|r| (*r).clone()));
            }
        }
        let mut units = Vec::new();
        if let Some(cgroups) = &self.cgroups
            && per_workload
        {
            // In path order: when there are more than the prefetch may
            // take, every sync keeps the same ones.
            let mut all = cgroups.all();
            all.sort_unstable_by(|a, b| a.path.cmp(&b.path));
            for entry in all {
                self.prefetch_cgroup(&rules, cgroups.root(), &entry, &mut wanted, &mut units);
            }
        }
        // The host's units on the fallback last: the engine prefetches the
        // first ones when there are too many.
        wanted.extend(units);
        WantedByNeed {
            live: wanted,
            foreseen,
        }
    }
}

impl RoleAssignment for Assignments {
    fn role_for(&self, workload: &Workload) -> Option<Arc<Role>> {
        let rules = self.rules();
        let role = self.base_role(workload, &rules)?;
        Some(self.with_session(role, workload))
    }

    fn generation(&self) -> u64 {
        // A profile switch may change the fallback role.
        let profile = self.profiles.as_ref().map_or(0, Engine::base_generation);
        self.generation.load(Ordering::Relaxed) + profile
    }

    fn wanted(&self) -> Vec<Role> {
        let WantedByNeed { live, mut foreseen } = self.by_need(true);
        foreseen.extend(live);
        dedup(&mut foreseen);
        foreseen
    }

    fn wanted_by_need(&self) -> WantedByNeed {
        let WantedByNeed {
            mut live,
            mut foreseen,
        } = self.by_need(false);
        // One set for both: a role live and foreseen is live only.
        let mut seen = std::collections::HashSet::new();
        live.retain(|role| seen.insert(role.clone()));
        foreseen.retain(|role| seen.insert(role.clone()));
        WantedByNeed { live, foreseen }
    }

    fn needs_exe(&self) -> bool {
        self.rules().rules().iter().any(|r| r.names_exe())
    }

    fn exe_rule_matches(&self, path: &str) -> bool {
        self.rules().rules().iter().any(|r| r.exe_matches(path))
    }

    fn still_assigned(&self, role: &Role) -> bool {
        self.named_roles().iter().any(|named| {
            named.spec == role.spec
                && named.session.external_id == role.session.external_id
                && named.session.duration == role.session.duration
                && (named.session.session_name.is_none()
                    || named.session.session_name == role.session.session_name)
        })
    }
}

#[cfg(test)]
mod tests;
