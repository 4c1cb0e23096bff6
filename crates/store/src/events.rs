//! The per-sandbox event log: every step the reconciler takes and every
//! request that changed a sandbox, in order. A sandbox keeps its newest
//! [`EVENTS_KEPT`] events (older ones are pruned as new ones are added), so
//! a tenant that makes events at will (keepalives, restarts) cannot grow
//! the log without bound, and a search of one sandbox's log
//! ([`Store::find_events`]) reads at most that many rows.

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

/// How many events a sandbox keeps (its newest).
pub const EVENTS_KEPT: u32 = 10_000;

/// Events are pruned once every this many added (by their sequence
/// number), so a sandbox holds at most about [`EVENTS_KEPT`] plus this.
const PRUNE_EVERY: i64 = 64;

/// A search of one sandbox's events (see [`Store::find_events`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only events at or after this time (Unix ms).
    pub from: Option<i64>,
    /// Only events at or before this time (Unix ms).
    pub to: Option<i64>,
    /// Only events of this kind.
    pub kind: Option<String>,
    /// Only events whose message contains this text.
    pub contains: Option<String>,
    /// Newest first (else oldest first).
    pub newest_first: bool,
    /// The most events returned.
    pub limit: u32,
}

impl Store {
    /// Append an event (and, now and then, prune the sandbox's oldest past
    /// [`EVENTS_KEPT`]).
    pub fn add_event(&self, sandbox_id: &str, kind: &str, message: &str) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO events (sandbox_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
            params![sandbox_id, self.now(), kind, message],
        )?;
        if conn.last_insert_rowid() % PRUNE_EVERY == 0 {
            prune(&conn, sandbox_id)?;
        }
        Ok(())
    }

    /// [`Store::set_state`] and [`Store::add_event`] in one transaction:
    /// a transition and its event are one commit.
    pub fn set_state_with_event(
        &self,
        id: &str,
        state: crate::kinds::State,
        reason: &str,
        kind: &str,
        message: &str,
    ) -> Result<()> {
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            crate::sandboxes::SET_STATE,
            params![id, state.as_str(), reason, now],
        )?;
        tx.execute(
            "INSERT INTO events (sandbox_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
            params![id, now, kind, message],
        )?;
        if tx.last_insert_rowid() % PRUNE_EVERY == 0 {
            prune(&tx, id)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Events of a sandbox matching `q`, among its newest
    /// [`EVENTS_KEPT`] (the most rows one search reads), in the order `q`
    /// asks.
    pub fn find_events(&self, sandbox_id: &str, q: &EventQuery) -> Result<Vec<Event>> {
        let order = if q.newest_first { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT seq, sandbox_id, at, kind, message FROM ( \
                 SELECT seq, sandbox_id, at, kind, message FROM events \
                 WHERE sandbox_id = ?1 ORDER BY seq DESC LIMIT ?2) \
             WHERE at >= ?3 AND at <= ?4 AND (?5 IS NULL OR kind = ?5) \
               AND (?6 IS NULL OR instr(message, ?6) > 0) \
             ORDER BY seq {order} LIMIT ?7"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![
                sandbox_id,
                EVENTS_KEPT,
                q.from.unwrap_or(i64::MIN),
                q.to.unwrap_or(i64::MAX),
                q.kind,
                q.contains,
                q.limit
            ],
            row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Events of a sandbox after `after_seq`, oldest first.
    pub fn events(&self, sandbox_id: &str, after_seq: i64, limit: u32) -> Result<Vec<Event>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, sandbox_id, at, kind, message FROM events \
             WHERE sandbox_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![sandbox_id, after_seq, limit], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        seq: r.get(0)?,
        sandbox_id: r.get(1)?,
        at: r.get(2)?,
        kind: r.get(3)?,
        message: r.get(4)?,
    })
}

/// Delete the events of `sandbox_id` older than its newest [`EVENTS_KEPT`].
fn prune(conn: &rusqlite::Connection, sandbox_id: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM events WHERE sandbox_id = ?1 AND seq < ( \
             SELECT seq FROM events WHERE sandbox_id = ?1 \
             ORDER BY seq DESC LIMIT 1 OFFSET ?2 - 1)",
        params![sandbox_id, EVENTS_KEPT],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{EventQuery, EVENTS_KEPT};
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

    #[test]
    fn a_search_filters_orders_and_limits_in_the_database() {
        let t = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(1000));
        let clock = t.clone();
        let s = Store::in_memory()
            .unwrap()
            .with_clock(move || clock.load(std::sync::atomic::Ordering::SeqCst));
        for (at, kind, msg) in [
            (1000, "state", "started"),
            (2000, "error", "disk full"),
            (3000, "request", "keepalive"),
            (4000, "error", "agent lost"),
        ] {
            t.store(at, std::sync::atomic::Ordering::SeqCst);
            s.add_event("x", kind, msg).unwrap();
            s.add_event("y", kind, "other sandbox").unwrap();
        }
        let msgs = |q: EventQuery| -> Vec<String> {
            s.find_events("x", &q)
                .unwrap()
                .into_iter()
                .map(|e| e.message)
                .collect()
        };
        let all = EventQuery {
            limit: 100,
            ..Default::default()
        };
        assert_eq!(
            msgs(all.clone()),
            ["started", "disk full", "keepalive", "agent lost"]
        );
        assert_eq!(
            msgs(EventQuery {
                from: Some(2000),
                limit: 2,
                ..all.clone()
            }),
            ["disk full", "keepalive"]
        );
        assert_eq!(
            msgs(EventQuery {
                to: Some(3000),
                newest_first: true,
                ..all.clone()
            }),
            ["keepalive", "disk full", "started"]
        );
        assert_eq!(
            msgs(EventQuery {
                kind: Some("error".into()),
                ..all.clone()
            }),
            ["disk full", "agent lost"]
        );
        assert_eq!(
            msgs(EventQuery {
                contains: Some("ee".into()),
                ..all.clone()
            }),
            ["keepalive"]
        );
        assert!(msgs(EventQuery { limit: 0, ..all }).is_empty());
    }

    #[test]
    fn a_sandbox_keeps_its_newest_events_only() {
        let s = Store::in_memory().unwrap();
        let n = EVENTS_KEPT as usize + 500;
        for i in 0..n {
            s.add_event("x", "request", &format!("e{i}")).unwrap();
            if i % 100 == 0 {
                s.add_event("y", "request", "other").unwrap();
            }
        }
        let count = |id: &str| -> usize {
            let conn = s.conn();
            conn.query_row(
                "SELECT COUNT(*) FROM events WHERE sandbox_id = ?1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .unwrap() as usize
        };
        let kept = count("x");
        assert!(
            (EVENTS_KEPT as usize..EVENTS_KEPT as usize + 64).contains(&kept),
            "{kept} events kept"
        );
        let newest = s
            .find_events(
                "x",
                &EventQuery {
                    newest_first: true,
                    limit: 1,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(newest[0].message, format!("e{}", n - 1));
        let oldest = s.events("x", 0, 1).unwrap();
        assert!(oldest[0].message != "e0", "the oldest were pruned");
        assert_eq!(count("y"), n.div_ceil(100), "another sandbox keeps its own");
    }
}
