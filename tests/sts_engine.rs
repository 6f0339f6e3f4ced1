//! The credentials engine with the real STS client (aws-sdk-sts) against
//! moto, on a clock the test moves: refresh with STS's shortest session
//! (15 minutes) walked through an hour without waiting an hour, and the
//! client's reading of STS's errors.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use imds_agent::clock::{Clock, Now};
use imds_agent::creds::engine::{BaseConfig, Engine, Identity, Mode, Profile, Settings};
use imds_agent::creds::sts::{AssumeRoleRequest, AwsSts, BaseCreds, Sts, StsError};
use imds_agent::creds::{CredentialSource, Holder, Keys, Lookup, Role, Secret, User};
use support::sts::StsProxy;

/// Real time when created; moves only when told.
#[derive(Debug)]
struct TestClock(Mutex<Now>);

impl TestClock {
    fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap();
        now.wall += by;
        now.mono += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> Now {
        *self.0.lock().unwrap()
    }
}

fn keys() -> Keys {
    Keys {
        access_key_id: "AKIAENGINETEST000001".to_owned(),
        secret_access_key: Secret::new("engine-test-secret"),
        session_token: Secret::new(""),
    }
}

fn settings() -> Settings {
    Settings {
        keep: Duration::from_secs(1800),
        error_ttl: Duration::from_secs(60),
        max_backoff: Duration::from_secs(60),
        rate: 100.0,
        burst: 100,
        max_roles: 16,
        idle_ttl: Duration::from_secs(3600),
        default_account: Some("123456789012".to_owned()),
        default_partition: "aws".to_owned(),
        default_session_name: "engine-test".to_owned(),
        source_identity: false,
        session_tags: false,
        hostname: "test".to_owned(),
        jitter_seed: 1,
        mfa_prompt_wait: Duration::ZERO,
        prefetch_spread: Duration::ZERO,
    }
}

fn base() -> BaseConfig {
    let identity = Identity {
        region: "us-east-1".to_owned(),
        mode: Mode::AssumeRole,
        duration: Duration::from_secs(900),
        external_id: None,
        mfa: None,
        mfa_session: Duration::from_secs(43_200),
    };
    BaseConfig::Profiles {
        profiles: BTreeMap::from([(
            "test".to_owned(),
            Profile {
                keys: keys(),
                identity,
                role: None,
            },
        )]),
        active: "test".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_minute_sessions_are_refreshed_before_they_expire() {
    let proxy = StsProxy::start();
    let clock = Arc::new(TestClock(Mutex::new(Now {
        wall: SystemTime::now(),
        mono: Duration::ZERO,
    })));
    let sts = Arc::new(AwsSts::new(Some(proxy.url().to_owned())));
    let engine = Engine::new(
        sts,
        Arc::clone(&clock) as Arc<dyn Clock>,
        base(),
        settings(),
    );
    let role = Role::parse("app").unwrap();
    engine.set_wanted([role.clone()]);
    let anyone = User {
        holder: Holder::Unchecked,
        owner: None,
    };
    if let Some(first) = engine.prepare(&role, &anyone) {
        first.await;
    }
    let mut keys_seen = Vec::new();
    let mut advanced = Duration::ZERO;
    for _ in 0..60 {
        clock.advance(Duration::from_secs(60));
        advanced += Duration::from_secs(60);
        // STS's expirations follow the test's clock.
        proxy.set_offset(advanced.as_secs());
        engine.run_due().await;
        let now = clock.now().wall;
        match engine.lookup(&role, now) {
            Lookup::Ready(c) => {
                let left = c.expiration.duration_since(now).expect("not expired");
                assert!(
                    left > Duration::from_secs(5 * 60),
                    "served with {left:?} left"
                );
                if keys_seen.last() != Some(&c.keys.access_key_id) {
                    keys_seen.push(c.keys.access_key_id.clone());
                }
            }
            Lookup::Unavailable(u) => panic!("after {advanced:?}: {u:?}"),
        }
    }
    let calls = proxy.calls();
    let assumed: Vec<_> = calls
        .iter()
        .filter(|c| c["action"] == "AssumeRole")
        .collect();
    // 15-minute sessions replaced at half-life (7.5 minutes before expiry,
    // up to ~2 minutes earlier with jitter): 8 to 11 times in an hour.
    assert!(
        (8..=12).contains(&assumed.len()),
        "{} AssumeRole calls",
        assumed.len()
    );
    assert!(
        assumed
            .iter()
            .all(|c| c["params"]["DurationSeconds"] == "900")
    );
    assert_eq!(keys_seen.len(), assumed.len(), "every refresh was served");
}

#[tokio::test]
async fn the_client_reads_sts_errors() {
    let proxy = StsProxy::start();
    let sts = AwsSts::new(Some(proxy.url().to_owned()));
    let base = BaseCreds::Keys(Arc::new(keys()));
    let request = AssumeRoleRequest {
        role_arn: "arn:aws:iam::123456789012:role/app".to_owned(),
        session_name: "errors".to_owned(),
        duration: Duration::from_secs(900),
        external_id: Some("ext".to_owned()),
        source_identity: Some("workload".to_owned()),
        tags: vec![("team".to_owned(), "blue".to_owned())],
    };
    let ok = sts
        .assume_role(&base, "us-east-1", &request, None)
        .await
        .expect("moto answers");
    assert_eq!(ok.account_id.as_deref(), Some("123456789012"));
    let sent = &proxy.calls()[0]["params"];
    assert_eq!(sent["ExternalId"], "ext");
    assert_eq!(sent["SourceIdentity"], "workload");
    assert_eq!(sent["Tags.member.1.Key"], "team");
    /// A proxy mode, and what the client must make of it.
    type Case = (&'static str, fn(&StsError) -> bool);
    let cases: [Case; 4] = [
        (
            "denied",
            |e| matches!(e, StsError::Refused { code, .. } if code == "AccessDenied"),
        ),
        (
            "throttle",
            |e| matches!(e, StsError::Throttled(m) if m.contains("Rate exceeded")),
        ),
        (
            "error500",
            |e| matches!(e, StsError::Unavailable(m) if m.contains("500")),
        ),
        ("drop", |e| matches!(e, StsError::Unavailable(_))),
    ];
    for (mode, expected) in cases {
        proxy.set_mode(mode, None, 0.0);
        let error = sts
            .assume_role(&base, "us-east-1", &request, None)
            .await
            .unwrap_err();
        assert!(expected(&error), "{mode}: {error:?}");
        assert_eq!(error.is_transient(), mode != "denied", "{mode}");
        assert!(!error.to_string().contains("engine-test-secret"));
    }
    let who = {
        proxy.set_mode("pass", None, 0.0);
        sts.get_caller_identity(&base, "us-east-1").await.unwrap()
    };
    assert_eq!(who.account, "123456789012");
}
