//! The per-sandbox event log: every step the reconciler takes and every
//! request that changed a sandbox, in order. A sandbox keeps its newest
//! [`EVENTS_KEPT`] events (older ones are pruned as new ones are added), so
//! a tenant that makes events at will (keepalives, restarts) cannot grow
//! the log without bound, and a search of one sandbox's log
//! ([`Store::find_events`]) reads at most that many rows.

use serde::{Deserialize, Serialize};

use crate::db::{Conn, Row};
use crate::{args, Result, Store};

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
        append(&mut self.db()?, sandbox_id, self.now(), kind, message)
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
        let mut tx = self.tx()?;
        tx.execute(
            crate::sandboxes::SET_STATE,
            args![id, state.as_str(), reason, now],
        )?;
        append(&mut *tx, id, now, kind, message)?;
        tx.commit()
    }

    /// Events of a sandbox matching `q`, among its newest
    /// [`EVENTS_KEPT`] (the most rows one search reads), in the order `q`
    /// asks.
    pub fn find_events(&self, sandbox_id: &str, q: &EventQuery) -> Result<Vec<Event>> {
        let order = if q.newest_first { "DESC" } else { "ASC" };
        // Where `?6` is in the message, from 1 (0: nowhere): no function
        // does it on both engines, and LIKE would need its wildcards
        // escaped and is blind to case on SQLite.
        let position = match self.engine() {
            "postgres" => "strpos(message, ?6)",
            _ => "instr(message, ?6)",
        };
        let sql = format!(
            "SELECT seq, sandbox_id, at, kind, message FROM ( \
                 SELECT seq, sandbox_id, at, kind, message FROM events \
                 WHERE sandbox_id = ?1 ORDER BY seq DESC LIMIT ?2) AS newest \
             WHERE at >= ?3 AND at <= ?4 AND (CAST(?5 AS TEXT) IS NULL OR kind = ?5) \
               AND (CAST(?6 AS TEXT) IS NULL OR {position} > 0) \
             ORDER BY seq {order} LIMIT ?7"
        );
        self.db()?
            .query(
                &sql,
                args![
                    sandbox_id,
                    EVENTS_KEPT,
                    q.from.unwrap_or(i64::MIN),
                    q.to.unwrap_or(i64::MAX),
                    q.kind,
                    q.contains,
                    q.limit
                ],
            )?
            .iter()
            .map(row)
            .collect()
    }

    /// Events of a sandbox after `after_seq`, oldest first.
    pub fn events(&self, sandbox_id: &str, after_seq: i64, limit: u32) -> Result<Vec<Event>> {
        self.db()?
            .query(
                "SELECT seq, sandbox_id, at, kind, message FROM events \
                 WHERE sandbox_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                args![sandbox_id, after_seq, limit],
            )?
            .iter()
            .map(row)
            .collect()
    }
}

fn row(r: &Row) -> Result<Event> {
    Ok(Event {
        seq: r.get(0)?,
        sandbox_id: r.get(1)?,
        at: r.get(2)?,
        kind: r.get(3)?,
        message: r.get(4)?,
    })
}

/// [`append`] for other modules' transactions.
pub(crate) fn append_in(
    c: &mut dyn Conn,
    sandbox_id: &str,
    at: i64,
    kind: &str,
    message: &str,
) -> Result<()> {
    append(c, sandbox_id, at, kind, message)
}

/// Insert one event on `c` (a session or a transaction's) and prune the
/// sandbox's log when the new sequence number says it is time.
fn append(c: &mut dyn Conn, sandbox_id: &str, at: i64, kind: &str, message: &str) -> Result<()> {
    let seq: i64 = c
        .query_one(
            "INSERT INTO events (sandbox_id, at, kind, message) VALUES (?1, ?2, ?3, ?4) \
             RETURNING seq",
            args![sandbox_id, at, kind, message],
        )?
        .get(0)?;
    if seq % PRUNE_EVERY == 0 {
        prune(c, sandbox_id)?;
    }
    Ok(())
}

/// Delete the events of `sandbox_id` older than its newest [`EVENTS_KEPT`].
fn prune(c: &mut dyn Conn, sandbox_id: &str) -> Result<()> {
    // The offset is computed here: PostgreSQL would type `?2 - 1` from the
    // literal, as a 32-bit integer.
    c.execute(
        "DELETE FROM events WHERE sandbox_id = ?1 AND seq < ( \
             SELECT seq FROM events WHERE sandbox_id = ?1 \
             ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        args![sandbox_id, i64::from(EVENTS_KEPT) - 1],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{EventQuery, EVENTS_KEPT, PRUNE_EVERY};
    use crate::db::Conn;
    use crate::{args, Store};
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    #[test]
    fn events_come_back_in_order() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.add_event("x", "state", "one").unwrap();
            s.add_event("y", "state", "other").unwrap();
            s.add_event("x", "state", "two").unwrap();
            let ev = s.events("x", 0, 10).unwrap();
            assert_eq!(
                ev.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
                ["one", "two"],
                "{e}"
            );
            assert!(ev[0].seq < ev[1].seq, "{e}");
            assert_eq!(s.events("x", 0, 1).unwrap().len(), 1, "{e}");
            assert!(s.events("x", ev[1].seq, 10).unwrap().is_empty(), "{e}");
            assert!(s.events("z", 0, 10).unwrap().is_empty(), "{e}");
        }
    }

    /// A store whose clock reads `t`.
    fn clocked(s: Store, t: &Arc<AtomicI64>) -> Store {
        let clock = t.clone();
        s.with_clock(move || clock.load(Ordering::SeqCst))
    }

    #[test]
    fn a_search_filters_orders_and_limits_in_the_database() {
        let t = Arc::new(AtomicI64::new(1000));
        for s in crate::testing::stores() {
            let s = clocked(s, &t);
            let e = s.engine();
            for (at, kind, msg) in [
                (1000, "state", "started"),
                (2000, "error", "disk full"),
                (3000, "request", "keepalive"),
                (4000, "error", "agent lost"),
                (5000, "step", "100% of 5_0"),
            ] {
                t.store(at, Ordering::SeqCst);
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
                to: Some(4000),
                limit: 100,
                ..Default::default()
            };
            assert_eq!(
                msgs(all.clone()),
                ["started", "disk full", "keepalive", "agent lost"],
                "{e}"
            );
            assert_eq!(
                msgs(EventQuery {
                    from: Some(2000),
                    limit: 2,
                    ..all.clone()
                }),
                ["disk full", "keepalive"],
                "{e}"
            );
            assert_eq!(
                msgs(EventQuery {
                    to: Some(3000),
                    newest_first: true,
                    ..all.clone()
                }),
                ["keepalive", "disk full", "started"],
                "{e}"
            );
            assert_eq!(
                msgs(EventQuery {
                    kind: Some("error".into()),
                    ..all.clone()
                }),
                ["disk full", "agent lost"],
                "{e}"
            );
            assert_eq!(
                msgs(EventQuery {
                    contains: Some("ee".into()),
                    ..all.clone()
                }),
                ["keepalive"],
                "{e}"
            );
            // The text is matched as it is: case counts and `%`, `_` are
            // no wildcards.
            assert!(msgs(EventQuery {
                contains: Some("Disk".into()),
                ..all.clone()
            })
            .is_empty());
            for text in ["%", "5_0", "100% of"] {
                assert_eq!(
                    msgs(EventQuery {
                        to: None,
                        contains: Some(text.into()),
                        ..all.clone()
                    }),
                    ["100% of 5_0"],
                    "{e}: {text}"
                );
            }
            assert!(msgs(EventQuery {
                contains: Some("_".into()),
                ..all.clone()
            })
            .is_empty());
            assert_eq!(
                msgs(EventQuery {
                    to: None,
                    newest_first: true,
                    limit: 1,
                    ..all.clone()
                }),
                ["100% of 5_0"],
                "{e}"
            );
            assert!(msgs(EventQuery { limit: 0, ..all }).is_empty(), "{e}");
        }
    }

    #[test]
    fn a_transition_without_its_sandbox_still_logs_and_commits() {
        for s in crate::testing::stores() {
            // No such sandbox: the update changes no row, the event is
            // written all the same (the reconciler logs what it saw).
            s.set_state_with_event("ghost", crate::State::Deleted, "gone", "state", "deleted")
                .unwrap();
            assert_eq!(s.events("ghost", 0, 10).unwrap().len(), 1, "{}", s.engine());
        }
    }

    fn count(s: &Store, id: &str) -> usize {
        s.db()
            .unwrap()
            .query_one(
                "SELECT COUNT(*) FROM events WHERE sandbox_id = ?1",
                args![id],
            )
            .unwrap()
            .get::<u64>(0)
            .unwrap() as usize
    }

    #[test]
    fn a_sandbox_keeps_its_newest_events_only() {
        for s in crate::testing::stores() {
            let e = s.engine();
            let n = EVENTS_KEPT as usize + 500;
            for i in 0..n {
                // Every other event with a transition: pruning runs in
                // transactions too.
                if i % 2 == 0 {
                    s.add_event("x", "request", &format!("e{i}")).unwrap();
                } else {
                    s.set_state_with_event(
                        "x",
                        crate::State::Running,
                        "r",
                        "state",
                        &format!("e{i}"),
                    )
                    .unwrap();
                }
                if i % 100 == 0 {
                    s.add_event("y", "request", "other").unwrap();
                }
            }
            let kept = count(&s, "x");
            assert!(
                (EVENTS_KEPT as usize..EVENTS_KEPT as usize + PRUNE_EVERY as usize).contains(&kept),
                "{e}: {kept} events kept"
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
            assert_eq!(newest[0].message, format!("e{}", n - 1), "{e}");
            let oldest = s.events("x", 0, 1).unwrap();
            let first: usize = oldest[0].message[1..].parse().unwrap();
            assert_eq!(first, n - kept, "{e}: the oldest were pruned, no more");
            assert_eq!(
                count(&s, "y"),
                n.div_ceil(100),
                "{e}: another sandbox keeps its own"
            );
        }
    }
}
