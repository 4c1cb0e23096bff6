//! The reconciler: drives a sandbox from its observed state to its desired
//! state, one transition at a time, recording each step before taking it.
//!
//! One file per transition: [`start`], [`stop`], [`pause`], [`resume`],
//! [`hibernate`] (and its restore), [`archive`], [`delete`]. [`reconcile`] decides which to
//! run; [`resync_all`] runs it for every live sandbox (at daemon start and periodically), which is how a
//! restarted daemon adopts running sandboxes and finishes half-done work.
//! [`deadlines`] fires lifecycle policies at their time in between.

mod archive;
pub(crate) mod config;
pub(crate) mod deadlines;
mod delete;
pub(crate) mod fill;
pub(crate) mod hibernate;
mod journal;
mod pause;
mod resume;
mod start;
mod stop;
#[cfg(test)]
pub(crate) mod tests;

use dwell_runtime::Observed;

use crate::context::{blocking, Context};
use crate::error::Result;
use crate::model::{Mode, Record, SandboxSpec, State};
use crate::transitions::{plan, settled, Cause, Rules, Step};

use config::config_of;
use journal::record;

/// Who asked for this reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// A user request just wrote the desired state: act on it, even from
    /// `error`.
    Request,
    /// The periodic sweep: repair drift, never retry a failed sandbox.
    Resync,
    /// A lifecycle policy fired (the reason says which).
    Policy(String),
}

impl Trigger {
    /// The reconciler's table tells a sweep from a request (or policy).
    fn cause(&self) -> Cause {
        match self {
            Trigger::Resync => Cause::Sweep,
            Trigger::Request | Trigger::Policy(_) => Cause::Asked,
        }
    }

    /// The reason recorded with the transition.
    fn why(&self, on_request: &str) -> String {
        match self {
            Trigger::Policy(why) => why.clone(),
            _ => on_request.to_string(),
        }
    }
}

/// Reconcile one sandbox after a request.
pub(crate) async fn reconcile(inner: &std::sync::Arc<Context>, id: &str) {
    run(inner, id, Trigger::Request).await
}

/// Reconcile every live sandbox.
pub(crate) async fn resync_all(inner: &std::sync::Arc<Context>) {
    // In a cluster: sandboxes handed to this node first.
    crate::cluster::handoff::take_all(inner).await;
    let recs = match inner.own_sandboxes() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("resync: cannot list sandboxes: {e}");
            return;
        }
    };
    for listed in recs {
        // Judged on the record as it is now, under the sandbox's lock: a
        // pass may reach a sandbox long after it listed it (the first pass
        // after a restart runs beside requests), and a policy firing on an
        // old record could stop or delete a sandbox a user just started.
        let trigger = {
            let lock = inner.lock_for(&listed.id);
            let _g = lock.lock().await;
            let Ok(Some(rec)) = inner.store.get_sandbox(&listed.id) else {
                continue;
            };
            meter(inner, &rec).await;
            match apply_policy(inner, &rec) {
                Some(why) => Trigger::Policy(why),
                None => Trigger::Resync,
            }
        };
        // (The agents' service events are swept in a task of their own:
        // see `crate::service::sweep_all`.)
        run(inner, &listed.id, trigger).await;
    }
    crate::orphans::sweep(inner).await;
    {
        // Which running sandboxes hold each named volume, from the records
        // as they are now; volumes none holds are unmounted.
        let inner = inner.clone();
        let _ = blocking(move || {
            if let Ok(recs) = inner.own_sandboxes() {
                crate::volumes::resync(&inner, &recs);
            }
            crate::volumes::meter(&inner);
        })
        .await;
    }
    crate::egress::sync_all(inner).await;
    crate::snapshot_gc::maybe_spawn(inner);
    let before = inner.clock.now_ms() - inner.audit_retention.as_millis() as i64;
    match inner.store.prune_audit(before) {
        Ok(0) => {}
        Ok(n) => tracing::info!("audit log: pruned {n} entries past retention"),
        Err(e) => tracing::warn!("audit log: {e}"),
    }
}

/// Charge the time since the sandbox's last metering mark.
async fn meter(inner: &std::sync::Arc<Context>, rec: &Record) {
    let now = inner.clock.now_ms();
    let last = match inner.store.metered_at(&rec.id) {
        Ok(Some(t)) => t,
        Ok(None) => rec.created_at,
        Err(_) => return,
    };
    let stats = if rec.state.has_processes() {
        let inner2 = inner.clone();
        let id = rec.id.clone();
        let runtime = inner.runtimes.get(rec.runtime.as_str()).ok();
        blocking(move || {
            config_of(&inner2, &id)
                .ok()
                .and_then(|c| runtime?.stats(&c).ok())
        })
        .await
        .ok()
        .flatten()
    } else {
        None
    };
    let d = crate::metering::delta(rec, &rec.spec, stats.as_ref(), &inner.cpu_marks, last, now);
    if let Err(e) = inner.store.add_usage(&rec.id, &rec.tenant, now, &d) {
        tracing::warn!(sandbox = %rec.id, "metering: {e}");
    }
}

/// If a lifecycle policy of `rec` has fired, write the desired state it
/// asks for, with the reason, and say so.
fn apply_policy(inner: &Context, rec: &Record) -> Option<String> {
    let now = inner.clock.now_ms();
    let due = crate::policy::due(rec, &rec.spec.policies, inner.streams_open(&rec.id), now)?;
    let desired = match due.action {
        crate::policy::Action::Pause => State::Paused,
        // Memory can be saved: hibernate instead of stopping.
        crate::policy::Action::Stop
            if due.policy == "pause_after"
                && crate::runtimes::capabilities(rec.runtime.as_str())
                    .hibernate
                    .is_some() =>
        {
            State::Hibernated
        }
        crate::policy::Action::Stop => State::Stopped,
        crate::policy::Action::Archive => State::Archived,
        crate::policy::Action::Delete => State::Deleted,
    };
    if rec.desired_state == desired {
        return None;
    }
    let mut why = format!(
        "{}{} fired ({} late): {}",
        crate::policy::POLICY_REASON,
        due.policy,
        crate::policy::human((now - due.at).max(0) as u64),
        desired.as_str()
    );
    // Who put it to sleep decides whether it wakes on use: a policy that
    // takes a sandbox a user paused further keeps that on record.
    if rec.state == State::Paused && !crate::policy::by_policy(&rec.reason) {
        why.push_str(crate::policy::AFTER_USER_PAUSE);
    }
    tracing::info!(sandbox = %rec.id, "{why}");
    let ok = inner.store.set_desired(&rec.id, desired).is_ok()
        && inner.store.add_event(&rec.id, "policy", &why).is_ok();
    ok.then_some(why)
}

async fn run(inner: &std::sync::Arc<Context>, id: &str, trigger: Trigger) {
    let lock = inner.lock_for(id);
    let _g = lock.lock().await;
    run_locked(inner, id, trigger).await
}

/// Reconcile one sandbox after a request, for a caller that already holds
/// its lock (a move takes several steps under one lock).
pub(crate) async fn reconcile_locked(inner: &std::sync::Arc<Context>, id: &str) {
    run_locked(inner, id, Trigger::Request).await
}

async fn run_locked(inner: &std::sync::Arc<Context>, id: &str, trigger: Trigger) {
    let rec = match inner.store.get_sandbox::<SandboxSpec>(id) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(sandbox = id, "reconcile: {e}");
            return;
        }
    };
    // In a cluster only the owner ever acts on a sandbox, and one just
    // handed to this node is taken over first.
    if !ready_here(inner, &rec).await {
        return;
    }
    let stepped = step(inner, &rec, &trigger).await;
    // Its deadlines may have moved with its state: the timer looks again.
    inner.deadlines.changed(id);
    if let Err(e) = stepped {
        let msg = e.to_string();
        tracing::warn!(sandbox = id, "reconcile failed: {msg}");
        let _ = inner.store.add_event(id, "error", &msg);
        let _ = inner.store.set_state(id, State::Error, &msg);
        return;
    }
    // Up again (started, resumed, restored, back from an archive): its
    // peers' names may have changed meanwhile (only a change is written).
    let now_running = matches!(
        inner.store.get_sandbox::<SandboxSpec>(id),
        Ok(Some(r)) if r.state == State::Running
    );
    if rec.state != State::Running
        && now_running
        && inner.store.networks_of(id).is_ok_and(|n| !n.is_empty())
    {
        crate::networks::refresh_hosts(inner, id).await;
    }
}

/// In a cluster, whether this node may act on `rec` now: only its owner
/// does (a timer or a request of the node it moved from acts on nothing),
/// and a sandbox just handed to this node is taken over first (its archive
/// pointer written), so nothing starts it on an empty volume.
async fn ready_here(inner: &std::sync::Arc<Context>, rec: &Record) -> bool {
    let Some(me) = inner.cluster.get() else {
        return true;
    };
    if !me.owns(rec.node.as_deref()) {
        tracing::debug!(sandbox = %rec.id, "reconcile: owned by node {:?}, not this one", rec.node);
        return false;
    }
    let i = inner.clone();
    let id = rec.id.clone();
    match blocking(move || -> Result<bool> {
        if i.store.handoff_of(&id)?.is_none() {
            return Ok(true);
        }
        Ok(crate::cluster::handoff::take_over(&i, &id)?.is_some())
    })
    .await
    {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) | Err(e) => {
            tracing::warn!(sandbox = %rec.id, "reconcile: cannot take it over yet: {e}");
            false
        }
    }
}

/// What the runtime sees of a sandbox (nothing if it never started).
async fn observe(inner: &std::sync::Arc<Context>, rec: &Record) -> Result<Observed> {
    let inner2 = inner.clone();
    let id = rec.id.clone();
    let runtime = inner.runtimes.get(rec.runtime.as_str())?;
    blocking(move || match config_of(&inner2, &id) {
        Ok(cfg) => Ok(runtime.observe(&cfg)?),
        Err(_) => Ok(Observed::Stopped),
    })
    .await?
}

async fn step(inner: &std::sync::Arc<Context>, rec: &Record, trigger: &Trigger) -> Result<()> {
    let (state, desired) = (rec.state, rec.desired_state);
    if state == State::Creating && desired != State::Deleted && fill::interrupted(inner, &rec.id) {
        // Nothing half-created stays: the daemon died mid-fill.
        inner.store.set_desired(&rec.id, State::Deleted)?;
        return delete::run(
            inner,
            rec,
            "the daemon stopped while the sandbox was being filled from its snapshot or \
             template: deleted, nothing half-copied is kept; create it again",
        )
        .await;
    }
    let cause = trigger.cause();
    if settled(state, desired, cause) {
        return Ok(());
    }
    let observed = observe(inner, rec).await?;
    match plan(state, desired, observed, rec.mode, cause) {
        Step::Nothing => Ok(()),
        Step::Adopt(State::Running) => {
            // A saved state left by a daemon killed right after a
            // restore is older than what runs now: it must never be
            // restored over the newer volume.
            hibernate::discard(inner, &rec.id)?;
            record(inner, &rec.id, State::Running, "running (adopted)")
        }
        Step::Adopt(s) => record(inner, &rec.id, s, &format!("{} (adopted)", s.as_str())),
        Step::Thaw => resume::run(inner, rec).await,
        Step::BringUp => {
            if archive::warm(inner, &rec.id)? {
                // Before `saved`: while the pointer exists the local copy
                // is not trusted (a crash may have left it half restored).
                archive::resume(inner, rec).await
            } else if hibernate::saved(inner, &rec.id) {
                hibernate::restore(inner, rec).await
            } else {
                start::run(inner, rec).await
            }
        }
        Step::Vanished => vanished(inner, rec).await,
        Step::Freeze => pause::run(inner, rec, &trigger.why("paused on request")).await,
        Step::Hibernate => {
            let why = trigger.why("hibernated on request");
            hibernate::run(inner, rec, observed, &why).await
        }
        Step::AdoptSaved => {
            if hibernate::adopt(inner, rec).await? {
                Ok(())
            } else {
                vanished(inner, rec).await
            }
        }
        Step::Stop {
            release,
            then_delete,
        } => {
            if release {
                stop::run(inner, rec, &trigger.why("stopped on request")).await?;
            }
            if then_delete {
                inner.store.set_desired(&rec.id, State::Deleted)?;
                let why = trigger.why("ephemeral sandbox stopped");
                delete::run(inner, rec, &format!("{why}: deleted with its data")).await?;
            }
            Ok(())
        }
        Step::Archive => archive::run(inner, rec, &trigger.why("archived on request")).await,
        Step::Delete => delete::run(inner, rec, &trigger.why("deleted on request")).await,
    }
}

/// The sandbox's processes are gone though it should run (crash, OOM of
/// PID 1, host reboot). Ephemeral sandboxes are deleted; persistent ones
/// are marked `error` with the reason and keep their volume.
async fn vanished(inner: &std::sync::Arc<Context>, rec: &Record) -> Result<()> {
    stop::release(inner, &rec.id).await?;
    // It ran past any saved state: the next start is cold.
    hibernate::discard(inner, &rec.id)?;
    if rec.mode == Mode::Ephemeral {
        inner.store.set_desired(&rec.id, State::Deleted)?;
        return delete::run(
            inner,
            rec,
            "ephemeral sandbox's processes vanished: deleted with its data",
        )
        .await;
    }
    inner.store.set_desired(&rec.id, State::Stopped)?;
    record(
        inner,
        &rec.id,
        State::Error,
        "its processes ended outside dwell's control (crash, host reboot or PID 1 exit); files are kept: start it again",
    )
}
