//! Time as the rest of the agent sees it: one `Now` value per request, taken
//! from a `Clock`, so that every rule that depends on time (token expiry,
//! credential expiry) can be tested without sleeping.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

/// A reading of both clocks at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Wall-clock time, for everything a client sees (`Expiration`,
    /// `LastUpdated`).
    pub wall: SystemTime,
    /// Time since the agent's clock started, for token expiry. Monotonic, so
    /// a wall-clock step never revives or kills a token early.
    pub mono: Duration,
}

/// Where `Now` comes from.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Reads both clocks.
    fn now(&self) -> Now;
}

/// The real clocks.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// Starts the monotonic count at zero now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now {
            wall: SystemTime::now(),
            mono: self.start.elapsed(),
        }
    }
}
