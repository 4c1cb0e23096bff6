//! Doze: freeze running sandboxes that have nothing to do, on runtimes
//! whose idle sandboxes cost CPU ([`Capabilities::doze`]: gVisor, whose
//! sentry polls every 400 µs forever; see `dwell_runtime::gvisor::doze`).
//!
//! A sandbox dozes when its agent has been unused for `--doze-after` (no
//! call started, open or ended on any of its connections) and then reports
//! that it is the only process in the sandbox, so nothing of the user's
//! (a sleeping background job, a server waiting for connections) is held
//! up. The report comes from inside the sandbox: a sandbox that lies about
//! it only freezes itself. A dozing sandbox stays `running` to every
//! client. Every connection to its agent shares the sandbox's
//! [`SleepGate`], which is marked asleep before the freeze; the next call
//! on any of them, whatever it is (exec, files, PTY, E2B envd, port proxy,
//! SSH, service status), first runs the wake hook installed here, which
//! thaws the sandbox. A new connection thaws it in the runtime; runtime
//! operations (stop, pause, resume, hibernate) thaw it themselves.
//!
//! Ordering: the timer freezes a sandbox only holding the sandbox's
//! transition lock (taken with `try_lock`: a sandbox in a transition or a
//! live snapshot is skipped) and its doze lock, which connecting and the
//! wake hook take too, so no freeze lands inside a transition, a
//! handshake or a wake.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dwell_proto::{AgentClient, SleepGate, WakeHook};
use dwell_runtime::Runtime;
use futures_util::StreamExt;

use crate::context::{blocking, Context};
use crate::doze_book::{lock, Quiet};
use crate::model::{Record, State};
use crate::reconcile::config::config_of;

/// How long the agent may take to answer the health call that decides.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Every this many ticks, dozing sandboxes are checked to be still frozen
/// (a runtime operation such as pause + resume may have thawed them).
const RECHECK_EVERY: u32 = 4;
/// Every this many ticks, running sandboxes with no agent connection
/// (adopted after a restart) are connected so that they can doze, and
/// what is known of gone sandboxes is dropped.
const SWEEP_EVERY: u32 = 30;
/// Sandboxes handled at once by a pass.
const PARALLEL: usize = 8;

/// Whether sandboxes of `runtime` doze when idle on this daemon.
pub(crate) fn dozes(ctx: &Context, runtime: &dyn Runtime) -> bool {
    doze_after(ctx).is_some() && runtime.capabilities().doze
}

fn doze_after(ctx: &Context) -> Option<Duration> {
    *lock(&ctx.doze_after)
}

/// Before connecting to sandbox `id`'s agent (the runtime's connect thaws
/// a dozing sandbox): its sleep gate, and its doze lock, held until the
/// handshake is done so that no freeze lands inside it.
pub(crate) async fn before_connect(
    ctx: &Context,
    id: &str,
) -> (Arc<SleepGate>, tokio::sync::OwnedMutexGuard<()>) {
    let (gate, doze_lock) = ctx.dozing.entry(id, || wake_hook(ctx, id));
    (gate, doze_lock.lock_owned().await)
}

/// A new connection to sandbox `id`'s agent: its calls pass the sandbox's
/// gate, which is awake (the runtime thawed the sandbox to connect; a
/// paused one stays frozen, and its agent answers nothing until resumed,
/// as without dozing).
pub(crate) fn connected(ctx: &Context, id: &str, gate: Arc<SleepGate>, client: &AgentClient) {
    client.use_sleep_gate(gate.clone());
    gate.woke();
    ctx.dozing.set_quiet(id, None);
}

/// The hook that wakes sandbox `id` when a call finds its gate asleep:
/// thaw under the doze lock.
fn wake_hook(ctx: &Context, id: &str) -> WakeHook {
    let weak = ctx.me.clone();
    let id = id.to_string();
    Arc::new(move || {
        let weak = weak.clone();
        let id = id.clone();
        Box::pin(async move {
            let ctx = weak
                .upgrade()
                .ok_or_else(|| "the daemon is shutting down".to_string())?;
            wake(&ctx, &id).await
        })
    })
}

/// Thaw sandbox `id` if it dozes.
async fn wake(ctx: &Arc<Context>, id: &str) -> Result<(), String> {
    let (gate, doze_lock) = ctx.dozing.entry(id, || wake_hook(ctx, id));
    let _held = doze_lock.lock().await;
    if !gate.is_asleep() {
        // Another call woke it while this one waited.
        return Ok(());
    }
    let cfg = config_of(ctx, id).map_err(|e| e.to_string())?;
    let runtime = ctx.runtime_of(id).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    blocking(move || runtime.wake(&cfg))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    gate.woke();
    ctx.dozing
        .wakes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ctx.dozing.set_quiet(id, None);
    tracing::debug!(sandbox = id, "woke from doze in {:?}", t0.elapsed());
    Ok(())
}

/// The doze timer: every tick, each sandbox that may doze and has been
/// unused long enough is asked whether only its agent runs, and frozen if
/// so.
pub(crate) async fn timer(ctx: Arc<Context>) {
    let Some(after) = doze_after(&ctx) else {
        return;
    };
    let tick = (after / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut n: u32 = 0;
    loop {
        tokio::time::sleep(tick).await;
        n = n.wrapping_add(1);
        let pass = ctx.clone();
        let sweep = n % SWEEP_EVERY == 1;
        let recheck = n.is_multiple_of(RECHECK_EVERY);
        let r = tokio::spawn(async move {
            if sweep {
                sweep_all(&pass).await;
            } else if recheck {
                recheck_asleep(&pass).await;
            }
            pass_once(&pass, after).await;
        })
        .await;
        if let Err(e) = r {
            tracing::error!("a doze pass failed: {e}; the next one runs as usual");
        }
    }
}

/// One pass: the sandboxes unused for long enough try to doze.
async fn pass_once(ctx: &Arc<Context>, after: Duration) {
    let now = Instant::now();
    let mut due = Vec::new();
    {
        let mut entries = lock(&ctx.dozing.entries);
        for (id, e) in entries.iter_mut() {
            if e.gate.is_asleep() || e.gate.busy() {
                continue;
            }
            let activity = e.gate.activity();
            match e.quiet {
                Some(q) if q.activity == activity => {
                    if now.duration_since(q.since) >= q.wait {
                        due.push(id.clone());
                    }
                }
                _ => {
                    e.quiet = Some(Quiet {
                        activity,
                        since: now,
                        wait: after,
                    })
                }
            }
        }
    }
    futures_util::stream::iter(due)
        .for_each_concurrent(PARALLEL, |id| async move {
            let (gate, _) = ctx.dozing.entry(&id, || wake_hook(ctx, &id));
            let activity = gate.activity();
            if let Err(why) = try_doze(ctx, &id).await {
                tracing::debug!(sandbox = %id, "not dozing: {why}");
                ctx.dozing
                    .back_off(&id, gate.activity().max(activity), after);
            }
        })
        .await;
}

/// Freeze sandbox `id` if it is running, in no transition, unused, and
/// only its agent runs. Err says why not (for the debug log).
async fn try_doze(ctx: &Arc<Context>, id: &str) -> Result<(), String> {
    // No freeze inside a transition or a live snapshot: they hold it.
    let Ok(_transition) = ctx.lock_for(id).try_lock_owned() else {
        return Err("a transition is running".into());
    };
    let rec: Record = ctx
        .store
        .get_sandbox(id)
        .map_err(|e| e.to_string())?
        .ok_or("no record")?;
    if rec.state != State::Running || rec.desired_state != State::Running {
        return Err(format!("it is {}", rec.state.as_str()));
    }
    let runtime = ctx
        .runtimes
        .get(rec.runtime.as_str())
        .map_err(|e| e.to_string())?;
    if !dozes(ctx, &*runtime) {
        return Err(format!("the {} runtime does not doze", runtime.name()));
    }
    let Some(client) = ctx.agents.lock().await.get(id).cloned() else {
        return Err("no agent connection".into());
    };
    let (gate, doze_lock) = ctx.dozing.entry(id, || wake_hook(ctx, id));
    let _held = doze_lock.lock().await;
    if gate.is_asleep() || gate.busy() {
        return Err("a call is open".into());
    }
    let health = client
        .with_call_timeout(HEALTH_TIMEOUT)
        .health()
        .await
        .map_err(|e| format!("its agent did not answer: {e}"))?;
    // The health call itself is activity: quiet from after it.
    let activity = gate.activity();
    if health.pid_count > 1 || health.processes_running > 0 {
        return Err(format!("{} processes run in it", health.pid_count));
    }
    if !gate.fall_asleep(activity) {
        return Err("a call started meanwhile".into());
    }
    let cfg = match config_of(ctx, id) {
        Ok(c) => c,
        Err(e) => {
            gate.woke();
            return Err(e.to_string());
        }
    };
    match blocking(move || runtime.doze(&cfg)).await {
        Ok(Ok(())) => {
            tracing::debug!(
                sandbox = id,
                "dozing: only its agent runs and nobody used it"
            );
            Ok(())
        }
        Ok(Err(e)) => {
            gate.woke();
            Err(format!("the freeze failed: {e}"))
        }
        Err(e) => {
            gate.woke();
            Err(e.to_string())
        }
    }
}

/// Wake the gates of dozing sandboxes that are not frozen any more (see
/// [`RECHECK_EVERY`]).
async fn recheck_asleep(ctx: &Arc<Context>) {
    let asleep: Vec<String> = lock(&ctx.dozing.entries)
        .iter()
        .filter(|(_, e)| e.gate.is_asleep())
        .map(|(id, _)| id.clone())
        .collect();
    futures_util::stream::iter(asleep)
        .for_each_concurrent(PARALLEL, |id| async move {
            if let Ok(runtime) = ctx.runtime_of(&id) {
                sweep_one(ctx, &id, runtime, true).await;
            }
        })
        .await;
}

/// The periodic sweep (see [`SWEEP_EVERY`]).
async fn sweep_all(ctx: &Arc<Context>) {
    let recs = match ctx.own_sandboxes() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("doze: cannot list sandboxes: {e}");
            return;
        }
    };
    let running: Vec<(String, Arc<dyn Runtime>)> = recs
        .into_iter()
        .filter(|r| r.state == State::Running && r.desired_state == State::Running)
        .filter_map(|r| {
            let rt = ctx.runtimes.get(r.runtime.as_str()).ok()?;
            dozes(ctx, &*rt).then_some((r.id, rt))
        })
        .collect();
    // Forget sandboxes that are gone and that no connection uses.
    lock(&ctx.dozing.entries)
        .retain(|id, e| running.iter().any(|(r, _)| r == id) || Arc::strong_count(&e.gate) > 1);
    let connected: std::collections::HashSet<String> =
        ctx.agents.lock().await.keys().cloned().collect();
    futures_util::stream::iter(running)
        .for_each_concurrent(PARALLEL, |(id, runtime)| {
            let connected = &connected;
            async move { sweep_one(ctx, &id, runtime, connected.contains(&id)).await }
        })
        .await;
}

/// One sandbox of the sweep: a gate marked asleep over a sandbox a runtime
/// operation thawed wakes (it may doze again); an unconnected sandbox that
/// is not frozen is connected (a frozen one stays so until used).
async fn sweep_one(ctx: &Arc<Context>, id: &str, runtime: Arc<dyn Runtime>, connected: bool) {
    let Ok(cfg) = config_of(ctx, id) else {
        return;
    };
    let frozen = {
        let rt = runtime.clone();
        let cfg = cfg.clone();
        blocking(move || rt.dozing(&cfg)).await.unwrap_or(false)
    };
    let (gate, doze_lock) = ctx.dozing.entry(id, || wake_hook(ctx, id));
    if gate.is_asleep() && !frozen {
        let _held = doze_lock.lock().await;
        if gate.is_asleep() && !blocking(move || runtime.dozing(&cfg)).await.unwrap_or(true) {
            gate.woke();
            ctx.dozing.set_quiet(id, None);
        }
        return;
    }
    if !connected && !frozen {
        let connect = crate::connections::client(ctx, id);
        match tokio::time::timeout(dwell_proto::client::CONNECT_TIMEOUT, connect).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(sandbox = %id, "doze: cannot connect: {e}"),
            Err(_) => tracing::debug!(sandbox = %id, "doze: connecting timed out"),
        }
    }
}
