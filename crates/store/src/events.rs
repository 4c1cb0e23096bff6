//! The per-sandbox event log: every step the reconciler takes and every
//! request that changed a sandbox, in order.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::{Result, Store};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub seq: i64,
    pub sandbox_id: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    /// A short machine-readable kind (`state`, `request`, `step`, `error`).
    pub kind: String,
    pub message: String,
}

impl Store {
    /// Append an event.
    pub fn add_event(&self, sandbox_id: &str, kind: &str, message: &str) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO events (sandbox_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
            params![sandbox_id, self.now(), kind, message],
        )?;
        Ok(())
    }

    /// Events of a sandbox after `after_seq`, oldest first.
    pub fn events(&self, sandbox_id: &str, after_seq: i64, limit: u32) -> Result<Vec<Event>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, sandbox_id, at, kind, message FROM events \
             WHERE sandbox_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![sandbox_id, after_seq, limit], |r| {
            Ok(Event {
                seq: r.get(0)?,
                sandbox_id: r.get(1)?,
                at: r.get(2)?,
                kind: r.get(3)?,
                message: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;

    #[test]
    fn events_come_back_in_order() {
        let s = Store::in_memory().unwrap();
        s.add_event("x", "state", "one").unwrap();
        s.add_event("y", "state", "other").unwrap();
        s.add_event("x", "state", "two").unwrap();
        let ev = s.events("x", 0, 10).unwrap();
        assert_eq!(
            ev.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert!(s.events("x", ev[1].seq, 10).unwrap().is_empty());
    }
}
