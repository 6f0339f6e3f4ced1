//! The engine against a scripted STS and a clock the tests move: the
//! harness here, the tests in `basics` (fetching, errors, sessions,
//! profiles) and `lifecycle` (first requests, holders, rotation, MFA, the
//! cache's bounds).

mod attacks;
mod basics;
mod carry;
mod lifecycle;
mod prompt;
mod spread;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;

use super::*;
use crate::clock::Now;
use crate::creds::mfa::{MfaCode, TotpSecret};
use crate::creds::sts::BaseCreds;
use crate::creds::sts::{AssumeRoleRequest, CallerIdentity, Mfa, StsError};
use crate::creds::{Credentials, Holder, Keys, Lookup, Unavailable, User};
use crate::creds::{Secret, SessionParams};

const HOUR: Duration = Duration::from_secs(3600);
const MIN: Duration = Duration::from_secs(60);

/// A clock that only moves when told.
#[derive(Debug)]
struct FakeClock(Mutex<Now>);

impl FakeClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(Now {
            wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            mono: Duration::from_secs(1000),
        })))
    }

    fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap();
        now.wall += by;
        now.mono += by;
    }

    fn wall(&self) -> SystemTime {
        self.0.lock().unwrap().wall
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Now {
        *self.0.lock().unwrap()
    }
}

/// One call the fake STS received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    op: &'static str,
    /// The caller's access key id.
    base: String,
    region: String,
    role_arn: Option<String>,
    session_name: Option<String>,
    external_id: Option<String>,
    mfa: Option<(String, String)>,
    duration: Option<Duration>,
}

/// STS that issues numbered keys (or scripted errors), records every call,
/// and can hold calls until the test releases them.
#[derive(Debug)]
struct FakeSts {
    clock: Arc<FakeClock>,
    calls: Mutex<Vec<Call>>,
    errors: Mutex<VecDeque<StsError>>,
    gate: Option<Arc<Semaphore>>,
    serial: Mutex<u32>,
    /// Issued credentials expire this much sooner than asked (a host
    /// clock running ahead of STS's).
    short_by: Mutex<Duration>,
}

impl FakeSts {
    fn new(clock: &Arc<FakeClock>) -> Arc<Self> {
        Arc::new(Self {
            clock: Arc::clone(clock),
            calls: Mutex::default(),
            errors: Mutex::default(),
            gate: None,
            serial: Mutex::new(0),
            short_by: Mutex::new(Duration::ZERO),
        })
    }

    fn gated(clock: &Arc<FakeClock>, gate: Arc<Semaphore>) -> Arc<Self> {
        Arc::new(Self {
            gate: Some(gate),
            ..Arc::into_inner(Self::new(clock)).unwrap()
        })
    }

    fn fail_next(&self, error: StsError) {
        self.errors.lock().unwrap().push_back(error);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn count(&self, op: &str) -> usize {
        self.calls().iter().filter(|c| c.op == op).count()
    }

    async fn answer(&self, call: Call, duration: Duration) -> Result<Issued, StsError> {
        self.calls.lock().unwrap().push(call);
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if let Some(error) = self.errors.lock().unwrap().pop_front() {
            return Err(error);
        }
        let n = {
            let mut serial = self.serial.lock().unwrap();
            *serial += 1;
            *serial
        };
        Ok(Issued {
            keys: Keys {
                access_key_id: format!("ASIAFAKE{n:012}"),
                secret_access_key: Secret::new(format!("secret-{n}")),
                session_token: Secret::new(format!("token-{n}")),
            },
            expiration: self.clock.wall() + duration - *self.short_by.lock().unwrap(),
            account_id: Some("210987654321".to_owned()),
        })
    }
}

fn base_name(base: &BaseCreds) -> String {
    match base {
        BaseCreds::Chain(_) => "chain".to_owned(),
        BaseCreds::Keys(keys) => keys.access_key_id.clone(),
    }
}

impl Sts for FakeSts {
    fn assume_role<'a>(
        &'a self,
        base: &'a BaseCreds,
        region: &'a str,
        request: &'a AssumeRoleRequest,
        mfa: Option<&'a Mfa>,
    ) -> crate::creds::sts::BoxFuture<'a, Result<Issued, StsError>> {
        let call = Call {
            op: "AssumeRole",
            base: base_name(base),
            region: region.to_owned(),
            role_arn: Some(request.role_arn.clone()),
            session_name: Some(request.session_name.clone()),
            external_id: request.external_id.clone(),
            mfa: mfa.map(|m| (m.serial.clone(), m.code.expose().to_owned())),
            duration: Some(request.duration),
        };
        Box::pin(self.answer(call, request.duration))
    }

    fn get_session_token<'a>(
        &'a self,
        base: &'a BaseCreds,
        region: &'a str,
        duration: Duration,
        mfa: Option<&'a Mfa>,
    ) -> crate::creds::sts::BoxFuture<'a, Result<Issued, StsError>> {
        let call = Call {
            op: "GetSessionToken",
            base: base_name(base),
            region: region.to_owned(),
            role_arn: None,
            session_name: None,
            external_id: None,
            mfa: mfa.map(|m| (m.serial.clone(), m.code.expose().to_owned())),
            duration: Some(duration),
        };
        Box::pin(self.answer(call, duration))
    }

    fn get_caller_identity<'a>(
        &'a self,
        base: &'a BaseCreds,
        region: &'a str,
    ) -> crate::creds::sts::BoxFuture<'a, Result<CallerIdentity, StsError>> {
        let call = Call {
            op: "GetCallerIdentity",
            base: base_name(base),
            region: region.to_owned(),
            role_arn: None,
            session_name: None,
            external_id: None,
            mfa: None,
            duration: None,
        };
        Box::pin(async move {
            self.calls.lock().unwrap().push(call);
            Ok(CallerIdentity {
                account: "333333333333".to_owned(),
                arn: "arn:aws:iam::333333333333:user/agent".to_owned(),
            })
        })
    }
}

fn keys(id: &str) -> Keys {
    Keys {
        access_key_id: id.to_owned(),
        secret_access_key: Secret::new("base-secret"),
        session_token: Secret::new(""),
    }
}

fn identity(mode: Mode, mfa: Option<MfaSettings>) -> Identity {
    Identity {
        region: "eu-west-1".to_owned(),
        mode,
        duration: HOUR,
        external_id: None,
        mfa,
        mfa_session: 12 * HOUR,
    }
}

fn settings() -> Settings {
    Settings {
        keep: 30 * MIN,
        error_ttl: MIN,
        max_backoff: MIN,
        rate: 1000.0,
        burst: 1000,
        max_roles: 16,
        idle_ttl: 10 * MIN,
        default_account: Some("123456789012".to_owned()),
        default_partition: "aws".to_owned(),
        default_session_name: "imds-agent-host".to_owned(),
        source_identity: false,
        session_tags: false,
        hostname: "host".to_owned(),
        jitter_seed: 7,
        mfa_prompt_wait: Duration::ZERO,
        prefetch_spread: Duration::ZERO,
    }
}

fn profiles_base() -> BaseConfig {
    let mut profiles = BTreeMap::new();
    for name in ["work", "play"] {
        profiles.insert(
            name.to_owned(),
            Profile {
                keys: keys(&format!("AKIA{}", name.to_uppercase())),
                identity: identity(Mode::AssumeRole, None),
                role: Some(Arc::new(Role::parse(&format!("{name}-role")).unwrap())),
            },
        );
    }
    BaseConfig::Profiles {
        profiles,
        active: "work".to_owned(),
    }
}

/// One profile, "dev", with `identity`.
fn one_profile(identity: Identity) -> BaseConfig {
    BaseConfig::Profiles {
        profiles: BTreeMap::from([(
            "dev".to_owned(),
            Profile {
                keys: keys("AKIADEV"),
                identity,
                role: None,
            },
        )]),
        active: "dev".to_owned(),
    }
}

fn keys_base() -> BaseConfig {
    let mut profiles = BTreeMap::new();
    profiles.insert(
        "only".to_owned(),
        Profile {
            keys: keys("AKIABASE"),
            identity: identity(Mode::AssumeRole, None),
            role: None,
        },
    );
    BaseConfig::Profiles {
        profiles,
        active: "only".to_owned(),
    }
}

fn engine(
    sts: &Arc<FakeSts>,
    clock: &Arc<FakeClock>,
    base: BaseConfig,
    settings: Settings,
) -> Engine {
    let sts: Arc<dyn Sts> = Arc::clone(sts) as Arc<dyn Sts>;
    Engine::new(sts, Arc::clone(clock) as Arc<dyn Clock>, base, settings)
}

fn role(spec: &str) -> Role {
    Role::parse(spec).unwrap()
}

/// A workload whose life the engine can't check.
fn anyone() -> User {
    User {
        holder: Holder::Unchecked,
        owner: None,
    }
}

/// Waits until `role` has settled (credentials or an error).
async fn settled(engine: &Engine, role: &Role) -> Lookup {
    for _ in 0..200 {
        if let Some(wait) = engine.prepare(role, &anyone()) {
            wait.await;
        }
        let lookup = engine.lookup(role, engine.inner.clock.now().wall);
        let pending =
            matches!(&lookup, Lookup::Unavailable(u) if u.message.contains("being fetched"));
        if !pending {
            return engine.lookup(role, engine.inner.clock.now().wall);
        }
        tokio::task::yield_now().await;
    }
    panic!("{role:?} never settled");
}

/// The roles the engine has cached.
async fn cached_roles(engine: &Engine) -> Vec<String> {
    engine
        .status()
        .await
        .roles
        .into_iter()
        .map(|r| r.role)
        .collect()
}

fn ready(lookup: Lookup) -> Credentials {
    match lookup {
        Lookup::Ready(c) => c,
        Lookup::Unavailable(u) => panic!("unavailable: {u:?}"),
    }
}

fn unavailable(lookup: Lookup) -> Unavailable {
    match lookup {
        Lookup::Unavailable(u) => u,
        Lookup::Ready(c) => panic!("ready: {c:?}"),
    }
}
