//! Doze: freeze running sandboxes that have nothing to do, on runtimes
//! whose idle sandboxes cost CPU ([`Capabilities::doze`]: gVisor, whose
//! sentry polls every 400 µs forever; see `dwell_runtime::gvisor::doze`).
//!
//! A sandbox dozes when, for [`Context::doze_after`] in a row, no call to
//! its agent started or stayed open, and its agent then reports that it is
//! the only process in the sandbox (so nothing of the user's, not even a
//! sleeping background job or a server waiting for connections, is ever
//! held up). It stays `running` to every client: its agent connection is
//! marked asleep ([`AgentClient::fall_asleep`]), and the next call on it,
//! whatever it is (exec, files, PTY, E2B envd, port proxy, SSH, service
//! status), first runs the wake hook installed here, which thaws the
//! sandbox; a new connection thaws it in the runtime. Runtime operations
//! (stop, pause, hibernate) thaw it themselves.
//!
//! Freezing and waking one sandbox take its doze gate, so a wake never
//! runs halfway through a freeze: it waits for the freeze, then thaws.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use dwell_proto::{AgentClient, WakeHook};
use dwell_runtime::Runtime;

use crate::context::{blocking, Context};
use crate::model::{Record, State};
use crate::reconcile::config::config_of;

/// How long the agent may take to answer the health call that decides.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between two asks of a sandbox found running processes
/// of its own (the wait doubles from `--doze-after` each time: asking
/// costs the sandbox CPU too).
const MAX_RECHECK: Duration = Duration::from_secs(60);
/// Every this many ticks, running sandboxes that may doze but have no
/// agent connection (adopted after a daemon restart) are connected, so
/// that they can doze too.
const ADOPT_EVERY: u32 = 30;

/// How long a sandbox's agent connection has gone unused.
#[derive(Debug, Clone, Copy)]
struct Quiet {
    /// Its call count.
    started: u64,
    since: Instant,
    /// Unused this long, it is asked whether it may doze.
    wait: Duration,
}

/// What the doze timer knows per sandbox.
#[derive(Default)]
pub(crate) struct Dozing {
    /// Per sandbox: the agent connection's call count when last seen to
    /// change, since when it has not, and how long it must stay so.
    quiet: Mutex<HashMap<String, Quiet>>,
    /// Per sandbox: held while it is frozen or thawed.
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Sandboxes frozen by the timer and not woken since (for metrics).
    asleep: Mutex<std::collections::HashSet<String>>,
    /// Dozing sandboxes woken by a call since the daemon started.
    wakes: std::sync::atomic::AtomicU64,
}

impl Dozing {
    fn gate(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.gates).entry(id.to_string()).or_default().clone()
    }

    /// How many sandboxes doze right now.
    pub(crate) fn count(&self) -> usize {
        lock(&self.asleep).len()
    }

    /// Dozing sandboxes woken by a call since the daemon started.
    pub(crate) fn wakes(&self) -> u64 {
        self.wakes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A new agent connection to sandbox `id`: connecting thawed it.
    pub(crate) fn connected(&self, id: &str) {
        lock(&self.quiet).remove(id);
        lock(&self.asleep).remove(id);
    }

    /// Forget a sandbox that stopped or went away.
    pub(crate) fn forget(&self, id: &str) {
        lock(&self.quiet).remove(id);
        lock(&self.gates).remove(id);
        lock(&self.asleep).remove(id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether sandboxes of `runtime` doze when idle on this daemon.
pub(crate) fn dozes(ctx: &Context, runtime: &dyn Runtime) -> bool {
    doze_after(ctx).is_some() && runtime.capabilities().doze
}

fn doze_after(ctx: &Context) -> Option<Duration> {
    *lock(&ctx.doze_after)
}

/// The hook that wakes sandbox `id` when a call finds its connection
/// asleep: thaw under the doze gate.
pub(crate) fn wake_hook(ctx: &Context, id: &str) -> WakeHook {
    let weak: Weak<Context> = ctx.me.clone();
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
    let gate = ctx.dozing.gate(id);
    let _held = gate.lock().await;
    let cfg = config_of(ctx, id).map_err(|e| e.to_string())?;
    let runtime = ctx.runtime_of(id).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    blocking(move || runtime.wake(&cfg))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if lock(&ctx.dozing.asleep).remove(id) {
        ctx.dozing
            .wakes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(sandbox = id, "woke from doze in {:?}", t0.elapsed());
    }
    // It counts as quiet from now on again.
    lock(&ctx.dozing.quiet).remove(id);
    Ok(())
}

/// The doze timer: every tick, each sandbox that may doze and has been
/// quiet long enough is asked whether only its agent runs, and frozen if
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
        if n % ADOPT_EVERY == 1 {
            connect_unconnected(&ctx).await;
        }
        let pass = ctx.clone();
        if let Err(e) = tokio::spawn(async move { pass_once(&pass, after).await }).await {
            tracing::error!("a doze pass failed: {e}; the next one runs as usual");
        }
    }
}

/// One pass over the cached agent connections.
async fn pass_once(ctx: &Arc<Context>, after: Duration) {
    let clients: Vec<(String, AgentClient)> = ctx
        .agents
        .lock()
        .await
        .iter()
        .map(|(id, c)| (id.clone(), c.clone()))
        .collect();
    let now = Instant::now();
    let mut due = Vec::new();
    {
        let mut quiet = lock(&ctx.dozing.quiet);
        quiet.retain(|id, _| clients.iter().any(|(c, _)| c == id));
        for (id, client) in &clients {
            if client.is_asleep() || !client.is_connected() {
                continue;
            }
            let started = client.calls_started();
            match quiet.get(id) {
                Some(q) if q.started == started => {
                    if now.duration_since(q.since) >= q.wait {
                        due.push((id.clone(), client.clone()));
                    }
                }
                _ => {
                    quiet.insert(
                        id.clone(),
                        Quiet {
                            started,
                            since: now,
                            wait: after,
                        },
                    );
                }
            }
        }
    }
    for (id, client) in due {
        if let Err(why) = try_doze(ctx, &id, &client).await {
            tracing::debug!(sandbox = %id, "not dozing: {why}");
        }
    }
}

/// Freeze sandbox `id` if it may doze and only its agent runs. Err says
/// why not (for the debug log).
async fn try_doze(ctx: &Arc<Context>, id: &str, client: &AgentClient) -> Result<(), String> {
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
        // Never asked again.
        lock(&ctx.dozing.quiet).insert(
            id.to_string(),
            Quiet {
                started: client.calls_started(),
                since: Instant::now(),
                wait: Duration::MAX,
            },
        );
        return Err(format!("the {} runtime does not doze", runtime.name()));
    }
    let gate = ctx.dozing.gate(id);
    let _held = gate.lock().await;
    let health = client
        .with_call_timeout(HEALTH_TIMEOUT)
        .health()
        .await
        .map_err(|e| format!("its agent did not answer: {e}"))?;
    // The health call itself counts: quiet from after it.
    let started = client.calls_started();
    if health.pid_count > 1 || health.processes_running > 0 {
        // Asked again later, and less often each time it is found busy.
        let floor = doze_after(ctx).unwrap_or(MAX_RECHECK);
        let mut quiet = lock(&ctx.dozing.quiet);
        let wait = quiet
            .get(id)
            .map_or(Duration::ZERO, |q| q.wait)
            .saturating_mul(2)
            .clamp(floor, MAX_RECHECK.max(floor));
        quiet.insert(
            id.to_string(),
            Quiet {
                started,
                since: Instant::now(),
                wait,
            },
        );
        return Err(format!("{} processes run in it", health.pid_count));
    }
    if !client.fall_asleep(started) {
        return Err("a call started meanwhile".into());
    }
    let cfg = match config_of(ctx, id) {
        Ok(c) => c,
        Err(e) => {
            client.woke();
            return Err(e.to_string());
        }
    };
    match blocking(move || runtime.doze(&cfg)).await {
        Ok(Ok(())) => {
            lock(&ctx.dozing.asleep).insert(id.to_string());
            tracing::debug!(
                sandbox = id,
                "dozing: only its agent runs and nobody used it"
            );
            Ok(())
        }
        Ok(Err(e)) => {
            client.woke();
            Err(format!("the freeze failed: {e}"))
        }
        Err(e) => {
            client.woke();
            Err(e.to_string())
        }
    }
}

/// Connect to running sandboxes that may doze but have no cached agent
/// connection (adopted after a restart): only a connection can doze.
async fn connect_unconnected(ctx: &Arc<Context>) {
    let ids: Vec<String> = {
        let recs = match ctx.store.list_sandboxes::<crate::model::SandboxSpec>(None) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("doze: cannot list sandboxes: {e}");
                return;
            }
        };
        recs.into_iter()
            .filter(|r| r.state == State::Running && r.desired_state == State::Running)
            .filter(|r| {
                ctx.runtimes
                    .get(r.runtime.as_str())
                    .is_ok_and(|rt| dozes(ctx, &*rt))
            })
            .map(|r| r.id)
            .collect()
    };
    for id in ids {
        if ctx.agents.lock().await.contains_key(&id) {
            continue;
        }
        if let Err(e) = crate::connections::client(ctx, &id).await {
            tracing::debug!(sandbox = %id, "doze: cannot connect to the agent: {e}");
        }
    }
}
