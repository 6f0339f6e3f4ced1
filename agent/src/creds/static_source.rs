//! Fixed keys, from the config or the environment, served with an expiry
//! that rolls forward: for development and tests, where no STS is at hand.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{CredentialSource, Credentials, Keys, Lookup, Role};

/// Serves the same keys for every role, as belonging to `account_id`.
///
/// Real credentials expire, and SDKs schedule refreshes from `Expiration`, so
/// the keys are served as if re-issued every half `lifetime`: `LastUpdated` is
/// the start of the current half-period and `Expiration` one `lifetime` after
/// it. Served credentials therefore always have more than half a lifetime
/// left, and the values are a pure function of the time.
#[derive(Debug)]
pub struct StaticSource {
    keys: Arc<Keys>,
    lifetime: Duration,
    account_id: Option<Arc<str>>,
    /// The current issue, reused (with its rendered documents) until the
    /// next: for roles of the default account, which is nearly always.
    current: Mutex<Option<Credentials>>,
}

impl StaticSource {
    /// Serves `keys`, re-issued every `lifetime / 2` (at least one second),
    /// as keys of `account_id` (else of the role's account).
    pub fn new(keys: Keys, lifetime: Duration, account_id: Option<String>) -> Self {
        Self {
            keys: Arc::new(keys),
            lifetime: lifetime.max(Duration::from_secs(2)),
            account_id: account_id.map(Arc::from),
            current: Mutex::new(None),
        }
    }
}

impl CredentialSource for StaticSource {
    fn lookup(&self, role: &Role, now: SystemTime) -> Lookup {
        let period = (self.lifetime / 2).as_secs().max(1);
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let issued = UNIX_EPOCH + Duration::from_secs(since_epoch / period * period);
        let fresh = |account_id| Credentials {
            keys: Arc::clone(&self.keys),
            last_updated: issued,
            expiration: issued + self.lifetime,
            account_id,
            rendered: Default::default(),
        };
        if let Some(account) = role.spec.account_id() {
            return Lookup::Ready(fresh(Some(Arc::from(account))));
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match current.as_ref() {
            Some(c) if c.last_updated == issued => Lookup::Ready(c.clone()),
            _ => {
                let c = fresh(self.account_id.clone());
                *current = Some(c.clone());
                Lookup::Ready(c)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::creds::Secret;

    fn source(lifetime_secs: u64) -> StaticSource {
        let keys = Keys {
            access_key_id: "ASIAEXAMPLE000001234".into(),
            secret_access_key: Secret::new("secret"),
            session_token: Secret::new("token"),
        };
        StaticSource::new(keys, Duration::from_secs(lifetime_secs), None)
    }

    fn role() -> Role {
        Role::parse("demo@111111111111").unwrap()
    }

    fn ready(lookup: Lookup) -> Credentials {
        match lookup {
            Lookup::Ready(c) => c,
            Lookup::Unavailable(u) => panic!("unavailable: {u:?}"),
        }
    }

    #[test]
    fn expiry_rolls_forward_and_keeps_half_a_lifetime() {
        let s = source(3600);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for step in 0..200u64 {
            let now = t0 + Duration::from_secs(step * 97);
            let c = ready(s.lookup(&role(), now));
            let left = c.expiration.duration_since(now).unwrap();
            assert!(left > Duration::from_secs(1800), "step {step}: {left:?}");
            assert!(left <= Duration::from_secs(3600), "step {step}: {left:?}");
            assert!(c.last_updated <= now);
        }
    }

    #[test]
    fn same_answer_within_a_period() {
        let s = source(3600);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let a = ready(s.lookup(&role(), t0));
        let b = ready(s.lookup(&role(), t0 + Duration::from_secs(10)));
        assert_eq!(a, b);
    }

    #[test]
    fn key_suffix_is_the_last_four() {
        let s = source(3600);
        let c = ready(s.lookup(&role(), SystemTime::now()));
        assert_eq!(c.keys.key_suffix(), "1234");
        let short = Keys {
            access_key_id: "AB".into(),
            secret_access_key: Secret::new(""),
            session_token: Secret::new(""),
        };
        assert_eq!(short.key_suffix(), "AB");
        assert_eq!(format!("{:?}", c.keys.secret_access_key), "Secret(..)");
    }
}
