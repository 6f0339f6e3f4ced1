//! Assignments: rules, container roles, defaults and session names together.

use std::sync::Arc;

use super::*;
use crate::attribution::facts::of_root_named;
use crate::attribution::{ContainerInfo, Process};
use crate::config::Origin;

fn process(cgroup: &str, uid: u32) -> Workload {
    Workload::Process(Arc::new(Process {
        cgroup_id: 7,
        cgroup: cgroup.into(),
        uid,
        facts: Arc::new(of_root_named(cgroup)),
        container: None,
        program: None,
    }))
}

fn container(name: &str, env_role: Option<&str>) -> Workload {
    let mut c = ContainerInfo::for_tests(&format!("{name:0>64}"), name);
    c.env_role = env_role.map(|r| Role::parse(r).unwrap());
    Workload::Container(Arc::new(c))
}

fn assignments(rules: &str, defaults: Defaults) -> Assignments {
    let origin = Origin::File("test.toml".into());
    let set = RuleSet::from_files(vec![rules::parse_file(rules, &origin).unwrap()]);
    Assignments::new(defaults, set, None, None, None)
}

fn role(a: &Assignments, w: &Workload) -> Option<(String, Option<String>)> {
    a.role_for(w)
        .map(|r| (r.spec.to_string(), r.session.session_name.clone()))
}

/// What `a` prefetches, as (role, session name) pairs.
fn wanted_of(a: &Assignments) -> Vec<(String, Option<String>)> {
    a.wanted()
        .iter()
        .map(|r| (r.spec.to_string(), r.session.session_name.clone()))
        .collect()
}

fn named(spec: &str, session: &str) -> Option<(String, Option<String>)> {
    Some((spec.to_owned(), Some(session.to_owned())))
}

const RULES: &str = "[[rule]]\nunit = \"web.service\"\nrole = \"web\"\n[[rule]]\ncontainer_name = \"api\"\nrole = \"api-rule\"\n";

#[test]
fn rules_then_environment_then_defaults() {
    let defaults = Defaults {
        default: Some(Role::parse("fallback").unwrap()),
        container_default: Some(Role::parse("container-fallback").unwrap()),
        env_roles: Some(EnvRoles {
            allowed: vec![Glob::role("*"), Glob::role("*@222222222222")],
        }),
        session_per_workload: true,
    };
    let a = assignments(RULES, defaults);
    assert_eq!(
        role(&a, &process("/system.slice/web.service", 0)),
        named("web", "web.service")
    );
    assert_eq!(
        role(&a, &process("/system.slice/db.service", 0)),
        named("fallback", "db.service")
    );
    assert_eq!(
        role(&a, &container("api", Some("ignored-env"))),
        named("api-rule", "api"),
        "a rule beats the environment"
    );
    assert_eq!(
        role(&a, &container("worker", Some("from-env@222222222222"))),
        named("from-env@222222222222", "worker")
    );
    assert_eq!(
        role(&a, &container("plain", None)),
        named("container-fallback", "plain")
    );
    assert_eq!(
        role(&a, &Workload::Unknown("10.0.0.1".parse().unwrap())),
        None,
        "unknown gets nothing"
    );
    assert_eq!(
        role(&a, &Workload::Address("10.0.0.1".parse().unwrap())),
        Some(("fallback".to_owned(), None)),
        "attribution off: the default, with the agent's session name"
    );
}

#[test]
fn environment_roles_are_limited_to_allowed_patterns() {
    let defaults = Defaults {
        env_roles: Some(EnvRoles {
            allowed: vec![
                Glob::role("app-*"),
                Glob::role("arn:aws:iam::111111111111:role/ci/*"),
            ],
        }),
        session_per_workload: true,
        ..Defaults::default()
    };
    let a = assignments("", defaults);
    assert_eq!(
        role(&a, &container("c1", Some("app-web"))),
        named("app-web", "c1")
    );
    assert_eq!(
        role(&a, &container("c2", Some("admin"))),
        None,
        "not an allowed role: nothing"
    );
    assert_eq!(
        role(
            &a,
            &container("c3", Some("arn:aws:iam::111111111111:role/ci/build"))
        ),
        named("arn:aws:iam::111111111111:role/ci/build", "c3")
    );
    // `app-*` is a name in the agent's own account: not another account's
    // role of a name like it, by `@` or by ARN.
    for other in [
        "app-x@111111111111",
        "arn:aws:iam::111111111111:role/app-x",
        "arn:aws:iam::111111111111:role/ci/deep/build",
    ] {
        assert_eq!(role(&a, &container("c4", Some(other))), None, "{other}");
    }
    let without = assignments(
        "",
        Defaults {
            session_per_workload: true,
            ..Defaults::default()
        },
    );
    assert_eq!(
        role(&without, &container("c1", Some("app-web"))),
        None,
        "environment roles off"
    );
}

#[test]
fn a_rules_session_name_wins_and_naming_per_workload_can_be_off() {
    let a = assignments(
        "[[rule]]\nuid = 0\nrole = \"ops\"\nsession_name = \"ops-session\"\n",
        Defaults {
            session_per_workload: true,
            ..Defaults::default()
        },
    );
    assert_eq!(role(&a, &process("/x", 0)), named("ops", "ops-session"));
    let b = assignments(RULES, Defaults::default());
    assert_eq!(
        role(&b, &process("/system.slice/web.service", 0)),
        Some(("web".to_owned(), None))
    );
}

#[test]
fn reloading_rules_changes_answers_and_what_is_still_assigned() {
    let a = assignments(
        RULES,
        Defaults {
            session_per_workload: true,
            ..Defaults::default()
        },
    );
    let web = process("/system.slice/web.service", 0);
    let served = a.role_for(&web).unwrap();
    assert!(a.still_assigned(&served));
    let generation = a.generation();
    let origin = Origin::File("test.toml".into());
    a.set_rules(RuleSet::from_files(vec![
        rules::parse_file(
            "[[rule]]\nunit = \"other.service\"\nrole = \"other\"\n",
            &origin,
        )
        .unwrap(),
    ]));
    assert_ne!(a.generation(), generation);
    assert_eq!(a.role_for(&web), None, "a removed assignment stops at once");
    assert!(!a.still_assigned(&served), "and its credentials may go");
}

#[test]
fn wanted_covers_known_containers_and_matching_cgroups() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("system.slice/web.service")).unwrap();
    std::fs::create_dir_all(dir.path().join("system.slice/db.service")).unwrap();
    let index = Arc::new(CgroupIndex::new(dir.path().to_owned()));
    index.rescan().unwrap();
    let registry = Arc::new(Containers::default());
    let origin = Origin::File("test.toml".into());
    let set = RuleSet::from_files(vec![rules::parse_file(RULES, &origin).unwrap()]);
    let defaults = Defaults {
        default: Some(Role::parse("fallback").unwrap()),
        session_per_workload: true,
        ..Defaults::default()
    };
    let a = Assignments::new(defaults, set, None, Some(registry), Some(index));
    let wanted = wanted_of(&a);
    // The unit a rule names is prefetched under its own session, and every
    // other system unit gets the default under its own (what each will
    // ask for), after the ones rules name; nobody asks for the default
    // with the agent's own session name.
    assert_eq!(
        wanted,
        vec![
            ("web".to_owned(), Some("web.service".to_owned())),
            ("fallback".to_owned(), Some("db.service".to_owned())),
        ]
    );
}

#[test]
fn by_need_live_workloads_first_and_glob_only_roles_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("system.slice/web.service")).unwrap();
    let index = Arc::new(CgroupIndex::new(dir.path().to_owned()));
    index.rescan().unwrap();
    let rules = "[[rule]]\nunit = \"web.service\"\nrole = \"web\"\n\
                 [[rule]]\nunit = \"batch.service\"\nrole = \"batch\"\n\
                 [[rule]]\nunit = \"job-*.service\"\nrole = \"jobs\"\n";
    let origin = Origin::File("test.toml".into());
    let set = RuleSet::from_files(vec![rules::parse_file(rules, &origin).unwrap()]);
    let defaults = Defaults {
        default: Some(Role::parse("fallback").unwrap()),
        session_per_workload: false,
        ..Defaults::default()
    };
    let a = Assignments::new(defaults, set, None, None, Some(index));
    let names = |roles: &[Role]| roles.iter().map(|r| r.spec.to_string()).collect::<Vec<_>>();
    let by_need = a.wanted_by_need();
    // web.service exists: its role is live. batch's exact rule and the
    // default are foreseen; the glob's role is fetched on demand only.
    assert_eq!(
        names(&by_need.live),
        Vec::<String>::new(),
        "no per-workload sessions: nothing live by cgroup"
    );
    let mut foreseen = names(&by_need.foreseen);
    foreseen.sort();
    assert_eq!(foreseen, ["batch", "fallback", "web"]);
    assert!(
        names(&a.wanted()).contains(&"jobs".to_owned()),
        "wanted still lists every role"
    );
    // With sessions per workload, the unit that exists is live.
    let index = Arc::new(CgroupIndex::new(dir.path().to_owned()));
    index.rescan().unwrap();
    let set = RuleSet::from_files(vec![rules::parse_file(rules, &origin).unwrap()]);
    let defaults = Defaults {
        session_per_workload: true,
        ..Defaults::default()
    };
    let b = Assignments::new(defaults, set, None, None, Some(index));
    let by_need = b.wanted_by_need();
    assert_eq!(names(&by_need.live), ["web"]);
    assert_eq!(
        by_need.live[0].session.session_name.as_deref(),
        Some("web.service")
    );
    assert!(by_need.foreseen.is_empty(), "{:?}", by_need.foreseen);
}

/// A user's login sessions are root-named (`session-N.scope`) but the user
/// opens as many as it likes: none of them is prefetched, even when a rule
/// matches them, so they can't take the prefetch from the host's units.
#[test]
fn users_sessions_are_never_prefetched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("system.slice/db.service")).unwrap();
    for n in 0..50 {
        std::fs::create_dir_all(
            dir.path()
                .join(format!("user.slice/user-1000.slice/session-{n}.scope")),
        )
        .unwrap();
    }
    let index = Arc::new(CgroupIndex::new(dir.path().to_owned()));
    index.rescan().unwrap();
    let origin = Origin::File("test.toml".into());
    let rules = "[[rule]]\ncgroup = \"/user.slice/**\"\nrole = \"users\"\n";
    let set = RuleSet::from_files(vec![rules::parse_file(rules, &origin).unwrap()]);
    let defaults = Defaults {
        default: Some(Role::parse("fallback").unwrap()),
        session_per_workload: true,
        ..Defaults::default()
    };
    let a = Assignments::new(defaults, set, None, None, Some(index));
    let wanted = wanted_of(&a);
    assert_eq!(
        wanted,
        vec![("fallback".to_owned(), Some("db.service".to_owned()))]
    );
}

mod policy {
    use crate::assign::policy::Policy;
    use crate::creds::Role;

    fn role(text: &str) -> Role {
        Role::parse(text).unwrap()
    }

    #[test]
    fn chained_sessions_are_capped_at_an_hour() {
        let policy = Policy {
            chained: true,
            partition: "aws".into(),
            ..Policy::default()
        };
        let mut long = role("app");
        long.session.duration = Some(std::time::Duration::from_secs(3601));
        let problems = policy.problems_of(&long, "roles.d/a.toml:1");
        assert!(
            problems.len() == 1 && problems[0].contains("one hour"),
            "{problems:?}"
        );
        let mut hour = long.clone();
        hour.session.duration = Some(std::time::Duration::from_secs(3600));
        assert!(policy.problems_of(&hour, "x").is_empty());
    }

    #[test]
    fn direct_mode_serves_only_its_own_role() {
        let policy = Policy {
            chained: true,
            direct_role: Some("arn:aws:iam::123456789012:role/host".into()),
            default_account: None,
            partition: "aws".into(),
        };
        assert!(
            policy
                .problems_of(&role("host"), "roles.default")
                .is_empty()
        );
        assert!(
            policy
                .problems_of(&role("arn:aws:iam::123456789012:role/host"), "x")
                .is_empty()
        );
        for other in ["readonly", "arn:aws:iam::999999999999:role/host"] {
            let problems = policy.problems_of(&role(other), "roles.d/a.toml:3");
            assert!(
                problems.len() == 1 && problems[0].contains("\"direct\""),
                "{other}: {problems:?}"
            );
        }
        let mut long = role("host");
        long.session.duration = Some(std::time::Duration::from_secs(900));
        assert_eq!(policy.problems_of(&long, "x").len(), 1);
    }
}
