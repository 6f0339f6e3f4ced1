//! How many STS calls are under way at once, and which goes next: a call
//! a workload's request is waiting on goes before a prefetch, a prefetch
//! before anything else, first come first served within each. A burst of
//! a hundred new units makes a hundred calls; a slow STS (or a throttled
//! one) answers the ones workloads wait for first instead of all of them
//! late.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;

/// Calls under way at most. STS answers in tens of milliseconds: sixteen
/// at once is hundreds a second, far above the call budget's rate.
pub(crate) const MAX_IN_FLIGHT: usize = 16;

/// The gate.
#[derive(Debug)]
pub(crate) struct InFlight {
    max: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    queue: VecDeque<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    /// Set while a request waits for this call's answer (read when a place
    /// frees up: a request may come while the call waits).
    waited: Arc<AtomicBool>,
    wanted: bool,
    go: oneshot::Sender<()>,
}

/// A call's place among those under way; the next goes when it is dropped.
#[derive(Debug)]
pub(crate) struct Slot<'a>(&'a InFlight);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A place being waited for: if the waiting call gives up after its place
/// was handed over, the place goes to the next.
struct Queued<'a> {
    gate: &'a InFlight,
    go: oneshot::Receiver<()>,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.go.try_recv().is_ok() {
            self.gate.release();
        }
    }
}

impl InFlight {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a place: `waited` says whether a request waits on the
    /// call (it may change while the call waits), `wanted` whether an
    /// assignment named its role.
    pub(crate) async fn enter(&self, waited: &Arc<AtomicBool>, wanted: bool) -> Slot<'_> {
        let go = {
            let mut state = self.lock();
            if state.running < self.max && state.queue.is_empty() {
                state.running += 1;
                return Slot(self);
            }
            let (go, wait) = oneshot::channel();
            state.queue.push_back(Waiter {
                waited: Arc::clone(waited),
                wanted,
                go,
            });
            wait
        };
        let mut queued = Queued { gate: self, go };
        // The sender lives in the queue until it hands this call a place
        // (it is dropped unsent only with the gate). Received, the place is
        // the slot's: `Queued`'s drop finds nothing left to give back.
        let _ = (&mut queued.go).await;
        Slot(self)
    }

    /// Hands the freed place to the next call: one a request waits on,
    /// else a wanted one, else the first.
    fn release(&self) {
        let mut state = self.lock();
        loop {
            let queue = &state.queue;
            let next = queue
                .iter()
                .position(|w| w.waited.load(Ordering::SeqCst))
                .or_else(|| queue.iter().position(|w| w.wanted))
                .or(if queue.is_empty() { None } else { Some(0) });
            let Some(next) = next else {
                state.running -= 1;
                return;
            };
            if let Some(waiter) = state.queue.remove(next)
                && waiter.go.send(()).is_ok()
            {
                return;
            }
        }
    }

    /// Calls under way and waiting (tests).
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.running, state.queue.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(value: bool) -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(value))
    }

    /// With one place taken: a call that a request comes to wait on goes
    /// first, then the wanted one, then the rest in order.
    #[tokio::test]
    async fn waited_for_calls_go_first_then_wanted_ones() {
        let gate = Arc::new(InFlight::new(1));
        let held = gate.enter(&flag(false), false).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let later = flag(false);
        let mut tasks = Vec::new();
        for (name, waited, wanted) in [
            ("plain", flag(false), false),
            ("later-waited", Arc::clone(&later), false),
            ("wanted", flag(false), true),
            ("plain-2", flag(false), false),
        ] {
            let (gate, order) = (Arc::clone(&gate), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _slot = gate.enter(&waited, wanted).await;
                order.lock().unwrap().push(name);
                tokio::task::yield_now().await;
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.counts(), (1, 4));
        // A request comes to wait on the second one while it is queued.
        later.store(true, Ordering::SeqCst);
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec!["later-waited", "wanted", "plain", "plain-2"]
        );
        assert_eq!(gate.counts(), (0, 0), "every place given back");
    }

    /// A call that gives up while queued does not take a place with it.
    #[tokio::test]
    async fn a_call_that_gives_up_leaves_its_place() {
        let gate = Arc::new(InFlight::new(1));
        let held = gate.enter(&flag(false), false).await;
        let g = Arc::clone(&gate);
        let quitter = tokio::spawn(async move {
            let _slot = g.enter(&flag(false), false).await;
        });
        tokio::task::yield_now().await;
        quitter.abort();
        let _ = quitter.await;
        drop(held);
        let _again = gate.enter(&flag(false), false).await;
        assert_eq!(gate.counts(), (1, 0));
    }
}
