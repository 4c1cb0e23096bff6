//! Wake on use: an exec, file operation, PTY, E2B envd call, proxied
//! request or SSH login that reaches a paused or hibernated sandbox
//! resumes it first when it wakes on use (its `auto_resume` policy, else
//! whether a policy rather than a user put it to sleep:
//! [`crate::policy::wakes_on_use`]), then is served.
//!
//! A wake takes the path of an explicit `resume`: the desired state
//! becomes `running` under the sandbox's lock and the reconciler thaws
//! or restores it. Requests that arrive together share one wake: the
//! first sets the desired state and records `woken by <op>`; the others
//! find it set and wait on the same reconciliation. A woken sandbox counts
//! as active, so the idle timeout does not pause it again at once, and a
//! TTL that paused it is held off as E2B does after an auto-resume (both
//! written before the reconciler runs it, so no sweep in between can put
//! it back to sleep).

use super::Controller;
use crate::error::{Error, Result};
use crate::model::{Sandbox, State};
use crate::policy::{self, Action};
use crate::reconcile;

/// The least time a sandbox a TTL paused runs after waking before the TTL
/// may pause it again (E2B's rule: five minutes, or the TTL itself when
/// longer).
const TTL_HOLD_AFTER_WAKE_MS: u64 = 5 * 60 * 1000;

impl Controller {
    /// Resume the sleeping sandbox `sb` for the operation `op`, or say why
    /// it does not wake on use. Returns the sandbox as it is afterwards.
    pub(super) async fn wake(&self, tenant: &str, sb: &Sandbox, op: &str) -> Result<Sandbox> {
        if sb.wakes_on_use != Some(true) {
            return Err(asleep(sb, op));
        }
        let lock = self.inner.lock_for(&sb.id);
        // Its vCPUs and memory count again once a hibernated sandbox runs
        // (a paused one holds them all along): checked as `resume` does,
        // under the quota lock, and decided from the record read under the
        // sandbox's lock (a policy may hibernate it at any moment before).
        // The quota lock comes first, as in `resume`: when the locked record
        // turns out hibernated without it, let go, take both in that order
        // and read again.
        let mut quota = None;
        let woke_from = loop {
            let _g = lock.lock().await;
            // Re-read under the lock: another request may have woken it,
            // or a user changed its state or policy.
            let rec = self.record(tenant, &sb.id)?;
            match rec.state {
                State::Paused | State::Hibernated
                    if !policy::wakes_on_use(&rec.spec.policies, &rec.reason) =>
                {
                    return Err(asleep(&self.view(&rec)?, op));
                }
                // The first request to get here wakes it.
                s @ (State::Paused | State::Hibernated) if rec.desired_state == s => {
                    if s == State::Hibernated {
                        if quota.is_none() {
                            drop(_g);
                            quota = Some(self.quota_guard(tenant).await?);
                            continue;
                        }
                        self.check_compute_quota(tenant, &self.view(&rec)?).await?;
                    }
                    // Held before it runs, so no sweep between the wake
                    // and this request pauses it again.
                    self.hold_after_wake(&self.view(&rec)?)?;
                    self.inner.store.set_desired(&rec.id, State::Running)?;
                    self.inner
                        .store
                        .add_event(&rec.id, "request", &format!("woken by {op}"))?;
                    break Some(s);
                }
                // Being woken by another request (its reconciliation is
                // waited for below), or going elsewhere: agent() judges
                // the state it ends in.
                _ => break None,
            }
        };
        reconcile::reconcile(&self.inner, &sb.id).await;
        let after = self.get_by_id(&sb.id)?;
        if let Some(from) = woke_from {
            let mut w = self.inner.wakes.lock().unwrap_or_else(|p| p.into_inner());
            *w.entry((after.tenant.clone(), from.as_str())).or_default() += 1;
        }
        if after.state == State::Error {
            return Err(Error::Conflict(format!(
                "waking sandbox {} for {op} failed: {}",
                sb.name, after.reason
            )));
        }
        Ok(after)
    }

    /// A wake counts as activity (the idle timeout also counts from the
    /// return to running, see [`crate::policy::schedule`]), and a pausing
    /// TTL that has already fired is held off for max(5 min, the TTL), as
    /// E2B does after an auto-resume.
    fn hold_after_wake(&self, sb: &Sandbox) -> Result<()> {
        let now = self.inner.clock.now_ms();
        let p = &sb.spec.policies;
        let ttl_fired = p.ttl_action == Some(Action::Pause)
            && p.ttl_ms
                .is_some_and(|ttl| sb.created_at + ttl as i64 <= now);
        if ttl_fired {
            let hold = TTL_HOLD_AFTER_WAKE_MS.max(p.ttl_ms.unwrap_or(0)) as i64;
            let until = (now + hold).max(sb.hold_until.unwrap_or(i64::MIN));
            self.inner.store.keepalive(&sb.id, now, until)?;
        } else {
            // Not through the once-a-second filter of `touch`: the
            // activity before the sleep may be what it last wrote.
            self.inner.store.touch(&sb.id, now)?;
        }
        Ok(())
    }

    /// Sandboxes woken on use since the daemon started, by tenant and the
    /// state they were woken from (`paused`, `hibernated`).
    pub fn wake_counts(&self) -> Vec<(String, &'static str, u64)> {
        let w = self.inner.wakes.lock().unwrap_or_else(|p| p.into_inner());
        w.iter().map(|((t, s), n)| (t.clone(), *s, *n)).collect()
    }
}

/// The refusal of an operation on a sandbox that sleeps and does not wake
/// on use. Clients word the commands (resume it, or turn auto-resume on)
/// from the code and facts.
fn asleep(sb: &Sandbox, op: &str) -> Error {
    let why = match sb.spec.policies.auto_resume {
        Some(false) => "its auto_resume policy is off",
        _ => "a user paused it, and auto_resume is not set",
    };
    Error::Asleep {
        sandbox: sb.name.clone(),
        state: sb.state,
        action: op.to_string(),
        message: format!(
            "sandbox {} is {} and does not wake on use ({why}); resume it first, or turn its auto_resume policy on",
            sb.name,
            sb.state.as_str()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::model::{Record, State};
    use crate::reconcile::tests::{controller, creating, Idle};
    use crate::Error;

    /// A record of tenant `t` with 2 vCPUs, waking on use, in `state`.
    fn record(ctl: &crate::Controller, id: &str, state: State) -> Record {
        let mut r = creating(ctl, id);
        r.name = id.into();
        r.spec.vcpus = 2.0;
        r.spec.policies.auto_resume = Some(true);
        r.state = state;
        r.desired_state = state;
        r.reason = "idle timeout".into();
        r
    }

    /// A policy hibernates the sandbox after a request read it paused and
    /// before the wake took its lock: the wake decides from the locked
    /// record, so the hibernated sandbox's compute is checked against the
    /// quota (here it is over: it is not woken).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sandbox_hibernated_after_it_was_read_paused_is_quota_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = controller(dir.path(), Arc::new(Idle::default()));
        ctl.create_tenant(&dwell_store::Tenant {
            name: "t".into(),
            max_vcpus: Some(3.0),
            ..Default::default()
        })
        .unwrap();
        // What the request read: paused (its 2 vCPUs held all along).
        let stale = ctl.view(&record(&ctl, "sleeper", State::Paused)).unwrap();
        // What it is by the time the wake locks it: hibernated by a
        // policy, and another sandbox took the vCPUs it gave back.
        let now = record(&ctl, "sleeper", State::Hibernated);
        ctl.inner.store.insert_sandbox(&now).unwrap();
        ctl.inner
            .store
            .insert_sandbox(&record(&ctl, "other", State::Running))
            .unwrap();

        let e = ctl.wake("t", &stale, "exec").await.unwrap_err();
        assert!(matches!(e, Error::Quota(_)), "{e}");
        let after: Record = ctl.inner.store.get_sandbox("sleeper").unwrap().unwrap();
        assert_eq!(after.desired_state, State::Hibernated, "it was not woken");
    }
}
