//! Credentials carried across a restart: taken back without an STS call
//! when nothing changed, dropped when anything did.

use super::*;

/// An engine that fetched `roles`, and what it carries at its stop.
async fn carried_from(clock: &Arc<FakeClock>, roles: &[&str]) -> (Vec<u8>, Vec<Credentials>) {
    let sts = FakeSts::new(clock);
    let first = engine(&sts, clock, keys_base(), settings());
    let mut served = Vec::new();
    for name in roles {
        served.push(ready(settled(&first, &role(name)).await));
    }
    assert_eq!(sts.count("AssumeRole"), roles.len());
    (first.carry(), served)
}

#[tokio::test]
async fn a_restart_serves_what_the_last_run_had_without_asking_sts() {
    let clock = FakeClock::new();
    let (bytes, served) = carried_from(&clock, &["app", "web"]).await;
    clock.advance(5 * MIN);
    let sts = FakeSts::new(&clock);
    let next = engine(&sts, &clock, keys_base(), settings());
    let taken = next.take_carried(&bytes, |_| true).unwrap();
    assert_eq!(
        taken,
        TakenBack {
            kept: 2,
            dropped: 0
        }
    );
    next.set_wanted([role("app"), role("web")]);
    for (name, before) in ["app", "web"].iter().zip(&served) {
        let now = ready(next.lookup(&role(name), clock.wall()));
        assert_eq!(now.keys.access_key_id, before.keys.access_key_id);
        assert_eq!(now.keys.secret_access_key, before.keys.secret_access_key);
        assert_eq!(now.expiration, before.expiration);
    }
    next.run_due().await;
    assert_eq!(sts.calls().len(), 0, "no STS call at all");
    // Refreshed when it would have been.
    clock.advance(HOUR);
    next.run_due().await;
    assert_eq!(sts.count("AssumeRole"), 2);
}

#[tokio::test]
async fn roles_no_longer_assigned_or_due_for_refresh_are_dropped() {
    let clock = FakeClock::new();
    let (bytes, _) = carried_from(&clock, &["app", "gone"]).await;
    let sts = FakeSts::new(&clock);
    let next = engine(&sts, &clock, keys_base(), settings());
    let taken = next
        .take_carried(&bytes, |r| r.spec != role("gone").spec)
        .unwrap();
    assert_eq!(
        taken,
        TakenBack {
            kept: 1,
            dropped: 1
        }
    );
    assert!(matches!(
        next.lookup(&role("gone"), clock.wall()),
        Lookup::Unavailable(_)
    ));

    // An hour's credentials, kept 30 minutes and refreshed a little
    // before that: after 30 they are due.
    clock.advance(30 * MIN);
    let later = engine(&FakeSts::new(&clock), &clock, keys_base(), settings());
    let taken = later.take_carried(&bytes, |_| true).unwrap();
    assert_eq!(
        taken,
        TakenBack {
            kept: 0,
            dropped: 2
        }
    );
}

#[tokio::test]
async fn another_identity_or_format_takes_nothing_back() {
    let clock = FakeClock::new();
    let (bytes, _) = carried_from(&clock, &["app"]).await;
    let other = engine(&FakeSts::new(&clock), &clock, profiles_base(), settings());
    let err = other.take_carried(&bytes, |_| true).unwrap_err();
    assert!(matches!(err, CarryError::OtherIdentity(..)), "{err}");
    let mut elsewhere = settings();
    elsewhere.default_account = Some("999999999999".to_owned());
    let other = engine(&FakeSts::new(&clock), &clock, keys_base(), elsewhere);
    assert!(matches!(
        other.take_carried(&bytes, |_| true),
        Err(CarryError::OtherIdentity(..))
    ));
    let same = engine(&FakeSts::new(&clock), &clock, keys_base(), settings());
    assert!(matches!(
        same.take_carried(b"not json", |_| true),
        Err(CarryError::Unreadable(_))
    ));
    let text = String::from_utf8(bytes)
        .unwrap()
        .replace("\"version\":1", "\"version\":9");
    assert!(matches!(
        same.take_carried(text.as_bytes(), |_| true),
        Err(CarryError::Version(9))
    ));
    assert!(cached_roles(&same).await.is_empty());
}

#[tokio::test]
async fn only_credentials_of_the_identity_in_force_are_carried() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(&clock);
    let first = engine(&sts, &clock, profiles_base(), settings());
    ready(settled(&first, &role("app")).await);
    // A switch: what the old profile fetched is not carried as the new
    // one's.
    first.use_profile("play", |_| true, Vec::new).unwrap();
    let carried: serde_json::Value = serde_json::from_slice(&first.carry()).unwrap();
    assert_eq!(
        carried["roles"].as_array().map(Vec::len),
        Some(0),
        "{carried}"
    );
}

#[tokio::test]
async fn settings_that_change_what_sts_gives_take_nothing_back() {
    let clock = FakeClock::new();
    let (bytes, _) = carried_from(&clock, &["app"]).await;
    let mut longer = identity(Mode::AssumeRole, None);
    longer.duration = 2 * HOUR;
    let changed = engine(
        &FakeSts::new(&clock),
        &clock,
        one_profile(longer),
        settings(),
    );
    assert!(matches!(
        changed.take_carried(&bytes, |_| true),
        Err(CarryError::OtherIdentity(..))
    ));
    let mut renamed = settings();
    renamed.default_session_name = "another-host".to_owned();
    let changed = engine(&FakeSts::new(&clock), &clock, keys_base(), renamed);
    assert!(matches!(
        changed.take_carried(&bytes, |_| true),
        Err(CarryError::OtherIdentity(..))
    ));
}

#[tokio::test]
async fn bare_names_in_a_discovered_account_and_bootstrap_keys_vouch_for_nothing() {
    let clock = FakeClock::new();
    let mut discovered = settings();
    discovered.default_account = None;
    let sts = FakeSts::new(&clock);
    let first = engine(&sts, &clock, keys_base(), discovered.clone());
    ready(settled(&first, &role("app")).await);
    ready(settled(&first, &role("named@123456789012")).await);
    let bytes = first.carry();
    let next = engine(&FakeSts::new(&clock), &clock, keys_base(), discovered);
    let taken = next.take_carried(&bytes, |_| true).unwrap();
    assert_eq!(
        taken,
        TakenBack {
            kept: 1,
            dropped: 1
        },
        "only the role with its account"
    );

    let base = || BaseConfig::Bootstrap {
        identity: identity(Mode::AssumeRole, None),
    };
    let booted = engine(&FakeSts::new(&clock), &clock, base(), settings());
    booted.bootstrap(keys("AKIABOOTSTRAPPED0001")).unwrap();
    ready(settled(&booted, &role("app")).await);
    assert!(booted.carry().is_empty(), "nothing is carried");
    let again = engine(&FakeSts::new(&clock), &clock, base(), settings());
    assert!(matches!(
        again.take_carried(&bytes, |_| true),
        Err(CarryError::NoIdentity(_))
    ));
}
