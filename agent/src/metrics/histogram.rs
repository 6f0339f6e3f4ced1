//! A latency histogram of process-wide atomics: one relaxed increment per
//! observation for the bucket, the count and the sum, never a lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A counter at zero (arrays of atomics are built from it).
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

/// Observations of a duration, in buckets bounded by `N` upper bounds (in
/// microseconds, ascending).
#[derive(Debug)]
pub(super) struct Histogram<const N: usize> {
    bounds_us: [u64; N],
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    /// An empty histogram with these bounds.
    pub(super) const fn new(bounds_us: [u64; N]) -> Self {
        Self {
            bounds_us,
            buckets: [ZERO; N],
            count: ZERO,
            sum_us: ZERO,
        }
    }

    /// Counts one observation.
    pub(super) fn observe(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // Buckets are cumulative when rendered; each observation lands in
        // the first bucket it fits.
        if let Some(bucket) = self.bounds_us.iter().position(|b| micros <= *b) {
            self.buckets[bucket].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(micros, Relaxed);
    }

    /// Observations so far.
    pub(super) fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The `_bucket`, `_sum` and `_count` samples of `name`; `labels` (as
    /// `key="value",` pairs, each followed by a comma) go before `le`.
    pub(super) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, counter) in self.bounds_us.iter().zip(&self.buckets) {
            cumulative += counter.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}le=\"{}\"}} {cumulative}",
                seconds(*bound)
            );
        }
        // `observe` counts the bucket before the count, and an observation
        // may land between the reads: +Inf (and the count) are never shown
        // below the last bucket.
        let count = self.count().max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let labels = labels.trim_end_matches(',');
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            seconds(self.sum_us.load(Relaxed))
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Microseconds as seconds, without trailing zeros.
pub(super) fn seconds(micros: u64) -> String {
    let text = format!("{:.6}", micros as f64 / 1e6);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_labels_go_first() {
        let h = Histogram::new([100, 1_000]);
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_secs(2));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "action=\"A\",");
        assert_eq!(
            out,
            "x_seconds_bucket{action=\"A\",le=\"0.0001\"} 1\n\
             x_seconds_bucket{action=\"A\",le=\"0.001\"} 2\n\
             x_seconds_bucket{action=\"A\",le=\"+Inf\"} 3\n\
             x_seconds_sum{action=\"A\"} 2.00055\n\
             x_seconds_count{action=\"A\"} 3\n"
        );
        let mut bare = String::new();
        Histogram::new([1]).render(&mut bare, "y", "");
        assert!(
            bare.contains("y_sum 0\n") && bare.contains("y_count 0\n"),
            "{bare}"
        );
    }
}
