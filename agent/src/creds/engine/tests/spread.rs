//! The prefetch spread: roles no workload needs yet are fetched at random
//! points of the window, live ones at once, and a request does not wait
//! for the window.

use super::*;

fn spread_settings() -> Settings {
    Settings {
        prefetch_spread: 10 * MIN,
        max_roles: 64,
        ..settings()
    }
}

#[tokio::test]
async fn foreseen_roles_are_spread_over_the_window_and_live_ones_fetched_now() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = engine(&sts, &clock, keys_base(), spread_settings());
    let foreseen: Vec<Role> = (0..20).map(|i| role(&format!("later-{i}"))).collect();
    engine.set_wanted_by_need([role("now")], foreseen.clone());
    ready(settled(&engine, &role("now")).await);
    assert_eq!(sts.count("AssumeRole"), 1, "only the live role at once");
    assert!(
        engine.is_ready(),
        "roles waiting for their spread fetch leave it ready"
    );
    assert!(engine.unready().await.is_empty());
    // Each foreseen role's first fetch is due somewhere in the window, and
    // not all at one moment.
    let mut due = Vec::new();
    for step in 1..=10 {
        clock.advance(MIN);
        let before = sts.count("AssumeRole");
        engine.run_due().await;
        due.extend(std::iter::repeat_n(step, sts.count("AssumeRole") - before));
    }
    assert_eq!(sts.count("AssumeRole"), 21, "every role within the window");
    let first = due.first().copied().unwrap();
    let last = due.last().copied().unwrap();
    assert!(last - first >= 4, "spread over the window: {due:?}");
    // A sync later starts nothing new.
    engine.set_wanted_by_need([role("now")], foreseen);
    engine.run_due().await;
    assert_eq!(sts.count("AssumeRole"), 21);
}

#[tokio::test]
async fn a_request_or_a_workload_that_appears_does_not_wait_for_the_spread() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = engine(&sts, &clock, keys_base(), spread_settings());
    let (asked, appears) = (role("asked"), role("appears"));
    engine.set_wanted_by_need([], [asked.clone(), appears.clone()]);
    tokio::task::yield_now().await;
    assert_eq!(sts.count("AssumeRole"), 0);
    // A request fetches at once.
    ready(settled(&engine, &asked).await);
    assert_eq!(sts.count("AssumeRole"), 1);
    // So does a workload that now exists.
    engine.set_wanted_by_need([appears.clone()], [asked.clone()]);
    let got = ready(settled(&engine, &appears).await);
    assert!(!got.keys.access_key_id.is_empty());
    assert_eq!(sts.count("AssumeRole"), 2);
    // And neither is fetched again when the window ends.
    clock.advance(11 * MIN);
    engine.run_due().await;
    assert_eq!(sts.count("AssumeRole"), 2);
}

#[tokio::test]
async fn a_live_role_waiting_for_a_retry_is_not_fetched_again_at_each_sync() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    sts.fail_next(StsError::Refused {
        code: "AccessDenied".to_owned(),
        message: "not allowed".to_owned(),
    });
    let engine = engine(&sts, &clock, keys_base(), spread_settings());
    let denied = role("denied");
    engine.set_wanted_by_need([denied.clone()], []);
    unavailable(settled(&engine, &denied).await);
    for _ in 0..5 {
        engine.set_wanted_by_need([denied.clone()], []);
        tokio::task::yield_now().await;
    }
    assert_eq!(sts.count("AssumeRole"), 1, "the refusal waits error_ttl");
}
