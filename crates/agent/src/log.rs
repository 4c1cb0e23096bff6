//! Minimal stderr logging, enabled with `DWELL_AGENT_LOG=debug` (errors always print).

use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Reads `DWELL_AGENT_LOG` once at startup.
pub fn init() {
    if let Ok(v) = std::env::var("DWELL_AGENT_LOG") {
        DEBUG.store(matches!(v.as_str(), "debug" | "trace"), Ordering::Relaxed);
    }
}

/// Whether debug logging is on.
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Logs at debug level.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => {
        if $crate::log::debug_enabled() {
            eprintln!("dwell-agent: {}", format_args!($($t)*));
        }
    };
}

/// Logs an error (always).
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => {
        eprintln!("dwell-agent: error: {}", format_args!($($t)*));
    };
}
