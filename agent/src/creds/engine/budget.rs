//! A token bucket over every STS call the agent makes, so that a burst of
//! new workloads, or a bug, can't push the account into STS throttling.
//!
//! Two lanes: calls for what an assignment names (`Lane::Wanted`: the
//! roles of assigned workloads, and the agent's own session) take the
//! budget before calls made on demand for anyone else, so a user asking
//! for a thousand sessions queues behind the host's own workloads, never
//! ahead of them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Which calls go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// A role an assignment names, or the agent's own session.
    Wanted,
    /// Anything else: waits while a wanted call does.
    OnDemand,
}

/// At most `rate` calls a second on average, `burst` at once.
#[derive(Debug)]
pub(crate) struct Budget {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
    /// Wanted calls waiting for the budget.
    wanted_waiting: AtomicUsize,
}

/// Counts a wanted call as waiting while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Budget {
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: rate.max(0.001),
            burst,
            state: Mutex::new((burst, Instant::now())),
            wanted_waiting: AtomicUsize::new(0),
        }
    }

    /// Takes one call from the budget, waiting until there is one (and,
    /// on demand, until no wanted call waits).
    pub(crate) async fn acquire(&self, lane: Lane) {
        let _waiting = (lane == Lane::Wanted).then(|| {
            self.wanted_waiting.fetch_add(1, Ordering::SeqCst);
            Waiting(&self.wanted_waiting)
        });
        loop {
            let wait = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let (tokens, last) = &mut *state;
                let now = Instant::now();
                *tokens =
                    (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
                *last = now;
                let yields =
                    lane == Lane::OnDemand && self.wanted_waiting.load(Ordering::SeqCst) > 0;
                if *tokens >= 1.0 && !yields {
                    *tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - *tokens).max(0.0) / self.rate)
                    .max(Duration::from_millis(10))
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate() {
        let budget = Budget::new(2.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            budget.acquire(Lane::Wanted).await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(1),
            "the burst is immediate"
        );
        for _ in 0..4 {
            budget.acquire(Lane::OnDemand).await;
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1990) && elapsed <= Duration::from_millis(2100),
            "{elapsed:?}"
        );
    }

    /// Many calls on demand queue up; a wanted one that comes after them
    /// still takes the next call.
    #[tokio::test(start_paused = true)]
    async fn wanted_calls_go_before_calls_on_demand() {
        let budget = std::sync::Arc::new(Budget::new(1.0, 1));
        budget.acquire(Lane::OnDemand).await;
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (budget, order) = (budget.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                budget.acquire(Lane::OnDemand).await;
                order.lock().unwrap().push(i);
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (b, o) = (budget.clone(), order.clone());
        let wanted = tokio::spawn(async move {
            b.acquire(Lane::Wanted).await;
            o.lock().unwrap().push(99);
        });
        wanted.await.unwrap();
        let seen = order.lock().unwrap().clone();
        assert!(
            seen.len() <= 1,
            "at most one on-demand call went first: {seen:?}"
        );
        for task in tasks {
            task.abort();
        }
    }
}
