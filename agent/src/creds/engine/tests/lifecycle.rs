//! First requests, holders, rotation, MFA codes, and the cache's bounds.

use std::collections::HashSet;

use super::*;

/// A workload in cgroup `id` of `owner`.
fn in_cgroup(id: u64, owner: Option<&str>) -> User {
    User {
        holder: Holder::Cgroup(id),
        owner: owner.map(Arc::from),
    }
}

/// Cgroups the test says are alive.
fn live_set(engine: &Engine) -> Arc<Mutex<HashSet<u64>>> {
    let live = Arc::new(Mutex::new(HashSet::new()));
    let seen = Arc::clone(&live);
    engine.set_liveness(Arc::new(move |holder: &Holder| match holder {
        Holder::Cgroup(id) => seen.lock().unwrap().contains(id),
        _ => false,
    }));
    live
}

/// Whether `role` is cached, without using it (status does not count as
/// a use).
async fn cached(engine: &Engine, role: &Role) -> Option<RoleStatus> {
    let name = role.session.session_name.clone().unwrap_or_default();
    engine
        .status()
        .await
        .roles
        .into_iter()
        .find(|r| r.role == role.spec.to_string() && r.session_name == name)
}

fn session(spec: &str, name: &str) -> Role {
    let mut role = role(spec);
    role.session.session_name = Some(name.to_owned());
    role
}

/// Waits until no fetch is under way.
async fn quiet(engine: &Engine) {
    for _ in 0..1000 {
        let fetching = engine
            .inner
            .lock_entries()
            .values()
            .any(|e| e.lock().fetching);
        if !fetching {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("a fetch never ended");
}

fn bootstrap_base() -> BaseConfig {
    BaseConfig::Bootstrap {
        identity: identity(Mode::AssumeRole, None),
    }
}

/// Every new (role, session)'s first request starts its fetch and waits
/// for it: all get credentials, one call each.
#[tokio::test]
async fn first_requests_of_new_workloads_wait_for_the_fetch_they_start() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = engine(&sts, &clock, keys_base(), settings());
    let roles: Vec<Role> = (0..12)
        .map(|i| session("app", &format!("unit-{i}.service")))
        .collect();
    let mut waits = Vec::new();
    for (i, role) in roles.iter().enumerate() {
        let user = in_cgroup(i as u64, None);
        waits.push(engine.prepare(role, &user).expect("nothing yet: wait"));
        // A second request of the same workload waits for the same fetch.
        waits.push(engine.prepare(role, &user).expect("still fetching"));
    }
    for wait in waits {
        wait.await;
    }
    for role in &roles {
        ready(engine.lookup(role, clock.wall()));
    }
    assert_eq!(sts.count("AssumeRole"), roles.len());
    let sessions: HashSet<Option<String>> =
        sts.calls().into_iter().map(|c| c.session_name).collect();
    assert_eq!(sessions.len(), roles.len(), "one call per session");
}

/// SDKs come back when their copy nears expiry, an hour or more apart:
/// an entry a live workload used stays and is refreshed however long it
/// goes unused, and goes once the workload's cgroup is gone.
#[tokio::test]
async fn a_live_workloads_credentials_stay_fresh_until_it_is_gone() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = engine(&sts, &clock, keys_base(), settings());
    let live = live_set(&engine);
    live.lock().unwrap().insert(7);
    let role = session("app", "u4242-sync.service");
    engine
        .prepare(&role, &in_cgroup(7, Some("user:4242")))
        .unwrap()
        .await;
    ready(engine.lookup(&role, clock.wall()));
    // Eight hours without a request.
    for _ in 0..(8 * 60) {
        clock.advance(MIN);
        engine.run_due().await;
        let status = cached(&engine, &role).await.expect("kept");
        assert!(status.valid, "{status:?}");
        assert!(status.remaining_seconds.unwrap() >= 25 * 60, "{status:?}");
        assert!(status.in_use);
    }
    assert!(sts.count("AssumeRole") >= 14, "refreshed all along");
    // The cgroup is removed: unused for longer than idle_ttl, the entry
    // goes at the next look.
    live.lock().unwrap().remove(&7);
    clock.advance(Duration::from_secs(6));
    engine.run_due().await;
    assert!(
        cached(&engine, &role).await.is_none(),
        "gone with its cgroup"
    );
    // Used just before its cgroup went, it waits idle_ttl (a unit being
    // restarted comes back in a new cgroup).
    live.lock().unwrap().insert(8);
    engine
        .prepare(&role, &in_cgroup(8, Some("user:4242")))
        .unwrap()
        .await;
    live.lock().unwrap().remove(&8);
    clock.advance(6 * MIN);
    engine.run_due().await;
    assert!(cached(&engine, &role).await.is_some(), "idle_ttl first");
    clock.advance(6 * MIN);
    engine.run_due().await;
    assert!(cached(&engine, &role).await.is_none());
}

/// Bootstrap posted again: every role, assigned or not, is fetched with
/// the new keys, and what is cached is served until then.
#[tokio::test]
async fn a_new_bootstrap_serves_the_old_credentials_until_the_new_arrive() {
    let clock = FakeClock::new();
    let gate = Arc::new(Semaphore::new(0));
    let sts = FakeSts::gated(&clock, Arc::clone(&gate));
    let engine = engine(&sts, &clock, bootstrap_base(), settings());
    engine.bootstrap(keys("AKIAFIRST")).unwrap();
    let (assigned, asked) = (role("assigned"), session("app", "web.service"));
    engine.set_wanted([assigned.clone()]);
    let wait = engine.prepare(&asked, &anyone()).unwrap();
    gate.add_permits(2);
    wait.await;
    let old_assigned = ready(settled(&engine, &assigned).await);
    let old_asked = ready(engine.lookup(&asked, clock.wall()));
    engine.bootstrap(keys("AKIASECOND")).unwrap();
    for _ in 0..10 {
        tokio::task::yield_now().await;
        assert_eq!(ready(engine.lookup(&assigned, clock.wall())), old_assigned);
        assert_eq!(ready(engine.lookup(&asked, clock.wall())), old_asked);
        assert!(engine.prepare(&asked, &anyone()).is_none(), "no waiting");
    }
    gate.add_permits(2);
    for role in [&assigned, &asked] {
        for _ in 0..100 {
            if ready(engine.lookup(role, clock.wall())).keys != old_asked.keys
                && ready(engine.lookup(role, clock.wall())).keys != old_assigned.keys
            {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    let calls = sts.calls();
    assert_eq!(calls.len(), 4);
    assert!(
        calls[2..].iter().all(|c| c.base == "AKIASECOND"),
        "{calls:?}"
    );
    for role in [&assigned, &asked] {
        let now = ready(engine.lookup(role, clock.wall()));
        assert_ne!(now.keys, old_assigned.keys);
        assert_ne!(now.keys, old_asked.keys);
    }
}

/// A new identity that STS refuses does not keep serving what the old one
/// fetched; one that STS can't reach for a moment does.
#[tokio::test]
async fn a_refused_new_identity_is_not_served_the_old_ones_credentials() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = engine(&sts, &clock, bootstrap_base(), settings());
    engine.bootstrap(keys("AKIAFIRST")).unwrap();
    let app = role("app");
    engine.set_wanted([app.clone()]);
    let old = ready(settled(&engine, &app).await);
    sts.fail_next(StsError::Unavailable("connection reset".into()));
    engine.bootstrap(keys("AKIABLIP")).unwrap();
    quiet(&engine).await;
    assert_eq!(sts.count("AssumeRole"), 2);
    assert_eq!(ready(engine.lookup(&app, clock.wall())), old, "a blip");
    sts.fail_next(StsError::Refused {
        code: "InvalidClientTokenId".into(),
        message: "The security token included in the request is invalid.".into(),
    });
    engine.bootstrap(keys("AKIAWRONG")).unwrap();
    quiet(&engine).await;
    let refused = unavailable(engine.lookup(&app, clock.wall()));
    assert_eq!(refused.code, "AssumeRoleUnauthorizedAccess");
    assert!(
        refused.message.contains("InvalidClientTokenId"),
        "{refused:?}"
    );
}

/// An MFA session ends while roles hold credentials; their refreshes fail
/// for want of a code. The next code handed in is used at once: one
/// GetSessionToken, every role refreshed, without waiting for error_ttl.
#[tokio::test]
async fn a_code_handed_in_refreshes_every_role_at_once() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let mfa = MfaSettings {
        serial: "arn:aws:iam::123456789012:mfa/me".into(),
        secret: None,
    };
    let mut id = identity(Mode::AssumeRole, Some(mfa));
    id.mfa_session = 15 * MIN;
    let base = one_profile(id);
    let mut s = settings();
    s.error_ttl = HOUR;
    let engine = engine(&sts, &clock, base, s);
    let roles = [role("a"), role("b"), role("c")];
    engine.set_wanted(roles.clone());
    engine.mfa_code(MfaCode::parse("111111").unwrap()).unwrap();
    let mut first = Vec::new();
    for role in &roles {
        first.push(ready(settled(&engine, role).await));
    }
    assert_eq!(sts.count("GetSessionToken"), 1);
    // The MFA session is over; the roles' hour is not.
    clock.advance(20 * MIN);
    engine.refresh_all();
    engine.run_due().await;
    for (role, old) in roles.iter().zip(&first) {
        assert_eq!(&ready(engine.lookup(role, clock.wall())), old, "served on");
    }
    assert!(
        engine
            .status()
            .await
            .roles
            .iter()
            .all(|r| r.error.as_deref().is_some_and(|e| e.contains("MFA code"))),
        "each waits for a code"
    );
    engine.mfa_code(MfaCode::parse("222222").unwrap()).unwrap();
    for (role, old) in roles.iter().zip(&first) {
        let mut fresh = None;
        for _ in 0..200 {
            let now = ready(engine.lookup(role, clock.wall()));
            if now != *old {
                fresh = Some(now);
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(fresh.is_some(), "{role:?} was not refreshed at once");
    }
    let sessions: Vec<Call> = sts
        .calls()
        .into_iter()
        .filter(|c| c.op == "GetSessionToken")
        .collect();
    assert_eq!(sessions.len(), 2, "one session call for every role");
    assert_eq!(sessions[1].mfa.as_ref().unwrap().1, "222222");
    assert_eq!(sts.count("AssumeRole"), 6);
}

/// A session token shorter than the refresh margin is still shared by
/// every role (the reuse margin is the refresh margin as capped for that
/// lifetime), so one code serves them all.
#[tokio::test]
async fn a_short_session_token_is_shared_by_every_role() {
    for minutes in [15, 30, 35] {
        let clock = FakeClock::new();
        let sts = FakeSts::new(&clock);
        let mut id = identity(Mode::SessionToken, None);
        id.duration = minutes * MIN;
        let base = one_profile(id);
        let engine = engine(&sts, &clock, base, settings());
        let (a, b) = (role("a"), role("b"));
        let ca = ready(settled(&engine, &a).await);
        clock.advance(MIN);
        let cb = ready(settled(&engine, &b).await);
        assert_eq!(ca.keys, cb.keys, "{minutes} minutes");
        assert_eq!(sts.count("GetSessionToken"), 1, "{minutes} minutes");
        // Refreshed like any credentials, never in a loop.
        for _ in 0..(2 * minutes) {
            clock.advance(MIN);
            engine.run_due().await;
        }
        let calls = sts.count("GetSessionToken") as u32;
        assert!((2..=6).contains(&calls), "{minutes} minutes: {calls} calls");
    }
}

/// Credentials that arrive expired (a host clock far ahead of STS's) are
/// an error retried with backoff, not refetched at the budget's rate.
#[tokio::test]
async fn credentials_expired_on_arrival_back_off() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    *sts.short_by.lock().unwrap() = 2 * HOUR;
    let engine = engine(&sts, &clock, keys_base(), settings());
    let app = role("app");
    engine.set_wanted([app.clone()]);
    let u = unavailable(settled(&engine, &app).await);
    assert_eq!(u.code, "ServiceUnavailable");
    let status = engine.status().await;
    assert!(
        status.roles[0].error.as_deref().unwrap().contains("clock"),
        "{status:?}"
    );
    for _ in 0..100 {
        clock.advance(Duration::from_millis(100));
        engine.run_due().await;
    }
    let calls = sts.count("AssumeRole");
    assert!(calls <= 5, "{calls} calls in 10 s");
}

/// A refusal while credentials are still served is retried before they
/// expire, however long error_ttl is.
#[tokio::test]
async fn a_refusal_is_retried_before_the_served_credentials_expire() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let mut s = settings();
    s.error_ttl = HOUR;
    let engine = engine(&sts, &clock, keys_base(), s);
    let app = role("app");
    engine.set_wanted([app.clone()]);
    let first = ready(settled(&engine, &app).await);
    sts.fail_next(StsError::Refused {
        code: "AccessDenied".into(),
        message: "not now".into(),
    });
    clock.advance(35 * MIN);
    engine.run_due().await;
    assert_eq!(sts.count("AssumeRole"), 2, "the refresh, refused");
    assert_eq!(ready(engine.lookup(&app, clock.wall())), first);
    // STS says yes again; the retry comes while `first` is still valid.
    let mut fresh = None;
    while clock.wall() < first.expiration {
        clock.advance(MIN);
        engine.run_due().await;
        let now = ready(engine.lookup(&app, clock.wall()));
        if now != first {
            fresh = Some(clock.wall());
            break;
        }
    }
    assert!(fresh.is_some(), "no retry before the credentials expired");
}

/// A full cache takes room from the owner holding the most entries, never
/// from the host's own units first.
#[tokio::test]
async fn a_full_cache_takes_room_from_the_owner_holding_the_most() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let mut s = settings();
    s.max_roles = 4;
    let engine = engine(&sts, &clock, keys_base(), s);
    let live = live_set(&engine);
    let host = session("app", "web.service");
    live.lock().unwrap().insert(1);
    engine.prepare(&host, &in_cgroup(1, None)).unwrap().await;
    for i in 0..3 {
        clock.advance(Duration::from_secs(1));
        live.lock().unwrap().insert(10 + i);
        let mine = session("app", &format!("u4242-flood-{i}.service"));
        engine
            .prepare(&mine, &in_cgroup(10 + i, Some("user:4242")))
            .unwrap()
            .await;
    }
    clock.advance(Duration::from_secs(1));
    live.lock().unwrap().insert(20);
    let other = session("app", "u1000-job.service");
    engine
        .prepare(&other, &in_cgroup(20, Some("user:1000")))
        .unwrap()
        .await;
    assert!(
        cached(&engine, &host).await.is_some(),
        "the host's unit stays"
    );
    assert!(cached(&engine, &other).await.is_some());
    let flood = session("app", "u4242-flood-0.service");
    assert!(
        cached(&engine, &flood).await.is_none(),
        "the flood's oldest went"
    );
    assert_eq!(engine.status().await.roles.len(), 4);
}

/// Clearing the session is a log-out: nothing fetched with it is served,
/// and answers still on their way for it are dropped.
#[tokio::test]
async fn clearing_the_session_drops_everything_and_changes_the_generation() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = engine(&sts, &clock, keys_base(), settings());
    let app = role("app");
    engine.set_wanted([app.clone()]);
    let old = ready(settled(&engine, &app).await);
    let generation = engine.base_generation();
    engine.clear_session().await;
    assert_ne!(engine.base_generation(), generation);
    assert!(!matches!(engine.lookup(&app, clock.wall()), Lookup::Ready(c) if c == old));
    assert_ne!(ready(settled(&engine, &app).await), old);
}
