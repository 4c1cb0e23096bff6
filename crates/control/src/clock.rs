//! Time as the control plane sees it. Policies compare stored timestamps
//! with [`Clock::now_ms`]; tests drive a [`ManualClock`] instead of waiting.

use std::sync::atomic::{AtomicI64, Ordering};

/// A source of "now", in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        dwell_store::now_ms()
    }
}

/// A clock that only moves when told to; starts at the system time.
pub struct ManualClock(AtomicI64);

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock(AtomicI64::new(dwell_store::now_ms()))
    }
}

impl ManualClock {
    /// Move time forward.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
