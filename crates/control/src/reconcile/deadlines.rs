//! The deadline timer: lifecycle policies fire at their time, not at the
//! next periodic sweep. One task keeps the next deadline of every live
//! sandbox in memory (see [`crate::policy::schedule`]), sleeps until the
//! nearest, re-reads that sandbox's record and fires what is due then.
//! Whatever may move a sandbox's deadline (a policy or keepalive change, a
//! transition, its last stream closing) names it through
//! [`Context::deadlines`], and the timer re-reads that one record, so a
//! shortened timeout is honoured at once while a tenant's requests never
//! cost a read of every tenant's sandboxes. A deadline that only moved
//! later (activity) needs no call: the timer re-reads the record at the
//! old time and finds the new one.
//!
//! The whole store is read only at start, every [`FULL_SCAN_EVERY`] as a
//! safety net (a change nobody reported), and when more sandboxes changed
//! at once than are kept by id, never twice within [`MIN_FULL_SCAN_GAP`].
//! The records stay the truth: the timer only decides when to look, and
//! the periodic sweep still fires anything the timer missed (a daemon that
//! was down, a clock that jumped).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::model::{Record, SandboxSpec};

use super::{apply_policy, run, Trigger};

/// The longest the timer sleeps without looking at its deadlines again (a
/// guard against a wall clock that jumps; deadlines are wall-clock
/// instants).
pub(crate) const MAX_SLEEP: Duration = Duration::from_secs(30);

/// How often the timer reads every live sandbox again, whatever it was
/// told.
pub(crate) const FULL_SCAN_EVERY: Duration = Duration::from_secs(30);

/// The least time between two full reads of the store.
pub(crate) const MIN_FULL_SCAN_GAP: Duration = Duration::from_secs(1);

/// How soon a sandbox whose record could not be read is tried again.
const RETRY_MS: i64 = 1000;

/// Sandboxes whose due policy is being fired (one firing each at a time:
/// a transition that holds a sandbox's lock for minutes must not gather
/// a waiting firing per wake of the timer).
type InFlight = Arc<Mutex<HashSet<String>>>;

/// Takes a sandbox out of the [`InFlight`] set when dropped.
struct Done(InFlight, String);

impl Drop for Done {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// The next deadline ahead of each live sandbox that has one, by sandbox
/// and in time order.
#[derive(Default)]
struct Book {
    by_id: HashMap<String, i64>,
    by_at: BTreeSet<(i64, String)>,
}

impl Book {
    /// Sandbox `id`'s next deadline is `at` (none: forget it).
    fn set(&mut self, id: &str, at: Option<i64>) {
        if let Some(old) = self.by_id.remove(id) {
            self.by_at.remove(&(old, id.to_string()));
        }
        if let Some(at) = at {
            self.by_id.insert(id.to_string(), at);
            self.by_at.insert((at, id.to_string()));
        }
    }

    fn clear(&mut self) {
        self.by_id.clear();
        self.by_at.clear();
    }

    /// The nearest deadline.
    fn next(&self) -> Option<i64> {
        self.by_at.first().map(|(at, _)| *at)
    }

    /// Take out the sandboxes whose deadline is at or before `now`.
    fn take_due(&mut self, now: i64) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((at, _)) = self.by_at.first() {
            if *at > now {
                break;
            }
            let (_, id) = self.by_at.pop_first().expect("a first entry");
            self.by_id.remove(&id);
            out.push(id);
        }
        out
    }
}

/// Run the timer for as long as the daemon runs.
pub(crate) async fn timer(inner: Arc<Context>) {
    let inflight = InFlight::default();
    let mut book = Book::default();
    let mut last_full: Option<Instant> = None;
    loop {
        let (all, changed) = inner.deadlines.take();
        let since = last_full.map(|t| t.elapsed());
        let full = match since {
            None => true,
            Some(s) => s >= FULL_SCAN_EVERY || (all && s >= MIN_FULL_SCAN_GAP),
        };
        let mut reread: HashSet<String> = changed.into_iter().collect();
        if full {
            if let Some(recs) = list_all(&inner).await {
                book.clear();
                let now = inner.clock.now_ms();
                for rec in &recs {
                    consider(&inner, &inflight, &mut book, rec, now);
                }
                // Read just now: only what changed since needs a look.
                reread.clear();
            }
            inner.deadlines.count_full_scan();
            last_full = Some(Instant::now());
        } else if all {
            // Too soon after the last one: later, and the sandboxes named
            // meanwhile are re-read now (they are kept by id no more).
            inner.deadlines.rescan_later();
        }
        // Whose deadline has come, and whose may have moved: their records
        // as they are now.
        reread.extend(book.take_due(inner.clock.now_ms()));
        if !reread.is_empty() {
            let ids: Vec<String> = reread.into_iter().collect();
            let read = {
                let inner = inner.clone();
                crate::context::blocking(move || {
                    ids.into_iter()
                        .map(|id| {
                            let r = inner.store.get_sandbox::<SandboxSpec>(&id);
                            (id, r)
                        })
                        .collect::<Vec<_>>()
                })
                .await
            };
            let now = inner.clock.now_ms();
            match read {
                Ok(read) => {
                    for (id, r) in read {
                        match r {
                            Ok(Some(rec)) => consider(&inner, &inflight, &mut book, &rec, now),
                            Ok(None) => book.set(&id, None),
                            Err(e) => {
                                tracing::warn!(sandbox = %id, "deadline timer: cannot read: {e}");
                                book.set(&id, Some(now + RETRY_MS));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("deadline timer: cannot read sandboxes: {e}");
                    inner.deadlines.rescan_later();
                }
            }
        }
        let now = inner.clock.now_ms();
        let mut wait = match book.next() {
            // A few ms past the instant, so that it is due when we look.
            Some(at) => Duration::from_millis((at.saturating_sub(now)).max(0) as u64 + 5),
            None => MAX_SLEEP,
        };
        let since = last_full.map_or(Duration::ZERO, |t| t.elapsed());
        wait = wait
            .min(MAX_SLEEP)
            .min(FULL_SCAN_EVERY.saturating_sub(since));
        if all && !full {
            // The full rescan put off above, once the gap is over.
            wait = wait.min(MIN_FULL_SCAN_GAP.saturating_sub(since));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = inner.deadlines.notified() => {}
        }
    }
}

/// Every live sandbox's record (none when the store cannot be read; the
/// next look tries again).
async fn list_all(inner: &Arc<Context>) -> Option<Vec<Record>> {
    let inner = inner.clone();
    match crate::context::blocking(move || inner.own_sandboxes()).await {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => {
            tracing::warn!("deadline timer: cannot list sandboxes: {e}");
            None
        }
        Err(e) => {
            tracing::warn!("deadline timer: cannot list sandboxes: {e}");
            None
        }
    }
}

/// Fire `rec`'s due policy, if any, in a task of its own (a slow delete
/// must not hold up another sandbox's deadline), and book its nearest
/// deadline still ahead.
fn consider(inner: &Arc<Context>, inflight: &InFlight, book: &mut Book, rec: &Record, now: i64) {
    let sched = crate::policy::schedule(rec, &rec.spec.policies, inner.streams_open(&rec.id));
    let first = sched.iter().any(|s| s.at <= now)
        && inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rec.id.clone());
    if first {
        let (inner, inflight, id) = (inner.clone(), inflight.clone(), rec.id.clone());
        tokio::spawn(async move {
            // Out of the set however the firing ends (a panic too).
            let _done = Done(inflight, id.clone());
            if fire(&inner, &id).await == Fired::NotDue {
                // It moved (activity since the timer read it): the timer
                // books its new deadline.
                inner.deadlines.changed(&id);
            }
        });
    }
    let ahead = sched.iter().map(|s| s.at).filter(|at| *at > now).min();
    book.set(&rec.id, ahead);
}

/// What [`fire`] found.
#[derive(Debug, PartialEq, Eq)]
enum Fired {
    /// A policy fired (the transition ran), or one had fired already, or
    /// the sandbox is gone.
    Done,
    /// Nothing was due any more.
    NotDue,
}

/// Fire sandbox `id`'s due policy, judged on its record as it is under
/// its lock (as the sweep does).
async fn fire(inner: &Arc<Context>, id: &str) -> Fired {
    let why = {
        let lock = inner.lock_for(id);
        let _g = lock.lock().await;
        let Ok(Some(rec)) = inner.store.get_sandbox::<SandboxSpec>(id) else {
            return Fired::Done;
        };
        let now = inner.clock.now_ms();
        if crate::policy::due(&rec, &rec.spec.policies, inner.streams_open(id), now).is_none() {
            return Fired::NotDue;
        }
        apply_policy(inner, &rec)
    };
    if let Some(why) = why {
        run(inner, id, Trigger::Policy(why)).await;
    }
    Fired::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_keeps_one_deadline_per_sandbox_in_time_order() {
        let mut b = Book::default();
        b.set("a", Some(30));
        b.set("b", Some(10));
        b.set("c", Some(20));
        b.set("b", Some(40));
        assert_eq!(b.next(), Some(20));
        assert_eq!(b.take_due(30), ["c", "a"]);
        assert_eq!(b.next(), Some(40));
        b.set("b", None);
        assert_eq!(b.next(), None);
        assert!(b.by_id.is_empty() && b.by_at.is_empty());
    }
}
