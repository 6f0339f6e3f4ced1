//! What a hostile local user (or a slow STS) tries against the lifecycle:
//! each test performs the move and checks it buys nothing.

use super::*;

fn owned_by(owner: &str) -> User {
    User {
        holder: Holder::Unchecked,
        owner: Some(Arc::from(owner)),
    }
}

/// A request whose entry left a full cache while it waited is told to
/// come back: `lookup` never makes an entry (one without an owner would
/// take no turns) and never calls STS for it.
#[tokio::test]
async fn a_request_whose_entry_was_dropped_starts_nothing() {
    let clock = FakeClock::new();
    let gate = Arc::new(Semaphore::new(0));
    let sts = FakeSts::gated(&clock, Arc::clone(&gate));
    let engine = engine(&sts, &clock, keys_base(), settings());
    let mine = role("mine");
    let wait = engine.prepare(&mine, &owned_by("user:4242"));
    assert!(wait.is_some());
    let dropped = engine.inner.lock_entries().remove(&mine).unwrap();
    dropped
        .abandoned
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..10 {
        let answer = unavailable(engine.lookup(&mine, clock.wall()));
        assert_eq!(answer.code, "ServiceUnavailable");
        assert!(answer.message.contains("being fetched"), "{answer:?}");
        tokio::task::yield_now().await;
    }
    assert!(engine.inner.lock_entries().is_empty(), "no entry was made");
    gate.add_permits(10);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(sts.count("AssumeRole"), 0, "the dropped fetch gave up");
}

/// One refresh stuck in STS does not hold up the others: the scheduler
/// starts what is due and never waits for it.
#[tokio::test]
async fn a_stuck_refresh_does_not_hold_up_the_next() {
    let clock = FakeClock::new();
    let gate = Arc::new(Semaphore::new(2));
    let sts = FakeSts::gated(&clock, Arc::clone(&gate));
    let engine = engine(&sts, &clock, keys_base(), settings());
    let (a, b) = (role("a"), role("b"));
    engine.set_wanted([a.clone(), b.clone()]);
    ready(settled(&engine, &a).await);
    ready(settled(&engine, &b).await);
    let scheduler = tokio::spawn(engine.clone().run());
    let due_now = |role: &Role| {
        let entries = engine.inner.lock_entries();
        entries[role].lock().next_fetch = Some(clock.wall());
        engine.inner.wake.notify_one();
    };
    due_now(&a);
    for _ in 0..100 {
        if sts.count("AssumeRole") == 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(sts.count("AssumeRole"), 3, "a's refresh is in STS, stuck");
    due_now(&b);
    for _ in 0..100 {
        if sts.count("AssumeRole") == 4 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(sts.count("AssumeRole"), 4, "b's refresh started anyway");
    scheduler.abort();
    // While they are stuck the scheduler sleeps: nothing is due before
    // they end (a past time here would make it spin).
    let (next, started) = engine.start_due();
    assert!(started.is_empty());
    assert!(next > clock.wall(), "{next:?}");
}

/// After a profile switch, a failure of the new profile, even a passing
/// one, stops what the old profile fetched from being served: it may be
/// another account's.
#[tokio::test]
async fn a_profile_switch_that_meets_an_outage_serves_nothing_of_the_old_profile() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = engine(&sts, &clock, profiles_base(), settings());
    let app = role("app");
    engine.set_wanted([app.clone()]);
    let old = ready(settled(&engine, &app).await);
    assert_eq!(sts.calls()[0].base, "AKIAWORK");
    sts.fail_next(StsError::Throttled("Rate exceeded".into()));
    engine
        .use_profile("play", |_| true, || vec![app.clone()])
        .unwrap();
    for _ in 0..100 {
        if sts.count("AssumeRole") == 2 && !engine.inner.lock_entries()[&app].lock().fetching {
            break;
        }
        tokio::task::yield_now().await;
    }
    match engine.lookup(&app, clock.wall()) {
        Lookup::Ready(c) => assert_ne!(c.keys, old.keys, "the old profile's credentials"),
        Lookup::Unavailable(u) => assert_eq!(u.code, "ServiceUnavailable", "{u:?}"),
    }
}

/// A code handed in while every role is fine opens the session now: kept
/// for later, it would be stale (and refused) when the session runs out.
#[tokio::test]
async fn a_code_handed_in_while_all_is_well_opens_the_session_at_once() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let mfa = MfaSettings {
        serial: "arn:aws:iam::123456789012:mfa/me".into(),
        secret: None,
    };
    let base = BaseConfig::Bootstrap {
        identity: identity(Mode::AssumeRole, Some(mfa)),
    };
    let engine = engine(&sts, &clock, base, settings());
    engine.bootstrap(keys("AKIAME")).unwrap();
    let app = role("app");
    engine.set_wanted([app.clone()]);
    engine.mfa_code(MfaCode::parse("111111").unwrap()).unwrap();
    let first = ready(settled(&engine, &app).await);
    assert_eq!(sts.count("GetSessionToken"), 1);
    engine.mfa_code(MfaCode::parse("222222").unwrap()).unwrap();
    for _ in 0..100 {
        if sts.count("GetSessionToken") == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let sessions: Vec<Call> = sts
        .calls()
        .into_iter()
        .filter(|c| c.op == "GetSessionToken")
        .collect();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(sessions[1].mfa.as_ref().unwrap().1, "222222");
    assert_eq!(sts.count("AssumeRole"), 1, "roles keep what they have");
    assert_eq!(ready(engine.lookup(&app, clock.wall())), first);
}
