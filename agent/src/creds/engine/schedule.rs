//! When to refresh and when to retry: pure functions of times and a jitter
//! draw, so the lifecycle rules are unit-tested without clocks or STS.

use std::time::{Duration, SystemTime};

/// When credentials issued at `issued` and expiring at `expiration` should
/// be replaced: `keep` before expiry (at most half their lifetime), earlier
/// by up to an eighth of the lifetime (at most 5 minutes) of jitter, so
/// that roles fetched together do not all refresh in the same second.
///
/// `jitter` is a draw from `[0, 1)`.
pub(crate) fn refresh_at(
    issued: SystemTime,
    expiration: SystemTime,
    keep: Duration,
    jitter: f64,
) -> SystemTime {
    let lifetime = expiration.duration_since(issued).unwrap_or_default();
    let keep = keep.min(lifetime / 2);
    let spread = (lifetime / 8).min(Duration::from_secs(300));
    let before = keep + spread.mul_f64(jitter.clamp(0.0, 1.0));
    expiration.checked_sub(before).unwrap_or(issued).max(issued)
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
    fn one_hour_credentials_refresh_with_25_to_30_minutes_left() {
        let issued = t(1_000_000);
        let expiration = issued + HOUR;
        for jitter in [0.0, 0.3, 0.999] {
            let at = refresh_at(issued, expiration, 30 * MIN, jitter);
            let left = expiration.duration_since(at).unwrap();
            assert!(left >= 30 * MIN && left <= 35 * MIN, "{jitter}: {left:?}");
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
            assert!(age >= Duration::from_secs(337), "{age:?}");
            assert!(age <= Duration::from_secs(450), "{age:?}");
        }
        // Already expired on arrival (clock skew): refresh at once, not before.
        assert_eq!(refresh_at(t(100), t(50), 30 * MIN, 0.5), t(100));
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
