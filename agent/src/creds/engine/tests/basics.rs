//! Fetching, errors, sessions and profiles.

use super::*;

#[tokio::test]
async fn concurrent_first_requests_make_one_sts_call() {
    let clock = FakeClock::new();
    let gate = Arc::new(Semaphore::new(0));
    let sts = FakeSts::gated(&clock, Arc::clone(&gate));
    let engine = engine(&sts, &clock, keys_base(), settings());
    let app = role("app");
    let mut waiters = Vec::new();
    for _ in 0..50 {
        waiters.push(
            engine
                .prepare(&app, &anyone())
                .expect("a fetch is under way"),
        );
        let first = engine.lookup(&app, clock.wall());
        assert_eq!(unavailable(first).code, "ServiceUnavailable");
    }
    tokio::task::yield_now().await;
    gate.add_permits(100);
    for waiter in waiters {
        waiter.await;
    }
    let creds = ready(engine.lookup(&app, clock.wall()));
    assert_eq!(creds.keys.access_key_id, "ASIAFAKE000000000001");
    assert_eq!(creds.account_id.as_deref(), Some("210987654321"));
    assert_eq!(sts.count("AssumeRole"), 1);
    let call = &sts.calls()[0];
    assert_eq!(
        call.role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/app")
    );
    assert_eq!(
        call.session_name.as_deref(),
        Some("imds-agent-only"),
        "named after the profile"
    );
    assert_eq!(call.base, "AKIABASE");
    assert_eq!(call.region, "eu-west-1");
    assert!(
        engine.prepare(&app, &anyone()).is_none(),
        "nothing to wait for once cached"
    );
}

#[tokio::test]
async fn refresh_before_expiry_keeps_served_credentials_fresh() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = engine(&sts, &clock, keys_base(), settings());
    let app = role("app");
    engine.set_wanted([app.clone()]);
    let first = ready(settled(&engine, &app).await);
    // Walk through six hours in one-minute steps, running the scheduler
    // as its task would: served credentials never have under 15 minutes.
    for _ in 0..360 {
        clock.advance(MIN);
        engine.run_due().await;
        let creds = ready(engine.lookup(&app, clock.wall()));
        let left = creds.expiration.duration_since(clock.wall()).unwrap();
        assert!(left > 15 * MIN, "served with {left:?} left");
    }
    let refreshes = sts.count("AssumeRole");
    // One-hour credentials replaced with 30-35 minutes left: every 25-30
    // minutes.
    assert!(
        (12..=15).contains(&refreshes),
        "{refreshes} AssumeRole calls in six hours"
    );
    let last = ready(engine.lookup(&app, clock.wall()));
    assert_ne!(last.keys.access_key_id, first.keys.access_key_id);
}

#[tokio::test]
async fn sts_outage_keeps_serving_cached_credentials_then_recovers() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = engine(&sts, &clock, keys_base(), settings());
    let app = role("app");
    engine.set_wanted([app.clone()]);
    let cached = ready(settled(&engine, &app).await);
    for _ in 0..20 {
        sts.fail_next(StsError::Unavailable("connection refused".into()));
    }
    // Past the refresh point: refreshes fail, the cached keys are served.
    clock.advance(35 * MIN);
    let mut attempts = 0;
    for _ in 0..20 {
        engine.run_due().await;
        let served = ready(engine.lookup(&app, clock.wall()));
        assert_eq!(served.keys.access_key_id, cached.keys.access_key_id);
        attempts = sts.count("AssumeRole") - 1;
        clock.advance(Duration::from_secs(10));
    }
    assert!(
        (3..=12).contains(&attempts),
        "backed off to {attempts} attempts in 200 s"
    );
    let status = engine.status().await;
    assert_eq!(status.sts_reachable, Some(false));
    assert!(
        status.roles[0]
            .error
            .as_deref()
            .unwrap()
            .contains("connection refused")
    );
    // A forced refresh during the outage keeps the cached keys too.
    engine.refresh_all();
    engine.run_due().await;
    assert_eq!(
        ready(engine.lookup(&app, clock.wall())).keys.access_key_id,
        cached.keys.access_key_id
    );
    // STS is back: the next retry gets fresh credentials.
    sts.errors.lock().unwrap().clear();
    clock.advance(2 * MIN);
    engine.run_due().await;
    let fresh = ready(engine.lookup(&app, clock.wall()));
    assert_ne!(fresh.keys.access_key_id, cached.keys.access_key_id);
    assert_eq!(engine.status().await.sts_reachable, Some(true));
}

#[tokio::test]
async fn expired_cache_during_outage_answers_with_the_error() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = engine(&sts, &clock, keys_base(), settings());
    let app = role("app");
    engine.set_wanted([app.clone()]);
    ready(settled(&engine, &app).await);
    for _ in 0..1000 {
        sts.fail_next(StsError::Throttled("Rate exceeded".into()));
    }
    for _ in 0..70 {
        clock.advance(MIN);
        engine.run_due().await;
    }
    let u = unavailable(engine.lookup(&app, clock.wall()));
    assert_eq!(u.code, "ServiceUnavailable");
    // The workload learns what happens, not STS's words (they stay in the
    // log and the admin socket's status).
    assert!(u.message.contains("retries"), "{}", u.message);
    assert!(!u.message.contains("Rate exceeded"), "{}", u.message);
    assert!(!u.message.contains("secret"), "{}", u.message);
    let status = engine.status().await;
    assert!(
        status.roles[0]
            .error
            .as_deref()
            .unwrap()
            .contains("Rate exceeded"),
        "{status:?}"
    );
}

#[tokio::test]
async fn refusals_are_cached_and_not_retried_early() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    sts.fail_next(StsError::Refused {
        code: "AccessDenied".into(),
        message: "User is not authorized to perform: sts:AssumeRole".into(),
    });
    let engine = engine(&sts, &clock, keys_base(), settings());
    let app = role("app");
    let u = unavailable(settled(&engine, &app).await);
    assert_eq!(u.code, "AssumeRoleUnauthorizedAccess");
    assert!(
        u.message.contains("AccessDenied")
            && u.message.contains("arn:aws:iam::123456789012:role/app")
    );
    for _ in 0..100 {
        engine.lookup(&app, clock.wall());
    }
    clock.advance(Duration::from_secs(30));
    engine.run_due().await;
    assert_eq!(
        sts.count("AssumeRole"),
        1,
        "requests and the scheduler leave a refused role alone"
    );
    clock.advance(Duration::from_secs(31));
    engine.run_due().await;
    assert_eq!(sts.count("AssumeRole"), 2);
    ready(engine.lookup(&app, clock.wall()));
}

#[tokio::test]
async fn bare_names_use_the_agents_own_account() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let mut s = settings();
    s.default_account = None;
    let engine = engine(&sts, &clock, keys_base(), s);
    let (a, b, c) = (role("a"), role("b"), role("c@444444444444"));
    engine.set_wanted([a.clone(), b.clone(), c.clone()]);
    for r in [&a, &b, &c] {
        ready(settled(&engine, r).await);
    }
    assert_eq!(sts.count("GetCallerIdentity"), 1, "discovered once");
    let arns: Vec<String> = sts.calls().into_iter().filter_map(|c| c.role_arn).collect();
    assert!(
        arns.contains(&"arn:aws:iam::333333333333:role/a".to_owned()),
        "{arns:?}"
    );
    assert!(
        arns.contains(&"arn:aws:iam::444444444444:role/c".to_owned()),
        "{arns:?}"
    );
}

#[tokio::test]
async fn session_parameters_reach_sts_and_separate_cache_entries() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let mut s = settings();
    s.source_identity = true;
    s.session_tags = true;
    let engine = engine(&sts, &clock, keys_base(), s);
    let plain = role("app");
    let mut tuned = role("app");
    tuned.session = SessionParams {
        external_id: Some("ext-1".into()),
        session_name: Some("web.service".into()),
        duration: Some(2 * HOUR),
        ..SessionParams::default()
    };
    engine.set_wanted([plain.clone(), tuned.clone()]);
    let a = ready(settled(&engine, &plain).await);
    let b = ready(settled(&engine, &tuned).await);
    assert_ne!(a.keys.access_key_id, b.keys.access_key_id);
    let calls = sts.calls();
    let tuned_call = calls
        .iter()
        .find(|c| c.session_name.as_deref() == Some("web.service"))
        .unwrap();
    assert_eq!(tuned_call.external_id.as_deref(), Some("ext-1"));
    assert_eq!(tuned_call.duration, Some(2 * HOUR));
    assert_eq!(b.expiration, clock.wall() + 2 * HOUR);
}

#[tokio::test]
async fn session_token_mode_with_a_totp_secret() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let secret = TotpSecret::parse("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
    let mfa = MfaSettings {
        serial: "arn:aws:iam::123456789012:mfa/me".into(),
        secret: Some(secret.clone()),
    };
    let base = one_profile(identity(Mode::SessionToken, Some(mfa)));
    let engine = engine(&sts, &clock, base, settings());
    let (a, b) = (role("a"), role("b"));
    engine.set_wanted([a.clone(), b.clone()]);
    let ca = ready(settled(&engine, &a).await);
    let cb = ready(settled(&engine, &b).await);
    assert_eq!(ca.keys, cb.keys, "one session serves every role");
    assert_eq!(sts.count("GetSessionToken"), 1);
    assert_eq!(sts.count("AssumeRole"), 0);
    let call = &sts.calls()[0];
    let expected = secret.code_for_step(TotpSecret::step(clock.wall()));
    assert_eq!(
        call.mfa,
        Some((
            "arn:aws:iam::123456789012:mfa/me".into(),
            expected.expose().to_owned()
        ))
    );
    assert_eq!(call.base, "AKIADEV");
}

#[tokio::test]
async fn mfa_code_from_a_person_opens_a_session_for_assume_role() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let mfa = MfaSettings {
        serial: "arn:aws:iam::123456789012:mfa/me".into(),
        secret: None,
    };
    let base = one_profile(identity(Mode::AssumeRole, Some(mfa)));
    let engine = engine(&sts, &clock, base, settings());
    let app = role("app");
    engine.set_wanted([app.clone()]);
    let waiting = unavailable(settled(&engine, &app).await);
    assert!(
        waiting.message.contains("imds-agent mfa"),
        "{}",
        waiting.message
    );
    assert_eq!(sts.calls().len(), 0, "no call without a code");
    engine.mfa_code(MfaCode::parse("123456").unwrap()).unwrap();
    tokio::task::yield_now().await;
    let creds = ready(settled(&engine, &app).await);
    let calls = sts.calls();
    assert_eq!(calls[0].op, "GetSessionToken");
    assert_eq!(calls[0].mfa.as_ref().map(|m| m.1.as_str()), Some("123456"));
    assert_eq!(calls[0].duration, Some(12 * HOUR));
    assert_eq!(calls[1].op, "AssumeRole");
    assert_eq!(
        calls[1].base, "ASIAFAKE000000000001",
        "AssumeRole runs as the MFA session"
    );
    assert_eq!(creds.keys.access_key_id, "ASIAFAKE000000000002");
    // Refreshes reuse the MFA session: no new code needed for 12 hours.
    clock.advance(40 * MIN);
    engine.run_due().await;
    assert_eq!(sts.count("GetSessionToken"), 1);
    assert_eq!(sts.count("AssumeRole"), 2);
}

#[tokio::test]
async fn bootstrap_supplies_the_agents_own_credentials() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let base = BaseConfig::Bootstrap {
        identity: identity(Mode::AssumeRole, None),
    };
    let engine = engine(&sts, &clock, base, settings());
    let app = role("app");
    engine.set_wanted([app.clone()]);
    let u = unavailable(settled(&engine, &app).await);
    assert_eq!(u.code, "AssumeRoleUnauthorizedAccess");
    assert!(u.message.contains("imds-agent bootstrap"), "{}", u.message);
    assert!(!engine.status().await.ready);
    engine.bootstrap(keys("AKIABOOTSTRAPPED0001")).unwrap();
    let creds = ready(settled(&engine, &app).await);
    assert_eq!(sts.calls()[0].base, "AKIABOOTSTRAPPED0001");
    assert!(engine.status().await.ready);
    assert!(!creds.keys.access_key_id.is_empty());
}

#[tokio::test]
async fn switching_profiles_discards_and_refetches() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = engine(&sts, &clock, profiles_base(), settings());
    assert_eq!(engine.profile_role().unwrap().name, "work-role");
    let work = (*engine.profile_role().unwrap()).clone();
    engine.set_wanted([work.clone()]);
    let first = ready(settled(&engine, &work).await);
    assert_eq!(
        engine.use_profile("nope", |_| true, Vec::new),
        Err(BaseError::UnknownProfile("nope".into()))
    );
    assert_eq!(
        engine.bootstrap(keys("AKIAELSEWHERE0000001")),
        Err(BaseError::NotBootstrap)
    );
    assert_eq!(
        engine.mfa_code(MfaCode::parse("123456").unwrap()),
        Err(BaseError::NoMfa)
    );
    let play_role = role("play-role");
    engine
        .use_profile("play", |r| *r == play_role, || vec![play_role.clone()])
        .unwrap();
    assert_eq!(engine.profile_role().unwrap().name, "play-role");
    let play = (*engine.profile_role().unwrap()).clone();
    ready(settled(&engine, &play).await);
    // Everything cached under "work" is gone, and was not fetched again.
    let work_arn = Some("arn:aws:iam::123456789012:role/work-role");
    let work_calls = sts
        .calls()
        .iter()
        .filter(|c| c.role_arn.as_deref() == work_arn)
        .count();
    assert_eq!(work_calls, 1, "work-role was not refetched as play");
    assert!(!matches!(engine.lookup(&work, clock.wall()), Lookup::Ready(c) if c == first));
    let last = sts.calls().last().cloned().unwrap();
    assert_eq!(last.base, "AKIAPLAY");
    assert_eq!(
        last.role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/play-role")
    );
    let (names, active) = engine.profiles();
    assert_eq!(names, vec!["play".to_owned(), "work".to_owned()]);
    assert_eq!(active.as_deref(), Some("play"));
}

#[tokio::test]
async fn an_answer_for_a_previous_identity_is_discarded() {
    let clock = FakeClock::new();
    let gate = Arc::new(Semaphore::new(0));
    let sts = FakeSts::gated(&clock, Arc::clone(&gate));
    let engine = engine(&sts, &clock, profiles_base(), settings());
    let app = role("app");
    engine.set_wanted([app.clone()]);
    tokio::task::yield_now().await;
    engine
        .use_profile("play", |_| true, || vec![app.clone()])
        .unwrap();
    gate.add_permits(10);
    let creds = ready(settled(&engine, &app).await);
    // The first answer (for "work") was dropped; the one served came from a
    // call made as "play".
    let calls = sts.calls();
    assert_eq!(calls[0].base, "AKIAWORK");
    assert!(calls.iter().any(|c| c.base == "AKIAPLAY"));
    assert_ne!(creds.keys.access_key_id, "ASIAFAKE000000000001");
}

#[tokio::test]
async fn unwanted_roles_leave_the_cache() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let mut s = settings();
    s.max_roles = 3;
    let engine = engine(&sts, &clock, keys_base(), s);
    let (a, b) = (role("a"), role("b"));
    engine.set_wanted([a.clone(), b.clone()]);
    ready(settled(&engine, &a).await);
    ready(settled(&engine, &b).await);
    // No longer wanted: b stays while it may be in use...
    engine.set_wanted([a.clone()]);
    assert_eq!(engine.status().await.roles.len(), 2);
    // ...and leaves at once when its assignment is removed.
    engine.retain(|r| *r != b);
    assert_eq!(engine.status().await.roles.len(), 1, "b left at once");
    // A role nobody assigns, used by a workload whose life can't be
    // checked, stays while that workload may still hold its credentials
    // (they last an hour), and goes idle_ttl after.
    let stray = role("stray");
    ready(settled(&engine, &stray).await);
    assert_eq!(engine.status().await.roles.len(), 2);
    clock.advance(11 * MIN);
    engine.run_due().await;
    assert_eq!(engine.status().await.roles.len(), 2, "it may come back");
    clock.advance(61 * MIN);
    engine.run_due().await;
    assert_eq!(engine.status().await.roles.len(), 1);
    // The cache is bounded: newcomers take the place of what no
    // assignment names, never of `a`.
    for name in ["x", "y", "z"] {
        drop(engine.prepare(&role(name), &anyone()));
    }
    let cached = cached_roles(&engine).await;
    assert_eq!(cached.len(), 3, "{cached:?}");
    assert!(cached.contains(&"a".to_owned()), "{cached:?}");
}

/// A workload asking for sessions by the thousand fills the cache with its
/// own: a new role still gets in (the entry used longest ago that no
/// assignment names goes), and no assigned role is ever pushed out.
#[tokio::test]
async fn a_full_cache_makes_room_but_keeps_what_is_assigned() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let mut s = settings();
    s.max_roles = 4;
    let engine = engine(&sts, &clock, keys_base(), s);
    let assigned = role("assigned");
    engine.set_wanted([assigned.clone()]);
    ready(settled(&engine, &assigned).await);
    for name in ["flood-1", "flood-2", "flood-3"] {
        clock.advance(Duration::from_secs(1));
        ready(settled(&engine, &role(name)).await);
    }
    clock.advance(Duration::from_secs(1));
    let newcomer = role("newcomer");
    ready(settled(&engine, &newcomer).await);
    let cached = cached_roles(&engine).await;
    assert_eq!(cached.len(), 4, "{cached:?}");
    assert!(cached.contains(&"assigned".to_owned()), "{cached:?}");
    assert!(
        !cached.contains(&"flood-1".to_owned()),
        "the oldest went: {cached:?}"
    );
    // Prefetch takes half the cache at most.
    let many: Vec<Role> = (0..10).map(|i| role(&format!("glob-{i}"))).collect();
    engine.set_wanted(many);
    let wanted = engine
        .inner
        .lock_entries()
        .values()
        .filter(|e| e.lock().wanted)
        .count();
    assert_eq!(wanted, 2);
}
