//! A person's MFA code: requests that wait for it, codes refused, waits
//! that run out, and `${aws:username}` roles.

use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn person_mfa() -> Option<MfaSettings> {
    Some(MfaSettings {
        serial: "arn:aws:iam::123456789012:mfa/me".into(),
        secret: None,
    })
}

fn prompting_engine(sts: &Arc<FakeSts>, clock: &Arc<FakeClock>) -> Engine {
    let mut s = settings();
    s.mfa_prompt_wait = WAIT;
    engine(
        sts,
        clock,
        one_profile(identity(Mode::AssumeRole, person_mfa())),
        s,
    )
}

fn code(text: &str) -> MfaCode {
    MfaCode::parse(text).unwrap()
}

/// Yields until a request waits for a code.
async fn until_waiting(engine: &Engine) {
    for _ in 0..1000 {
        if engine.mfa_prompt().waiting {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("nobody waits for a code: {:?}", engine.mfa_prompt());
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_share_one_wait_and_one_session() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = prompting_engine(&sts, &clock);
    let (a, b) = (role("a"), role("b"));
    let first = engine.prepare(&a, &anyone()).unwrap();
    let second = engine.prepare(&b, &anyone()).unwrap();
    let waits = tokio::spawn(async move { tokio::join!(first, second) });
    until_waiting(&engine).await;
    assert_eq!(
        engine.mfa_prompt().serial.as_deref(),
        Some("arn:aws:iam::123456789012:mfa/me")
    );
    assert_eq!(sts.count("GetSessionToken"), 0, "no call before the code");
    let outcome = engine.submit_code(code("123456")).unwrap().await.unwrap();
    assert!(matches!(outcome, CodeOutcome::Opened { .. }), "{outcome:?}");
    waits.await.unwrap();
    ready(engine.lookup(&a, clock.wall()));
    ready(engine.lookup(&b, clock.wall()));
    assert_eq!(sts.count("GetSessionToken"), 1, "one session for both");
    let prompt = engine.mfa_prompt();
    assert!(!prompt.needed && !prompt.waiting, "{prompt:?}");
    assert_eq!(engine.person_wait(), Duration::ZERO, "the session is open");
}

#[tokio::test(start_paused = true)]
async fn a_refused_code_is_answered_and_the_prompt_stays() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = prompting_engine(&sts, &clock);
    let app = role("app");
    assert_eq!(engine.person_wait(), WAIT);
    let wait = engine.prepare(&app, &anyone()).unwrap();
    let waiting = tokio::spawn(wait);
    until_waiting(&engine).await;
    assert_eq!(
        engine.mfa_prompt().role.as_deref(),
        Some("app"),
        "the person sees what for"
    );
    sts.fail_next(StsError::Refused {
        code: "AccessDenied".into(),
        message: "MultiFactorAuthentication failed with invalid MFA one time pass code.".into(),
    });
    let outcome = engine.submit_code(code("000000")).unwrap().await.unwrap();
    assert!(
        matches!(&outcome, CodeOutcome::Refused(why) if why.contains("AccessDenied")),
        "{outcome:?}"
    );
    until_waiting(&engine).await;
    assert!(engine.mfa_prompt().refused.is_some());
    let outcome = engine.submit_code(code("123456")).unwrap().await.unwrap();
    assert!(matches!(outcome, CodeOutcome::Opened { .. }), "{outcome:?}");
    waiting.await.unwrap();
    ready(engine.lookup(&app, clock.wall()));
    assert_eq!(sts.count("GetSessionToken"), 2);
    assert_eq!(engine.mfa_prompt().refused, None);
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_runs_out_fails_and_a_new_request_asks_again() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = prompting_engine(&sts, &clock);
    let app = role("app");
    let started = tokio::time::Instant::now();
    engine.prepare(&app, &anyone()).unwrap().await;
    assert!(started.elapsed() >= WAIT, "it waited for the person");
    let failed = unavailable(engine.lookup(&app, clock.wall()));
    assert!(failed.message.contains("MFA code"), "{}", failed.message);
    let prompt = engine.mfa_prompt();
    assert!(prompt.needed && !prompt.waiting, "{prompt:?}");
    assert_eq!(prompt.round, 1);
    assert_eq!(sts.count("GetSessionToken"), 0);
    // A new request: a new chance for the person.
    let again = engine.prepare(&app, &anyone()).expect("asks again");
    let waiting = tokio::spawn(again);
    until_waiting(&engine).await;
    assert_eq!(engine.mfa_prompt().round, 2);
    engine.submit_code(code("123456")).unwrap().await.unwrap();
    waiting.await.unwrap();
    ready(engine.lookup(&app, clock.wall()));
}

#[tokio::test(start_paused = true)]
async fn a_fetch_nobody_waits_on_never_waits_for_a_person() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = prompting_engine(&sts, &clock);
    let app = role("app");
    engine.set_wanted([app.clone()]);
    let started = tokio::time::Instant::now();
    engine.run_due().await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(started.elapsed() < WAIT);
    let prompt = engine.mfa_prompt();
    assert!(
        prompt.needed && !prompt.waiting,
        "the person is told: {prompt:?}"
    );
    // The code opens the session and fetches the role at once.
    let outcome = engine.submit_code(code("123456")).unwrap().await.unwrap();
    assert!(matches!(outcome, CodeOutcome::Opened { .. }), "{outcome:?}");
    ready(settled(&engine, &app).await);
}

#[tokio::test]
async fn a_typed_code_is_refused_when_a_secret_is_stored() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let mfa = MfaSettings {
        serial: "arn:aws:iam::123456789012:mfa/me".into(),
        secret: Some(TotpSecret::parse("JBSWY3DPEHPK3PXP").unwrap()),
    };
    let engine = engine(
        &sts,
        &clock,
        one_profile(identity(Mode::AssumeRole, Some(mfa))),
        settings(),
    );
    assert!(matches!(
        engine.submit_code(code("123456")),
        Err(BaseError::StoredSecret)
    ));
    assert_eq!(engine.person_wait(), Duration::ZERO);
}

#[tokio::test]
async fn a_role_named_after_the_user_is_the_users() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = engine(&sts, &clock, keys_base(), settings());
    let mine = role("dev-${aws:username}");
    assert_eq!(
        engine.served_name(&mine),
        "dev-${aws:username}",
        "not known yet"
    );
    ready(settled(&engine, &mine).await);
    let assumed = sts
        .calls()
        .into_iter()
        .find(|c| c.op == "AssumeRole")
        .unwrap();
    assert_eq!(
        assumed.role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/dev-agent")
    );
    assert_eq!(engine.served_name(&mine), "dev-agent");
    assert_eq!(engine.served_name(&role("app")), "app");
}

#[tokio::test(start_paused = true)]
async fn clearing_the_session_ends_a_wait_at_once() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let engine = prompting_engine(&sts, &clock);
    let app = role("app");
    let wait = engine.prepare(&app, &anyone()).unwrap();
    let waiting = tokio::spawn(wait);
    until_waiting(&engine).await;
    let started = tokio::time::Instant::now();
    engine.clear_session().await;
    waiting.await.unwrap();
    assert!(started.elapsed() < WAIT, "the wait held the session's lock");
    assert!(!engine.mfa_prompt().waiting);
    // A code for the old identity is not used for the new one.
    assert_eq!(sts.count("GetSessionToken"), 0);
}

#[tokio::test]
async fn a_code_for_a_newer_identity_is_left_for_it_and_one_for_an_older_is_refused() {
    use super::super::prompt::{HandedCode, Prompter, Reply};
    let prompter = Prompter::default();
    let (tx, mut newer) = tokio::sync::oneshot::channel();
    prompter.hand(HandedCode {
        code: code("111111"),
        generation: 3,
        reply: Reply::to(tx),
    });
    assert!(
        prompter.take(2).is_none(),
        "a fetch of generation 2 leaves it"
    );
    assert!(newer.try_recv().is_err(), "and does not answer it");
    assert!(prompter.take(3).is_some(), "generation 3 gets it");
    prompter.discard(4);
    let (tx, older) = tokio::sync::oneshot::channel();
    prompter.hand(HandedCode {
        code: code("222222"),
        generation: 3,
        reply: Reply::to(tx),
    });
    assert!(
        matches!(older.await, Ok(CodeOutcome::Failed(_))),
        "handed in too late"
    );
    assert!(!prompter.has_code(3) && !prompter.has_code(4));
}
