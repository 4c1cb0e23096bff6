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
    /// Sandboxes whose agent did not answer the periodic sweep in time:
    /// how many passes to skip before asking again, and how many times in
    /// a row it failed (the skip doubles, up to a cap).
    pub(crate) backoff: Mutex<HashMap<String, (u32, u32)>>,
    /// Timeline rows copied from each sandbox's agent in the current
    /// minute (minute, rows): a fake agent that makes up events every
    /// call cannot flood the shared event log.
    pub(crate) copied: Mutex<HashMap<String, (i64, usize)>>,
}

impl Default for Bookkeeping {
    fn default() -> Self {
        Bookkeeping {
            sent: Default::default(),
            seen: Default::default(),
            backoff: Default::default(),
            copied: Default::default(),
            since_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }
}
