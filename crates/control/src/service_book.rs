//! What the daemon told agents about their services, and heard back (see
//! [`crate::service`]): kept apart so the context holds it without
//! depending on the service's operations.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// The daemon's memory of what it told and heard from agents.
pub(crate) struct Bookkeeping {
    /// Sandboxes whose agent got the definition in this daemon's life.
    pub(crate) sent: Mutex<HashSet<String>>,
    /// The last agent event copied into each sandbox's timeline.
    pub(crate) seen: Mutex<HashMap<String, u64>>,
    /// When this daemon started (Unix ms): agent events older than that
    /// are not copied (a previous daemon may have copied them).
    pub(crate) since_ms: u64,
}

impl Default for Bookkeeping {
    fn default() -> Self {
        Bookkeeping {
            sent: Default::default(),
            seen: Default::default(),
            since_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }
}
