//! A token bucket over every STS call the agent makes, so that a burst of
//! new workloads, or a bug, can't push the account into STS throttling.
//!
//! Two lanes: calls for what an assignment names (`Lane::Wanted`: the
//! roles of assigned workloads, and the agent's own session) take the
//! budget before calls made on demand for anyone else, so a user asking
//! for a thousand sessions queues behind the host's own workloads, never
//! ahead of them. Never all of it: while both lanes wait, every
//! `WANTED_PER_ON_DEMAND`-th call goes to the on-demand lane, so a
//! rotation of a thousand assigned roles does not keep a new workload's
//! first request from its fetch for minutes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How many calls on demand one owner may have waiting for the budget (or
/// in STS) at once; the rest of its calls wait their turn behind them, so
/// a user starting a thousand sessions holds two places in the queue, not
/// a thousand.
pub(crate) const TURNS_PER_OWNER: usize = 2;

/// While both lanes wait, wanted calls take this many tokens for each one
/// a call on demand takes.
pub(crate) const WANTED_PER_ON_DEMAND: u32 = 3;

/// Which calls go first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lane {
    /// A role an assignment names, or the agent's own session.
    Wanted,
    /// Anything else: waits while a wanted call does. With an owner (a
    /// user whose own cgroups asked), at most `TURNS_PER_OWNER` at once.
    OnDemand(Option<Arc<str>>),
}

/// At most `rate` calls a second on average, `burst` at once.
#[derive(Debug)]
pub(crate) struct Budget {
    rate: f64,
    burst: f64,
    state: Mutex<Bucket>,
    /// Wanted calls waiting for the budget.
    wanted_waiting: AtomicUsize,
    /// Calls on demand waiting for the budget (at the head of their line).
    on_demand_waiting: AtomicUsize,
    /// Each owner's turns, while any of its calls waits or runs.
    owners: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
    /// Calls of each lane wait in line (tokio's mutex is first come,
    /// first served), one at a time for a token.
    wanted_line: tokio::sync::Mutex<()>,
    on_demand_line: tokio::sync::Mutex<()>,
}

/// The tokens, and how the lanes shared them lately.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Wanted calls that took a token while a call on demand waited, since
    /// a call on demand last took one.
    wanted_streak: u32,
}

/// Counts a call as waiting while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A call's place: hold it until STS has answered.
#[derive(Debug)]
pub(crate) struct Turn<'a> {
    budget: &'a Budget,
    owner: Option<(Arc<str>, Arc<Semaphore>, OwnedSemaphorePermit)>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let Some((owner, turns, permit)) = self.owner.take() else {
            return;
        };
        drop(permit);
        let mut owners = self.budget.lock_owners();
        // Only the map and this turn hold it: nobody of this owner waits.
        if Arc::strong_count(&turns) == 2 {
            owners.remove(&owner);
        }
    }
}

impl Budget {
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: rate.max(0.001),
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
                wanted_streak: 0,
            }),
            wanted_waiting: AtomicUsize::new(0),
            on_demand_waiting: AtomicUsize::new(0),
            owners: Mutex::default(),
            wanted_line: tokio::sync::Mutex::const_new(()),
            on_demand_line: tokio::sync::Mutex::const_new(()),
        }
    }

    fn lock_owners(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Semaphore>>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one call for what every fetch waits on, or an assignment
    /// names.
    pub(crate) async fn acquire_wanted(&self) -> Turn<'_> {
        self.take(true).await;
        Turn {
            budget: self,
            owner: None,
        }
    }

    /// Takes one call from the budget, waiting until there is one (on
    /// demand: until it is its owner's turn, and its lane's). `None` when
    /// `abandoned` was set meanwhile: nobody wants the call any more, and
    /// it costs no token.
    pub(crate) async fn acquire(&self, lane: &Lane, abandoned: &AtomicBool) -> Option<Turn<'_>> {
        let owner = match lane {
            Lane::OnDemand(Some(owner)) => {
                let turns = Arc::clone(
                    self.lock_owners()
                        .entry(Arc::clone(owner))
                        .or_insert_with(|| Arc::new(Semaphore::new(TURNS_PER_OWNER))),
                );
                // Never closed.
                let permit = Arc::clone(&turns).acquire_owned().await.ok();
                permit.map(|permit| (Arc::clone(owner), turns, permit))
            }
            _ => None,
        };
        let turn = Turn {
            budget: self,
            owner,
        };
        if abandoned.load(Ordering::SeqCst) {
            return None;
        }
        self.take(matches!(lane, Lane::Wanted)).await;
        Some(turn)
    }

    async fn take(&self, wanted: bool) {
        // Counted before the line: the lane stays waiting between one call
        // leaving the head of its line and the next reaching it.
        let mine = if wanted {
            &self.wanted_waiting
        } else {
            &self.on_demand_waiting
        };
        mine.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(mine);
        let _in_line = if wanted {
            self.wanted_line.lock().await
        } else {
            self.on_demand_line.lock().await
        };
        loop {
            let wait = {
                let mut bucket = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                bucket.tokens = (bucket.tokens
                    + now.duration_since(bucket.last).as_secs_f64() * self.rate)
                    .min(self.burst);
                bucket.last = now;
                let others_wait = if wanted {
                    self.on_demand_waiting.load(Ordering::SeqCst) > 0
                } else {
                    self.wanted_waiting.load(Ordering::SeqCst) > 0
                };
                let its_turn = bucket.wanted_streak >= WANTED_PER_ON_DEMAND;
                let yields = others_wait && if wanted { its_turn } else { !its_turn };
                if bucket.tokens >= 1.0 && !yields {
                    bucket.tokens -= 1.0;
                    if !wanted {
                        bucket.wanted_streak = 0;
                    } else if others_wait {
                        bucket.wanted_streak += 1;
                    }
                    return;
                }
                Duration::from_secs_f64((1.0 - bucket.tokens).max(0.0) / self.rate)
                    .max(Duration::from_millis(10))
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Owners with calls waiting or running (tests).
    #[cfg(test)]
    pub(crate) fn owners_waiting(&self) -> usize {
        self.lock_owners().len()
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
            drop(budget.acquire_wanted().await);
        }
        assert!(
            start.elapsed() < Duration::from_millis(1),
            "the burst is immediate"
        );
        for _ in 0..4 {
            drop(
                budget
                    .acquire(&Lane::OnDemand(None), &AtomicBool::new(false))
                    .await
                    .unwrap(),
            );
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
        drop(
            budget
                .acquire(&Lane::OnDemand(None), &AtomicBool::new(false))
                .await
                .unwrap(),
        );
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (budget, order) = (budget.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                drop(
                    budget
                        .acquire(&Lane::OnDemand(None), &AtomicBool::new(false))
                        .await
                        .unwrap(),
                );
                order.lock().unwrap().push(i);
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (b, o) = (budget.clone(), order.clone());
        let wanted = tokio::spawn(async move {
            drop(b.acquire_wanted().await);
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

    /// One owner's thousand calls hold two places: another owner's call,
    /// made after them, is among the next few.
    #[tokio::test(start_paused = true)]
    async fn an_owner_holds_two_places_in_the_queue() {
        let budget = std::sync::Arc::new(Budget::new(1.0, 1));
        drop(budget.acquire_wanted().await);
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let flood: Arc<str> = Arc::from("user:4242");
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (budget, order, flood) = (budget.clone(), order.clone(), flood.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = budget
                    .acquire(&Lane::OnDemand(Some(flood)), &AtomicBool::new(false))
                    .await
                    .unwrap();
                order.lock().unwrap().push(i);
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (b, o) = (budget.clone(), order.clone());
        let other = tokio::spawn(async move {
            let _turn = b
                .acquire(
                    &Lane::OnDemand(Some(Arc::from("user:1000"))),
                    &AtomicBool::new(false),
                )
                .await
                .unwrap();
            o.lock().unwrap().push(99);
        });
        other.await.unwrap();
        let seen = order.lock().unwrap().clone();
        let place = seen.iter().position(|i| *i == 99).unwrap();
        assert!(
            place <= TURNS_PER_OWNER,
            "at most the flood's places went first: {seen:?}"
        );
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            budget.owners_waiting(),
            0,
            "an owner with nothing waiting is forgotten"
        );
    }

    /// Both lanes full: every fourth call goes to the on-demand lane, and
    /// a call whose entry was dropped while it waited takes no token.
    #[tokio::test(start_paused = true)]
    async fn calls_on_demand_get_a_share_while_wanted_calls_queue() {
        let budget = std::sync::Arc::new(Budget::new(10.0, 1));
        drop(budget.acquire_wanted().await);
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (budget, order) = (budget.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    drop(budget.acquire_wanted().await);
                    order.lock().unwrap().push('w');
                } else {
                    let turn = budget
                        .acquire(&Lane::OnDemand(None), &AtomicBool::new(false))
                        .await;
                    assert!(turn.is_some());
                    order.lock().unwrap().push('d');
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let seen: String = order.lock().unwrap().iter().collect();
        assert!(seen.len() >= 12, "{seen}");
        let first: String = seen.chars().take(12).collect();
        assert_eq!(first.matches('d').count(), 3, "one in four: {seen}");
        for task in tasks {
            task.abort();
        }
        let abandoned = AtomicBool::new(true);
        assert!(
            budget
                .acquire(&Lane::OnDemand(None), &abandoned)
                .await
                .is_none()
        );
    }
}
