//! The deadline timer: lifecycle policies fire at their time, not at the
//! next periodic sweep. One task sleeps until the nearest deadline of any
//! live sandbox (see [`crate::policy::schedule`]), fires what is due then,
//! and sleeps again. Whatever may move a deadline (a policy or keepalive
//! change, a transition, a stream closing) wakes it through
//! [`Context::deadlines`], so a shortened timeout is honoured at once. The
//! records stay the truth: the timer only decides when to look, and the
//! periodic sweep still fires anything the timer missed (a daemon that was
//! down, a clock that jumped).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::context::Context;
use crate::model::{Record, SandboxSpec};

use super::{apply_policy, run, Trigger};

/// The longest the timer sleeps without looking (a guard against a
/// wall clock that jumps; deadlines are wall-clock instants).
pub(crate) const MAX_SLEEP: Duration = Duration::from_secs(30);

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

/// Run the timer for as long as the daemon runs.
pub(crate) async fn timer(inner: Arc<Context>) {
    let inflight = InFlight::default();
    loop {
        let next = fire_due(&inner, &inflight).await;
        let now = inner.clock.now_ms();
        let wait = match next {
            // A few ms past the instant, so that it is due when we look.
            Some(at) => Duration::from_millis((at - now).max(0) as u64 + 5).min(MAX_SLEEP),
            None => MAX_SLEEP,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = inner.deadlines.notified() => {}
        }
    }
}

/// Fire every policy that is due now, each in a task of its own (a slow
/// delete must not hold up another sandbox's deadline), and return the
/// nearest deadline still ahead.
async fn fire_due(inner: &Arc<Context>, inflight: &InFlight) -> Option<i64> {
    let recs = {
        let inner = inner.clone();
        match crate::context::blocking(move || inner.store.list_sandboxes::<SandboxSpec>(None))
            .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!("deadline timer: cannot list sandboxes: {e}");
                return None;
            }
            Err(e) => {
                tracing::warn!("deadline timer: cannot list sandboxes: {e}");
                return None;
            }
        }
    };
    let now = inner.clock.now_ms();
    let mut next: Option<i64> = None;
    for rec in recs {
        let sched = crate::policy::schedule(&rec, &rec.spec.policies, inner.streams_open(&rec.id));
        let first = sched.iter().any(|s| s.at <= now)
            && inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(rec.id.clone());
        if first {
            let (inner, inflight) = (inner.clone(), inflight.clone());
            tokio::spawn(async move {
                // Out of the set however the firing ends (a panic too).
                let _done = Done(inflight, rec.id.clone());
                fire(&inner, &rec).await;
            });
        }
        if let Some(at) = sched.iter().map(|s| s.at).filter(|at| *at > now).min() {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    next
}

/// Fire `listed`'s due policy, judged on its record as it is under its
/// lock (as the sweep does).
async fn fire(inner: &Arc<Context>, listed: &Record) {
    let why = {
        let lock = inner.lock_for(&listed.id);
        let _g = lock.lock().await;
        let Ok(Some(rec)) = inner.store.get_sandbox(&listed.id) else {
            return;
        };
        apply_policy(inner, &rec)
    };
    if let Some(why) = why {
        run(inner, &listed.id, Trigger::Policy(why)).await;
    }
}
