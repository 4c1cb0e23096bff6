//! What wakes the deadline timer ([`crate::reconcile::deadlines`]): the
//! sandboxes whose deadlines may have moved since it last looked, by id,
//! so that it re-reads those records only, never the whole store on a
//! tenant's request. A burst of changes to one sandbox is one re-read; a
//! flood of changes to more sandboxes than [`MAX_PENDING`] turns into one
//! full rescan, which the timer spaces out. It also counts the timer's
//! full rescans (what the tests check a burst of activity against).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The most sandbox ids kept waiting for the timer; past it, the timer
/// rescans everything instead (bounded memory whatever the load).
pub(crate) const MAX_PENDING: usize = 4096;

/// Changed sandboxes waiting for the timer, and its wake-up call.
#[derive(Default)]
pub(crate) struct DeadlineWakes {
    notify: tokio::sync::Notify,
    pending: Mutex<Pending>,
    full_scans: AtomicU64,
}

#[derive(Default)]
struct Pending {
    /// Everything must be looked at again (then `ids` is empty).
    all: bool,
    ids: HashSet<String>,
}

impl DeadlineWakes {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A deadline of sandbox `id` may have moved (a policy or keepalive
    /// change, a transition, its last stream closing): the timer re-reads
    /// its record.
    pub(crate) fn changed(&self, id: &str) {
        {
            let mut p = self.pending();
            if !p.all {
                if p.ids.len() >= MAX_PENDING && !p.ids.contains(id) {
                    p.all = true;
                    p.ids = HashSet::new();
                } else {
                    p.ids.insert(id.to_string());
                }
            }
        }
        self.notify.notify_one();
    }

    /// Ask for a full rescan without waking the timer (it comes back for
    /// it when it may: see [`crate::reconcile::deadlines`]).
    pub(crate) fn rescan_later(&self) {
        let mut p = self.pending();
        p.all = true;
        p.ids = HashSet::new();
    }

    /// What changed since the last call: whether everything must be
    /// looked at again, and which sandboxes.
    pub(crate) fn take(&self) -> (bool, Vec<String>) {
        let mut p = self.pending();
        let all = std::mem::take(&mut p.all);
        (all, std::mem::take(&mut p.ids).into_iter().collect())
    }

    /// Wait for [`Self::changed`] (one call made while nobody waits is
    /// kept for the next wait).
    pub(crate) async fn notified(&self) {
        self.notify.notified().await
    }

    /// The timer read every live sandbox once more.
    pub(crate) fn count_full_scan(&self) {
        self.full_scans.fetch_add(1, Ordering::Relaxed);
    }

    /// How many full rescans the timer has made since the daemon started.
    #[cfg(test)]
    pub(crate) fn full_scans(&self) -> u64 {
        self.full_scans.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_kept_once_per_sandbox_and_overflow_into_a_rescan() {
        let w = DeadlineWakes::default();
        for _ in 0..100 {
            w.changed("a");
        }
        w.changed("b");
        let (all, mut ids) = w.take();
        ids.sort();
        assert!(!all);
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(w.take(), (false, vec![]));

        for i in 0..=MAX_PENDING {
            w.changed(&format!("s{i}"));
        }
        let (all, ids) = w.take();
        assert!(all, "more than MAX_PENDING sandboxes: one full rescan");
        assert!(ids.is_empty());
        w.rescan_later();
        assert_eq!(w.take(), (true, vec![]));
    }
}
