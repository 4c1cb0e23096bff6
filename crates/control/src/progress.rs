//! Progress of long snapshot operations, by sandbox: what the snapshot
//! engine reports while it captures, archives or restores a volume, kept in
//! memory so `GET /v1/sandboxes/{id}/progress` can show it while the
//! request that started the operation is still running. An entry lives as
//! long as its [`Tracker`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// One operation's progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OpProgress {
    /// `snapshot`, `restore`, `archive` or `unarchive`.
    pub op: String,
    /// Bytes of the volume handled so far.
    pub done: u64,
    /// Bytes of the volume in total.
    pub total: u64,
}

/// Operations in flight, by sandbox id.
#[derive(Default, Clone)]
pub struct Board(Arc<Mutex<HashMap<String, OpProgress>>>);

impl Board {
    /// The progress of the operation running on `id`, if any.
    pub fn get(&self, id: &str) -> Option<OpProgress> {
        self.lock().get(id).cloned()
    }

    /// Start tracking `op` on sandbox `id`.
    pub fn track(&self, id: &str, op: &str) -> Tracker {
        self.lock().insert(
            id.to_string(),
            OpProgress {
                op: op.to_string(),
                done: 0,
                total: 0,
            },
        );
        Tracker {
            board: self.clone(),
            id: id.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, OpProgress>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Updates one entry; removes it when dropped.
pub struct Tracker {
    board: Board,
    id: String,
}

impl Tracker {
    /// Record a report from the snapshot engine (never moves backwards).
    pub fn report(&self, p: dwell_snapshot::Progress) {
        if let Some(e) = self.board.lock().get_mut(&self.id) {
            e.total = p.total;
            e.done = e.done.max(p.done).min(p.total);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.board.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_until_dropped() {
        let b = Board::default();
        let t = b.track("a", "snapshot");
        let rep = |done| dwell_snapshot::Progress {
            phase: dwell_snapshot::Phase::Create,
            done,
            total: 100,
        };
        t.report(rep(40));
        t.report(rep(30));
        assert_eq!(b.get("a").unwrap().done, 40);
        drop(t);
        assert!(b.get("a").is_none());
    }
}
