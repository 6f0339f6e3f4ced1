//! Role assignment rules: which workload gets which role.
//!
//! A rule file (`/etc/imds-agent/roles.d/*.toml`) holds `[[rule]]` tables:
//!
//! ```toml
//! [[rule]]
//! unit = "nginx.service"              # system unit: exact, or a glob (`app-*.scope`)
//! user_unit = "sync.service"          # a unit of user `uid`'s own manager (needs `uid`)
//! cgroup = "/system.slice/web/**"     # cgroup path: `*` within a segment, `**` across
//! uid = 33                            # the socket owner's uid
//! container_name = "api-*"            # container name, glob
//! container_label = { team = "blue" } # every label, exact values
//! exe = "/usr/bin/python3*"           # the executable (eBPF mode: the redirect knows the process)
//! role = "arn:aws:iam::123456789012:role/web"   # name, name@account or ARN
//! external_id = "shared-secret"       # optional
//! session_name = "web"                # optional (default: the workload's name)
//! duration_seconds = 3600             # optional
//! ```
//!
//! A rule needs at least one condition; all its conditions must hold. A
//! rule is about containers (`container_name`, `container_label`) or about
//! processes outside containers (the others), never both: a process in a
//! container is what the container registry says it is, whatever its uid
//! or executable (a container's root is uid 0 too). `unit`, `user_unit`
//! and `cgroup` match only what root named (see `attribution::facts`):
//! `unit = "nginx.service"` is `/system.slice/nginx.service`, never a
//! user's `systemd-run --user --unit nginx.service`, which is `user_unit`
//! with that user's `uid`. When several rules match, the most specific
//! wins:
//! 1. the strongest kind of condition it has: container (name or label),
//!    then executable, then unit or user unit, then cgroup, then uid;
//! 2. then more conditions;
//! 3. then more exact patterns (an exact name beats a glob);
//! 4. then more literal characters in its patterns (`web-*` beats `w*`);
//! 5. then the first in file order (files sorted by name).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::glob::Glob;
use crate::attribution::facts::{CgroupFacts, UserUnit};
use crate::attribution::{ContainerInfo, Workload};
use crate::config::{ConfigError, Origin, Source};
use crate::creds::{Role, SessionParams, session_name};

/// A rule file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<RuleEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    unit: Option<String>,
    user_unit: Option<String>,
    cgroup: Option<String>,
    uid: Option<u32>,
    container_name: Option<String>,
    container_label: Option<BTreeMap<String, String>>,
    exe: Option<String>,
    role: String,
    external_id: Option<String>,
    session_name: Option<String>,
    duration_seconds: Option<u64>,
}

/// One checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    unit: Option<Glob>,
    user_unit: Option<Glob>,
    cgroup: Option<Glob>,
    uid: Option<u32>,
    container_name: Option<Glob>,
    container_label: BTreeMap<String, String>,
    exe: Option<Glob>,
    /// The role it gives (its session name is the rule's, if set).
    pub role: Role,
    /// Where it was written, for logs: `file:line`.
    pub origin: String,
    rank: (u8, usize, usize, usize),
}

/// What a rule can be asked about a workload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    cgroup: Option<&'a str>,
    unit: Option<&'a str>,
    user_unit: Option<&'a UserUnit>,
    uid: Option<u32>,
    container: Option<&'a ContainerInfo>,
    program: Option<&'a crate::attribution::Program>,
}

impl<'a> Subject<'a> {
    /// A cgroup whose processes are not known yet (prefetching): what its
    /// path says.
    pub fn cgroup(facts: &'a CgroupFacts) -> Self {
        Self {
            cgroup: Some(&facts.trusted),
            unit: facts.unit.as_deref(),
            ..Self::default()
        }
    }

    /// What is known of `workload`. A process in a container is the
    /// container, and nothing else about it counts.
    pub fn of(workload: &'a Workload) -> Self {
        match workload {
            Workload::Process(p) if p.container.is_some() => Self {
                container: p.container.as_deref(),
                ..Self::default()
            },
            Workload::Process(p) => Self {
                cgroup: Some(&p.facts.trusted),
                unit: p.facts.unit.as_deref(),
                user_unit: p.facts.user_unit.as_ref(),
                uid: Some(p.uid),
                container: None,
                program: p.program.as_ref(),
            },
            Workload::Container(c) => Self {
                container: Some(c),
                ..Self::default()
            },
            Workload::Address(_) | Workload::Unknown(_) => Self::default(),
        }
    }
}

impl Rule {
    /// The conditions as written (`unit = "nginx.service"`), for the admin
    /// socket.
    pub fn conditions(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut glob = |key: &str, pattern: &Option<Glob>| {
            if let Some(p) = pattern {
                out.push(format!("{key} = {:?}", p.as_str()));
            }
        };
        glob("unit", &self.unit);
        glob("user_unit", &self.user_unit);
        glob("cgroup", &self.cgroup);
        glob("container_name", &self.container_name);
        glob("exe", &self.exe);
        if let Some(uid) = self.uid {
            out.push(format!("uid = {uid}"));
        }
        for (key, value) in &self.container_label {
            out.push(format!("container_label.{key} = {value:?}"));
        }
        out
    }

    /// Whether every pattern of the rule is exact (no wildcard): it names
    /// the workloads it is for, rather than any that may match.
    pub fn is_exact(&self) -> bool {
        [
            &self.unit,
            &self.user_unit,
            &self.cgroup,
            &self.container_name,
            &self.exe,
        ]
        .iter()
        .all(|pattern| pattern.as_ref().is_none_or(Glob::is_exact))
    }

    /// Whether the rule names an executable.
    pub fn names_exe(&self) -> bool {
        self.exe.is_some()
    }

    /// Whether the rule's executable pattern matches `path`.
    pub fn exe_matches(&self, path: &str) -> bool {
        self.exe.as_ref().is_some_and(|p| p.matches(path))
    }

    /// The uid the rule asks for, if it does.
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// Whether every condition holds for `subject`.
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        self.matches_place(subject) && self.matches_process(subject)
    }

    /// Whether the conditions on where a workload is (its cgroup, unit,
    /// user unit, container) hold for `subject`: what a cgroup's path says
    /// before its processes are known (prefetching).
    pub fn matches_place(&self, subject: &Subject<'_>) -> bool {
        let glob = |pattern: &Option<Glob>, value: Option<&str>| match pattern {
            None => true,
            Some(p) => value.is_some_and(|v| p.matches(v)),
        };
        // A user unit is that user's: the rule's uid (required with
        // `user_unit`) must be the user whose manager it is under.
        // A glob never reaches a user's manager (`*.service` is not every
        // user's `user@UID.service`): name it exactly.
        let unit_ok = match (&self.unit, subject.unit) {
            (Some(pattern), Some(unit)) if !pattern.is_exact() => {
                crate::attribution::facts::user_manager_uid(unit).is_none() && pattern.matches(unit)
            }
            (Some(pattern), Some(unit)) => pattern.matches(unit),
            (Some(_), None) => false,
            (None, _) => true,
        };
        let user_unit = match &self.user_unit {
            None => true,
            Some(pattern) => subject
                .user_unit
                .is_some_and(|u| Some(u.uid) == self.uid && pattern.matches(&u.name)),
        };
        unit_ok
            && user_unit
            && glob(&self.cgroup, subject.cgroup)
            && glob(
                &self.container_name,
                subject.container.map(|c| c.name.as_str()),
            )
            && (self.container_label.is_empty()
                || subject.container.is_some_and(|c| {
                    self.container_label
                        .iter()
                        .all(|(k, v)| c.labels.get(k) == Some(v))
                }))
    }

    /// Whether the conditions on the process (its uid, its executable)
    /// hold for `subject`.
    fn matches_process(&self, subject: &Subject<'_>) -> bool {
        // An executable's path matches only if it is still the file the
        // process connected with (`Program::runs_what_connected`).
        let exe = match &self.exe {
            None => true,
            Some(pattern) => subject.program.is_some_and(|p| {
                p.exe().is_some_and(|path| pattern.matches(path)) && p.runs_what_connected()
            }),
        };
        exe && self.uid.is_none_or(|uid| subject.uid == Some(uid))
    }
}

/// Every rule of every file, most specific first.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
}

impl RuleSet {
    /// The rules of several files, in file order.
    pub fn from_files(files: Vec<Vec<Rule>>) -> Self {
        let mut rules: Vec<(usize, Rule)> = files.into_iter().flatten().enumerate().collect();
        // Stable sort: equal ranks keep file order.
        rules.sort_by(|(ia, a), (ib, b)| b.rank.cmp(&a.rank).then(ia.cmp(ib)));
        Self {
            rules: rules.into_iter().map(|(_, r)| Arc::new(r)).collect(),
        }
    }

    /// The most specific rule matching `subject`.
    pub fn find(&self, subject: &Subject<'_>) -> Option<&Arc<Rule>> {
        self.rules.iter().find(|r| r.matches(subject))
    }

    /// Every rule, most specific first.
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Parses one rule file's `text`; every error names the file, the line,
/// the key and the problem.
pub fn parse_file(text: &str, origin: &Origin) -> Result<Vec<Rule>, ConfigError> {
    let src = Source { origin, text };
    let file: RuleFile = src.deserialize()?;
    file.rule
        .into_iter()
        .enumerate()
        .map(|(i, entry)| check(entry, i, src))
        .collect()
}

fn check(entry: RuleEntry, index: usize, src: Source<'_>) -> Result<Rule, ConfigError> {
    let key = |k: &str| format!("rule[{index}].{k}");
    let container_conditions = [
        entry.container_name.is_some(),
        entry
            .container_label
            .as_ref()
            .is_some_and(|l| !l.is_empty()),
    ];
    let process_conditions = [
        entry.unit.is_some(),
        entry.user_unit.is_some(),
        entry.cgroup.is_some(),
        entry.uid.is_some(),
        entry.exe.is_some(),
    ];
    let containers = container_conditions.iter().filter(|c| **c).count();
    let processes = process_conditions.iter().filter(|c| **c).count();
    let count = containers + processes;
    if count == 0 {
        return Err(src.invalid(
            &key("role"),
            "the rule has no condition (unit, user_unit, cgroup, uid, exe, container_name or container_label); use roles.default for everyone",
        ));
    }
    if containers > 0 && processes > 0 {
        return Err(src.invalid(
            &key("role"),
            "a rule names containers (container_name, container_label) or processes (unit, user_unit, cgroup, uid, exe), not both: a process in a container is the container, whatever its uid",
        ));
    }
    if entry.user_unit.is_some() && entry.uid.is_none() {
        return Err(src.invalid(
            &key("user_unit"),
            "needs uid: a user unit is named by its user, so the rule must say whose",
        ));
    }
    if entry.exe.is_some()
        && entry.unit.is_none()
        && entry.user_unit.is_none()
        && entry.cgroup.is_none()
        && entry.uid.is_none()
    {
        return Err(src.invalid(
            &key("exe"),
            "needs unit, user_unit, cgroup or uid too: any user can run a binary (and make it run their code: LD_PRELOAD, ptrace), so the executable alone says nothing about who asks",
        ));
    }
    let pattern = |name: &str, value: &Option<String>| -> Result<(), ConfigError> {
        match value {
            Some(v) if v.is_empty() || v.contains('\n') => {
                Err(src.invalid(&key(name), "must be one non-empty line"))
            }
            _ => Ok(()),
        }
    };
    pattern("unit", &entry.unit)?;
    pattern("user_unit", &entry.user_unit)?;
    pattern("cgroup", &entry.cgroup)?;
    pattern("container_name", &entry.container_name)?;
    pattern("exe", &entry.exe)?;
    if let Some(exe) = &entry.exe
        && !exe.starts_with('/')
    {
        return Err(src.invalid(
            &key("exe"),
            format!("{exe:?} must be an absolute path (globs allowed: \"/usr/bin/python3*\")"),
        ));
    }
    if let Some(cgroup) = &entry.cgroup
        && !cgroup.starts_with('/')
    {
        return Err(src.invalid(
            &key("cgroup"),
            format!("{cgroup:?} must start with '/' (a path under the cgroup2 mount)"),
        ));
    }
    let mut role =
        Role::parse(&entry.role).map_err(|e| src.invalid(&key("role"), e.to_string()))?;
    role.session = session(&entry, src, &key)?;
    let unit = entry.unit.as_deref().map(Glob::name);
    let user_unit = entry.user_unit.as_deref().map(Glob::name);
    let cgroup = entry.cgroup.as_deref().map(Glob::path);
    let container_name = entry.container_name.as_deref().map(Glob::name);
    let container_label = entry.container_label.unwrap_or_default();
    let exe = entry.exe.as_deref().map(Glob::path);
    let patterns: Vec<&Glob> = [&unit, &user_unit, &cgroup, &container_name, &exe]
        .into_iter()
        .flatten()
        .collect();
    let kind = if container_name.is_some() || !container_label.is_empty() {
        5
    } else if exe.is_some() {
        4
    } else if unit.is_some() || user_unit.is_some() {
        3
    } else if cgroup.is_some() {
        2
    } else {
        1
    };
    let exact = patterns.iter().filter(|p| p.is_exact()).count()
        + container_label.len()
        + usize::from(entry.uid.is_some());
    let literal = patterns.iter().map(|p| p.literal_len()).sum::<usize>()
        + container_label
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    let line = src
        .line_of(&format!("rule[{index}]"))
        .map_or_else(String::new, |l| format!(":{l}"));
    Ok(Rule {
        unit,
        user_unit,
        cgroup,
        uid: entry.uid,
        container_name,
        container_label,
        exe,
        role,
        origin: format!("{}{line}", src.origin),
        rank: (kind, count, exact, literal),
    })
}

fn session(
    entry: &RuleEntry,
    src: Source<'_>,
    key: &dyn Fn(&str) -> String,
) -> Result<SessionParams, ConfigError> {
    let session_name = match &entry.session_name {
        Some(name) if !session_name::is_valid(name) => {
            return Err(src.invalid(
                &key("session_name"),
                "must be 2 to 64 characters of letters, digits and +=,.@_-",
            ));
        }
        other => other.clone(),
    };
    let duration = match entry.duration_seconds {
        Some(d) if !(900..=43_200).contains(&d) => {
            return Err(src.invalid(&key("duration_seconds"), "must be from 900 to 43200"));
        }
        d => d.map(Duration::from_secs),
    };
    let external_id = match &entry.external_id {
        Some(id) if !(2..=1224).contains(&id.len()) || id.contains(char::is_whitespace) => {
            return Err(src.invalid(
                &key("external_id"),
                "must be 2 to 1224 characters without spaces",
            ));
        }
        other => other.clone(),
    };
    Ok(SessionParams {
        external_id,
        session_name,
        duration,
        ..SessionParams::default()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::attribution::Process;
    use crate::attribution::facts::of_root_named;

    fn rules(text: &str) -> RuleSet {
        let origin = Origin::File("/etc/imds-agent/roles.d/test.toml".into());
        RuleSet::from_files(vec![
            parse_file(text, &origin).unwrap_or_else(|e| panic!("{e}")),
        ])
    }

    fn error(text: &str) -> String {
        let origin = Origin::File("/etc/imds-agent/roles.d/bad.toml".into());
        parse_file(text, &origin).unwrap_err().to_string()
    }

    fn process(cgroup: &str, uid: u32) -> Workload {
        Workload::Process(Arc::new(Process {
            cgroup_id: 1,
            cgroup: cgroup.into(),
            uid,
            facts: Arc::new(of_root_named(cgroup)),
            container: None,
            program: None,
        }))
    }

    fn container(name: &str, labels: &[(&str, &str)]) -> Workload {
        let mut c = ContainerInfo::for_tests(&"a".repeat(64), name);
        c.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>();
        Workload::Container(Arc::new(c))
    }

    fn role_of(set: &RuleSet, w: &Workload) -> Option<String> {
        set.find(&Subject::of(w)).map(|r| r.role.name.clone())
    }

    const RULES: &str = r#"
[[rule]]
uid = 1000
role = "by-uid"

[[rule]]
cgroup = "/system.slice/**"
role = "by-cgroup"

[[rule]]
unit = "web*.service"
role = "by-unit-glob"

[[rule]]
unit = "web.service"
role = "by-unit"

[[rule]]
unit = "web.service"
uid = 33
role = "by-unit-and-uid"

[[rule]]
container_name = "api-*"
role = "by-container"

[[rule]]
container_label = { team = "blue" }
role = "by-label"

[[rule]]
container_name = "api-*"
container_label = { team = "blue" }
role = "by-container-and-label"
"#;

    #[test]
    fn the_most_specific_rule_wins() {
        let set = rules(RULES);
        let cases = [
            (process("/system.slice/web.service", 0), Some("by-unit")),
            (
                process("/system.slice/web.service", 33),
                Some("by-unit-and-uid"),
            ),
            (
                process("/system.slice/web2.service", 0),
                Some("by-unit-glob"),
            ),
            (process("/system.slice/db.service", 0), Some("by-cgroup")),
            (process("/system.slice/db.service", 1000), Some("by-cgroup")),
            (
                process("/user.slice/user-1000.slice/session-1.scope", 1000),
                Some("by-uid"),
            ),
            (
                process("/user.slice/user-1001.slice/session-1.scope", 1001),
                None,
            ),
            (container("api-1", &[]), Some("by-container")),
            (
                container("api-1", &[("team", "blue")]),
                Some("by-container-and-label"),
            ),
            (container("web", &[("team", "blue")]), Some("by-label")),
            (container("web", &[("team", "red")]), None),
            (Workload::Unknown("10.0.0.1".parse().unwrap()), None),
            (Workload::Address("10.0.0.1".parse().unwrap()), None),
        ];
        for (workload, want) in cases {
            assert_eq!(role_of(&set, &workload).as_deref(), want, "{workload}");
        }
    }

    /// A process whose path is `cgroup`, with every name from segment
    /// `first_user_named` on made by a user (the walk's marks).
    fn user_made(cgroup: &str, first_user_named: usize, uid: u32) -> Workload {
        use crate::attribution::facts::{Segment, all_root_named, facts};
        let segments: Vec<Segment<'_>> = all_root_named(cgroup)
            .into_iter()
            .enumerate()
            .map(|(i, s)| Segment {
                root_named: i < first_user_named,
                ..s
            })
            .collect();
        Workload::Process(Arc::new(Process {
            cgroup_id: 1,
            cgroup: cgroup.into(),
            uid,
            facts: Arc::new(facts(&segments)),
            container: None,
            program: None,
        }))
    }

    #[test]
    fn a_users_own_unit_is_never_the_system_unit_of_that_name() {
        let set = rules(
            "[[rule]]\nunit = \"nginx.service\"\nrole = \"web\"\n\
             [[rule]]\nuser_unit = \"sync.service\"\nuid = 4242\nrole = \"sync\"\n\
             [[rule]]\ncgroup = \"/user.slice/**/nginx.service\"\nrole = \"by-path\"\n",
        );
        let forged = "/user.slice/user-4242.slice/user@4242.service/app.slice/nginx.service";
        assert_eq!(role_of(&set, &user_made(forged, 3, 4242)), None);
        let system = process("/system.slice/nginx.service", 33);
        assert_eq!(role_of(&set, &system).as_deref(), Some("web"));
        let sync = "/user.slice/user-4242.slice/user@4242.service/app.slice/sync.service";
        assert_eq!(
            role_of(&set, &user_made(sync, 3, 4242)).as_deref(),
            Some("sync")
        );
        // Another user's unit of that name; or the right unit with a socket
        // of another uid.
        let other = "/user.slice/user-4243.slice/user@4243.service/app.slice/sync.service";
        assert_eq!(role_of(&set, &user_made(other, 3, 4243)), None);
        assert_eq!(role_of(&set, &user_made(sync, 3, 4243)), None);
    }

    #[test]
    fn a_unit_glob_is_no_users_manager() {
        let set = rules(
            "[[rule]]\nunit = \"*.service\"\nrole = \"any-service\"\n\
             [[rule]]\nunit = \"user@1000.service\"\nrole = \"user-1000\"\n",
        );
        let of_user = |uid: u32| {
            process(
                &format!("/user.slice/user-{uid}.slice/user@{uid}.service"),
                uid,
            )
        };
        assert_eq!(role_of(&set, &of_user(1000)).as_deref(), Some("user-1000"));
        assert_eq!(role_of(&set, &of_user(1001)), None, "not by a glob");
        assert_eq!(
            role_of(&set, &process("/system.slice/cron.service", 0)).as_deref(),
            Some("any-service")
        );
    }

    #[test]
    fn process_rules_never_apply_to_containers() {
        let set = rules(
            "[[rule]]\nuid = 0\nrole = \"root-role\"\n\
             [[rule]]\ncontainer_name = \"api\"\nrole = \"api-role\"\n",
        );
        let in_container = |name: &str| {
            Workload::Process(Arc::new(Process {
                cgroup_id: 9,
                cgroup: format!("/system.slice/docker-{}.scope", "a".repeat(64)).into(),
                uid: 0,
                facts: Arc::new(of_root_named("/system.slice/docker-x.scope")),
                container: Some(Arc::new(ContainerInfo::for_tests(&"a".repeat(64), name))),
                program: None,
            }))
        };
        assert_eq!(
            role_of(&set, &in_container("db")),
            None,
            "a container's root is not the host's uid 0"
        );
        assert_eq!(
            role_of(&set, &in_container("api")).as_deref(),
            Some("api-role")
        );
        assert_eq!(
            role_of(&set, &process("/system.slice/cron.service", 0)).as_deref(),
            Some("root-role")
        );
    }

    #[test]
    fn equal_rules_keep_file_order() {
        let set =
            rules("[[rule]]\nuid = 5\nrole = \"first\"\n[[rule]]\nuid = 5\nrole = \"second\"\n");
        assert_eq!(role_of(&set, &process("/x", 5)).as_deref(), Some("first"));
        let origin = Origin::File("a.toml".into());
        let a = parse_file("[[rule]]\nuid = 5\nrole = \"from-a\"\n", &origin).unwrap();
        let b = parse_file("[[rule]]\nuid = 5\nrole = \"from-b\"\n", &origin).unwrap();
        let set = RuleSet::from_files(vec![a, b]);
        assert_eq!(role_of(&set, &process("/x", 5)).as_deref(), Some("from-a"));
    }

    #[test]
    fn session_parameters_come_from_the_rule() {
        let set = rules(
            "[[rule]]\nunit = \"web.service\"\nrole = \"web@111111111111\"\nexternal_id = \"ext-1\"\nsession_name = \"web-frontend\"\nduration_seconds = 7200\n",
        );
        let rule = set
            .find(&Subject::of(&process("/system.slice/web.service", 0)))
            .unwrap();
        assert_eq!(rule.role.spec.account_id(), Some("111111111111"));
        assert_eq!(rule.role.session.external_id.as_deref(), Some("ext-1"));
        assert_eq!(
            rule.role.session.session_name.as_deref(),
            Some("web-frontend")
        );
        assert_eq!(rule.role.session.duration, Some(Duration::from_secs(7200)));
        assert_eq!(rule.origin, "/etc/imds-agent/roles.d/test.toml:1");
    }

    #[test]
    fn bad_rules_name_file_line_key_and_reason() {
        let cases = [
            (
                "[[rule]]\nrole = \"x\"\n",
                "bad.toml:2: rule[0].role: the rule has no condition",
            ),
            (
                "[[rule]]\nuid = 1\nrole = \"bad name!\"\n",
                "bad.toml:3: rule[0].role: \"bad name!\" is not a valid role name",
            ),
            (
                "[[rule]]\nuid = 1\nrole = \"arn:aws:iam::1:role/x\"\n",
                "rule[0].role: \"arn:aws:iam::1:role/x\" is not an IAM role ARN",
            ),
            (
                "[[rule]]\nuid = -1\nrole = \"x\"\n",
                "bad.toml:2: rule[0].uid: invalid value: integer `-1`",
            ),
            ("[[rule]]\nuid = 1\n", "rule[0]: missing field `role`"),
            (
                "[[rule]]\nuid = 1\nrole = \"x\"\nrolee = \"y\"\n",
                "unknown field `rolee`",
            ),
            (
                "[[rule]]\nuid = 1\nrole = \"x\"\n[[rule]]\ncgroup = \"system.slice\"\nrole = \"y\"\n",
                "bad.toml:5: rule[1].cgroup: \"system.slice\" must start with '/'",
            ),
            (
                "[[rule]]\nuid = 1\nrole = \"x\"\nsession_name = \"a b\"\n",
                "rule[0].session_name: must be 2 to 64 characters",
            ),
            (
                "[[rule]]\nuid = 1\nrole = \"x\"\nduration_seconds = 60\n",
                "rule[0].duration_seconds: must be from 900 to 43200",
            ),
            (
                "[[rule]]\ncontainer_name = \"api\"\nuid = 0\nrole = \"x\"\n",
                "rule[0].role: a rule names containers (container_name, container_label) or processes",
            ),
            (
                "[[rule]]\nuser_unit = \"sync.service\"\nrole = \"x\"\n",
                "rule[0].user_unit: needs uid",
            ),
            (
                "[[rule]]\nexe = \"/usr/bin/python3\"\nrole = \"x\"\n",
                "rule[0].exe: needs unit, user_unit, cgroup or uid too",
            ),
            ("[[rule]\n", "bad.toml:1: (document)"),
            ("rules = []\n", "unknown field `rules`"),
        ];
        for (text, want) in cases {
            let got = error(text);
            assert!(
                got.contains(want),
                "for {text:?}\n got: {got}\nwant: {want}"
            );
        }
    }

    #[test]
    fn an_executable_beats_its_unit() {
        let set = rules(&format!(
            "{RULES}\n[[rule]]\nexe = \"/usr/bin/python3*\"\ncgroup = \"/system.slice/**\"\nrole = \"by-exe\"\n"
        ));
        let python = |exe: &str| {
            Workload::Process(Arc::new(Process {
                cgroup_id: 1,
                cgroup: "/system.slice/web.service".into(),
                uid: 0,
                facts: Arc::new(of_root_named("/system.slice/web.service")),
                container: None,
                program: Some(crate::attribution::Program {
                    pid: 42,
                    comm: "python3".into(),
                    exe: crate::attribution::Exe::known(Some(exe)),
                }),
            }))
        };
        assert_eq!(
            role_of(&set, &python("/usr/bin/python3.11")).as_deref(),
            Some("by-exe")
        );
        assert_eq!(
            role_of(&set, &python("/usr/bin/perl")).as_deref(),
            Some("by-unit")
        );
        // Without the redirect the executable is unknown: the unit decides.
        assert_eq!(
            role_of(&set, &process("/system.slice/web.service", 0)).as_deref(),
            Some("by-unit")
        );
        assert!(
            error("[[rule]]\nexe = \"python3\"\nuid = 1\nrole = \"x\"\n")
                .contains("rule[0].exe: \"python3\" must be an absolute path")
        );
    }

    #[test]
    fn an_empty_file_has_no_rules() {
        assert!(rules("").is_empty());
        assert!(rules("# nothing yet\n").is_empty());
    }
}
