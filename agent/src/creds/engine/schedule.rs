//! When to refresh and when to retry: pure functions of times and a jitter
//! draw, so the lifecycle rules are unit-tested without clocks or STS.

use std::time::{Duration, SystemTime};

/// What SDKs count as "about to expire": botocore refreshes credentials
/// with less than 15 minutes left (and logs an expiration extension), the
/// Java SDK v1 refetches on every call then. Served credentials are to keep
/// at least this long.
pub const SDK_REFRESH_WINDOW: Duration = Duration::from_secs(900);

/// How long before expiry credentials with `lifetime` are replaced: `keep`,
/// but never more than half their lifetime (credentials refreshed sooner
/// than that would be refreshed again at once).
pub fn effective_keep(keep: Duration, lifetime: Duration) -> Duration {
    keep.min(lifetime / 2)
}

/// The most a refresh is moved earlier by jitter: an eighth of the
/// lifetime, at most 5 minutes.
pub(crate) fn jitter_spread(lifetime: Duration) -> Duration {
    (lifetime / 8).min(Duration::from_secs(300))
}

/// Time the refresh itself may take (the budget's queue, STS): a refresh
/// starts this much before `effective_keep` is reached, so what is served
/// while it runs still keeps that long. A minute, less for short lifetimes.
pub(crate) fn refresh_slack(lifetime: Duration) -> Duration {
    (lifetime / 16).min(Duration::from_secs(60))
}

/// When credentials issued at `issued` and expiring at `expiration` should
/// be replaced: `effective_keep` and `refresh_slack` before expiry, earlier
/// by up to `jitter_spread`, so that roles fetched together do not all
/// refresh in the same second.
///
/// `jitter` is a draw from `[0, 1)`.
pub(crate) fn refresh_at(
    issued: SystemTime,
    expiration: SystemTime,
    keep: Duration,
    jitter: f64,
) -> SystemTime {
    let lifetime = expiration.duration_since(issued).unwrap_or_default();
    let before = effective_keep(keep, lifetime)
        + refresh_slack(lifetime)
        + jitter_spread(lifetime).mul_f64(jitter.clamp(0.0, 1.0));
    expiration.checked_sub(before).unwrap_or(issued).max(issued)
}

/// When a failed fetch is tried again: after `wait`, but while credentials
/// are still served (valid until `valid_until`) never later than halfway
/// to their expiry, so a refusal's `error_ttl` can't outlast them: the
/// retries come closer together as expiry nears (at least a second apart).
pub(crate) fn retry_at(
    now: SystemTime,
    wait: Duration,
    valid_until: Option<SystemTime>,
) -> SystemTime {
    let left = valid_until
        .and_then(|until| until.duration_since(now).ok())
        .filter(|left| !left.is_zero());
    match left {
        Some(left) => now + wait.min((left / 2).max(Duration::from_secs(1))),
        None => now + wait,
    }
}

/// How long to wait before trying a failed role again. A refusal (access
/// denied, bad parameters) waits `error_ttl`: asking again soon would get the
/// same answer. A transient failure (throttling, outage) backs off
/// exponentially from one second to `max`, with jitter.
pub(crate) fn retry_after(
    failures: u32,
    transient: bool,
    error_ttl: Duration,
    max: Duration,
    jitter: f64,
) -> Duration {
    if !transient {
        return error_ttl;
    }
    let exponent = failures.saturating_sub(1).min(16);
    let base = Duration::from_secs(1u64 << exponent).min(max);
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A small, fast pseudo-random generator for jitter (xorshift64*). Jitter
/// needs spread, not secrecy.
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// A draw from `[0, 1)`.
    pub(crate) fn next(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const HOUR: Duration = Duration::from_secs(3600);
    const MIN: Duration = Duration::from_secs(60);

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn one_hour_credentials_refresh_with_31_to_36_minutes_left() {
        let issued = t(1_000_000);
        let expiration = issued + HOUR;
        for jitter in [0.0, 0.3, 0.999] {
            let at = refresh_at(issued, expiration, 30 * MIN, jitter);
            let left = expiration.duration_since(at).unwrap();
            assert!(left >= 31 * MIN && left <= 36 * MIN, "{jitter}: {left:?}");
        }
    }

    #[test]
    fn served_credentials_keep_over_15_minutes_for_lifetimes_of_an_hour_or_more() {
        for hours in [1, 2, 6, 12] {
            let issued = t(0);
            let expiration = issued + HOUR * hours;
            let at = refresh_at(issued, expiration, 30 * MIN, 0.5);
            assert!(expiration.duration_since(at).unwrap() > 15 * MIN);
        }
    }

    #[test]
    fn short_lifetimes_refresh_at_half_life_not_in_a_loop() {
        // STS's shortest session: 15 minutes.
        let issued = t(0);
        let expiration = issued + 15 * MIN;
        for jitter in [0.0, 0.999] {
            let at = refresh_at(issued, expiration, 30 * MIN, jitter);
            let age = at.duration_since(issued).unwrap();
            assert!(age >= Duration::from_secs(281), "{age:?}");
            assert!(age <= Duration::from_secs(394), "{age:?}");
        }
        // Already expired on arrival (clock skew): refresh at once, not before.
        assert_eq!(refresh_at(t(100), t(50), 30 * MIN, 0.5), t(100));
    }

    /// Every (lifetime, keep) pair the config allows: credentials are
    /// replaced with at least `effective_keep` and a minute for the fetch
    /// left whatever the jitter (less only for lifetimes under 16 minutes),
    /// and that is at least the SDKs' 15 minutes exactly when the lifetime
    /// is 30 minutes or more (`config` warns about the others).
    #[test]
    fn the_fifteen_minute_rule_over_every_allowed_pair() {
        let issued = t(2_000_000);
        for lifetime in (900..=43_200).step_by(60) {
            let lifetime = Duration::from_secs(lifetime);
            for keep in (900..=3600).step_by(60) {
                let keep = Duration::from_secs(keep);
                let kept = effective_keep(keep, lifetime);
                for jitter in [0.0, 0.5, 0.999_999] {
                    let at = refresh_at(issued, issued + lifetime, keep, jitter);
                    assert!(at >= issued, "{lifetime:?} {keep:?}");
                    let left = (issued + lifetime).duration_since(at).unwrap();
                    let slack = MIN.min(lifetime / 16);
                    assert!(
                        left >= kept + slack,
                        "{lifetime:?} {keep:?} {jitter}: {left:?}"
                    );
                    assert!(left <= lifetime, "{lifetime:?} {keep:?}");
                }
                assert_eq!(
                    kept >= SDK_REFRESH_WINDOW,
                    lifetime >= 2 * SDK_REFRESH_WINDOW,
                    "{lifetime:?} {keep:?}"
                );
            }
        }
    }

    #[test]
    fn a_retry_never_outlasts_the_credentials_still_served() {
        let now = t(1000);
        let ttl = HOUR;
        assert_eq!(retry_at(now, ttl, None), now + ttl);
        assert_eq!(retry_at(now, ttl, Some(now + 20 * MIN)), now + 10 * MIN);
        assert_eq!(retry_at(now, MIN, Some(now + 20 * MIN)), now + MIN);
        assert_eq!(
            retry_at(now, ttl, Some(now + Duration::from_millis(500))),
            now + Duration::from_secs(1),
            "at least a second apart"
        );
        assert_eq!(
            retry_at(now, ttl, Some(now)),
            now + ttl,
            "expired: the plain wait"
        );
        // Retries close in on the expiry: a bounded number before it.
        let until = now + HOUR;
        let (mut at, mut tries) = (now, 0);
        while at < until {
            at = retry_at(at, ttl, Some(until));
            tries += 1;
        }
        assert!(tries <= 14, "{tries}");
    }

    #[test]
    fn retries() {
        let ttl = Duration::from_secs(60);
        let max = Duration::from_secs(60);
        assert_eq!(retry_after(1, false, ttl, max, 0.9), ttl);
        assert_eq!(retry_after(7, false, ttl, max, 0.1), ttl);
        let waits: Vec<Duration> = (1..=10)
            .map(|n| retry_after(n, true, ttl, max, 0.999))
            .collect();
        assert!(waits[0] <= Duration::from_secs(1));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= max));
        assert!(retry_after(1, true, ttl, max, 0.0) >= Duration::from_millis(500));
        assert!(retry_after(u32::MAX, true, ttl, max, 0.5) <= max);
    }

    #[test]
    fn jitter_is_in_range_and_spread() {
        let mut j = Jitter::new(42);
        let draws: Vec<f64> = (0..1000).map(|_| j.next()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let low = draws.iter().filter(|d| **d < 0.5).count();
        assert!((400..600).contains(&low), "{low}");
    }
}
