//! What the doze timer knows of each sandbox (see [`crate::doze`]): kept
//! apart so the context holds it without depending on the doze's
//! operations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dwell_proto::{SleepGate, WakeHook};

/// The longest wait between two tries on a sandbox found busy (processes
/// of its own, a transition) or failing: the wait doubles from
/// `--doze-after` each time, since asking costs the sandbox CPU too.
pub(crate) const MAX_RECHECK: Duration = Duration::from_secs(60);

/// How long a sandbox's agent has gone unused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quiet {
    /// The gate's activity count when last seen to change.
    pub(crate) activity: u64,
    pub(crate) since: Instant,
    /// Unused this long, it is asked whether it may doze.
    pub(crate) wait: Duration,
}

/// What the doze timer knows of one sandbox.
pub(crate) struct Entry {
    pub(crate) gate: Arc<SleepGate>,
    /// Held while the sandbox is frozen, thawed or connected to.
    pub(crate) lock: Arc<tokio::sync::Mutex<()>>,
    pub(crate) quiet: Option<Quiet>,
}

/// What the doze timer knows, per sandbox of a runtime that dozes.
#[derive(Default)]
pub(crate) struct Dozing {
    pub(crate) entries: Mutex<HashMap<String, Entry>>,
    /// Dozing sandboxes woken by a call since the daemon started.
    pub(crate) wakes: std::sync::atomic::AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dozing {
    /// Sandbox `id`'s sleep gate and doze lock (made on first use, the
    /// gate waking the sandbox with `hook()`).
    pub(crate) fn entry(
        &self,
        id: &str,
        hook: impl FnOnce() -> WakeHook,
    ) -> (Arc<SleepGate>, Arc<tokio::sync::Mutex<()>>) {
        let mut entries = lock(&self.entries);
        let e = entries.entry(id.to_string()).or_insert_with(|| Entry {
            gate: SleepGate::new(hook()),
            lock: Default::default(),
            quiet: None,
        });
        (e.gate.clone(), e.lock.clone())
    }

    /// How many sandboxes doze right now.
    pub(crate) fn count(&self) -> usize {
        lock(&self.entries)
            .values()
            .filter(|e| e.gate.is_asleep())
            .count()
    }

    /// Dozing sandboxes woken by a call since the daemon started.
    pub(crate) fn wakes(&self) -> u64 {
        self.wakes.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set_quiet(&self, id: &str, quiet: Option<Quiet>) {
        if let Some(e) = lock(&self.entries).get_mut(id) {
            e.quiet = quiet;
        }
    }

    /// Try again later, twice as late as last time (see [`MAX_RECHECK`]).
    pub(crate) fn back_off(&self, id: &str, activity: u64, floor: Duration) {
        if let Some(e) = lock(&self.entries).get_mut(id) {
            let wait = e
                .quiet
                .map_or(Duration::ZERO, |q| q.wait)
                .saturating_mul(2)
                .clamp(floor, MAX_RECHECK.max(floor));
            e.quiet = Some(Quiet {
                activity,
                since: Instant::now(),
                wait,
            });
        }
    }
}
