//! Waiting for a lock for a while, not for ever: a token that hangs in a
//! signature, or a file read that never returns, must not pile up the
//! threads that wait behind it (tokio's blocking pool is shared with the
//! request path).

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// `mutex`'s guard, if it comes within `limit` (a poisoned lock is taken:
/// what it guards is rebuilt by its users).
pub(super) fn lock_within<T>(mutex: &Mutex<T>, limit: Duration) -> Option<MutexGuard<'_, T>> {
    let started = Instant::now();
    loop {
        match mutex.try_lock() {
            Ok(guard) => return Some(guard),
            Err(TryLockError::Poisoned(e)) => return Some(e.into_inner()),
            Err(TryLockError::WouldBlock) if started.elapsed() < limit => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(TryLockError::WouldBlock) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_given_up_on() {
        let mutex = Mutex::new(());
        let held = mutex.lock().unwrap();
        let started = Instant::now();
        assert!(lock_within(&mutex, Duration::from_millis(50)).is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(held);
        assert!(lock_within(&mutex, Duration::ZERO).is_some());
    }
}
