//! The sandbox's service: one long-running command (an image's entrypoint
//! + cmd) the agent starts, supervises and restarts by its policy.
//!
//! * A supervisor task per start: it runs the process (through
//!   [`crate::process::start`], so it is an ordinary agent process with the
//!   tag `service`), copies its output into the service log, and on exit
//!   applies the restart policy with exponential backoff (100 ms doubling
//!   to 30 s; back to 100 ms after a run of 10 s or more).
//! * The service log: the newest [`LOG_CAP`] bytes of output with their
//!   times, over every restart; followers get live output.
//! * The health check: run on its interval while the process runs;
//!   `starting` until the first verdict, `unhealthy` after `retries`
//!   consecutive failures (failures in the start period do not count).
//! * Stop: the stop signal to the process group, SIGKILL after the stop
//!   timeout.
//!
//! The state is the agent's memory: it lives through pause/resume and a
//! checkpoint/restore of the sandbox. `set` with the definition already
//! set changes nothing, so a daemon that resends it (after its own
//! restart) never starts a second copy.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dwell_proto::frame::Kind;
use dwell_proto::{
    ErrorKind, ExecRequest, ExitStatus, HealthState, RemoteError, RestartPolicy, ServiceAction,
    ServiceEvent, ServiceSpec, ServiceState, ServiceStatus, HEALTH_INTERVAL_MS, HEALTH_RETRIES,
    HEALTH_TIMEOUT_MS, STOP_TIMEOUT_MS,
};
use tokio::sync::{broadcast, watch, Notify};
use tokio::time::Instant;

use crate::conn::StreamCtx;
use crate::pump;
use crate::registry::{self, Output};

/// Bytes of service output kept.
pub const LOG_CAP: usize = 1 << 20;
/// Events kept in the status.
pub const MAX_EVENTS: usize = 64;
/// First restart delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long resets the delay to [`BACKOFF_MIN`].
pub const STABLE_RUN: Duration = Duration::from_secs(10);
/// Bytes of a health check's output kept in the status.
const HEALTH_OUTPUT: usize = 4096;
/// Live chunks a follower may fall behind by before it misses some.
const FOLLOW_QUEUE: usize = 1024;

/// The process tag of the service (see `processes`).
pub const TAG: &str = "service";

struct Entry {
    at_ms: u64,
    stderr: bool,
    data: Bytes,
}

/// The current definition and its supervisor.
struct Current {
    spec: ServiceSpec,
    status: ServiceStatus,
    /// Which supervisor owns the service; a new start takes a new number.
    generation: u64,
    /// Wakes the owning supervisor to stop.
    stop: Arc<Notify>,
    /// Turns true when the owning supervisor has finished.
    done: watch::Receiver<bool>,
}

struct Global {
    current: Option<Current>,
    generations: u64,
    seq: u64,
    log: VecDeque<Arc<Entry>>,
    log_bytes: usize,
    live: broadcast::Sender<Arc<Entry>>,
}

static G: LazyLock<Mutex<Global>> = LazyLock::new(|| {
    Mutex::new(Global {
        current: None,
        generations: 0,
        seq: 0,
        log: VecDeque::new(),
        log_bytes: 0,
        live: broadcast::channel(FOLLOW_QUEUE).0,
    })
});

/// Set while the agent shuts down: nothing restarts.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

fn with<R>(f: impl FnOnce(&mut Global) -> R) -> R {
    f(&mut G.lock().unwrap_or_else(|p| p.into_inner()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn fresh_status() -> ServiceStatus {
    ServiceStatus {
        state: ServiceState::Stopped,
        pid: None,
        restarts: 0,
        started_at_ms: None,
        last_exit: None,
        last_exit_at_ms: None,
        next_start_at_ms: None,
        error: None,
        health: None,
        health_failures: 0,
        health_output: None,
        events: Vec::new(),
    }
}

impl Global {
    /// The current service if `generation` owns it.
    fn owned(&mut self, generation: u64) -> Option<&mut Current> {
        self.current.as_mut().filter(|c| c.generation == generation)
    }

    fn event(&mut self, kind: &str, message: String) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(c) = self.current.as_mut() {
            c.status.events.push(ServiceEvent {
                seq,
                at_ms: now_ms(),
                kind: kind.into(),
                message,
            });
            let n = c.status.events.len();
            if n > MAX_EVENTS {
                c.status.events.drain(..n - MAX_EVENTS);
            }
        }
    }

    fn push_log(&mut self, stderr: bool, data: Bytes) {
        let data = if data.len() > LOG_CAP {
            data.slice(data.len() - LOG_CAP..)
        } else {
            data
        };
        let e = Arc::new(Entry {
            at_ms: now_ms(),
            stderr,
            data,
        });
        self.log_bytes += e.data.len();
        let _ = self.live.send(e.clone());
        self.log.push_back(e);
        while self.log_bytes > LOG_CAP {
            match self.log.pop_front() {
                Some(old) => self.log_bytes -= old.data.len(),
                None => break,
            }
        }
    }
}

fn status_of(g: &Global) -> Option<ServiceStatus> {
    g.current.as_ref().map(|c| c.status.clone())
}

/// The service's status, `None` without one.
pub fn status() -> Option<ServiceStatus> {
    with(|g| status_of(g))
}

/// Sets, replaces (with a different definition) or removes the service.
pub async fn set(spec: Option<ServiceSpec>) -> Result<Option<ServiceStatus>, RemoteError> {
    if let Some(s) = &spec {
        s.validate()
            .map_err(|m| RemoteError::new(ErrorKind::InvalidArgument, m))?;
        // A user that does not resolve is an error now, not a crash loop.
        if let Some(u) = s.user.clone().or_else(crate::defaults::user) {
            crate::user::resolve(&u).map_err(|e| {
                RemoteError::new(e.kind, format!("the service's user: {}", e.message))
            })?;
        }
        let same = with(|g| g.current.as_ref().is_some_and(|c| &c.spec == s));
        if same {
            return Ok(status());
        }
    }
    stop_current().await;
    match spec {
        None => {
            with(|g| g.current = None);
            Ok(None)
        }
        Some(spec) => {
            with(|g| {
                g.current = Some(Current {
                    spec,
                    status: fresh_status(),
                    generation: 0,
                    stop: Arc::new(Notify::new()),
                    done: watch::channel(true).1,
                })
            });
            launch();
            Ok(status())
        }
    }
}

/// Starts, stops or restarts the service.
pub async fn control(action: ServiceAction) -> Result<ServiceStatus, RemoteError> {
    let none = || {
        RemoteError::new(
            ErrorKind::NotFound,
            "this sandbox has no service (its image has no start command, or it was created \
             with --no-service)",
        )
    };
    if status().is_none() {
        return Err(none());
    }
    match action {
        ServiceAction::Stop => stop_current().await,
        ServiceAction::Restart => {
            stop_current().await;
            launch();
        }
        ServiceAction::Start => {
            let idle = with(|g| {
                g.current.as_ref().is_some_and(|c| {
                    matches!(c.status.state, ServiceState::Stopped | ServiceState::Exited)
                })
            });
            if idle {
                launch();
            }
        }
    }
    status().ok_or_else(none)
}

/// Starts a new supervisor owning the current service.
fn launch() {
    let started = with(|g| {
        g.generations += 1;
        let generation = g.generations;
        let c = g.current.as_mut()?;
        let (done_tx, done_rx) = watch::channel(false);
        c.generation = generation;
        c.stop = Arc::new(Notify::new());
        c.done = done_rx;
        Some((generation, c.spec.clone(), c.stop.clone(), done_tx))
    });
    if let Some((generation, spec, stop, done)) = started {
        // The first start happens now, so the status the caller gets back
        // already says whether it runs.
        let first = begin(generation, &spec);
        tokio::spawn(async move {
            supervise(generation, spec, stop, first).await;
            let _ = done.send(true);
        });
    }
}

/// Stops the current service's supervisor (and its process) and waits
/// until it has finished.
async fn stop_current() {
    let Some((stop, mut done)) =
        with(|g| g.current.as_ref().map(|c| (c.stop.clone(), c.done.clone())))
    else {
        return;
    };
    stop.notify_one();
    let _ = done.wait_for(|d| *d).await;
}

/// Gives the service its stop signal as the agent shuts down (SIGTERM to
/// the whole sandbox follows), and keeps it from restarting.
pub fn shutting_down() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    let target = with(|g| {
        g.current.as_ref().and_then(|c| {
            let sig = c.spec.stop_signal.unwrap_or(libc::SIGTERM);
            c.status.pid.map(|p| (p, sig))
        })
    });
    if let Some((pid, sig)) = target {
        pump::kill_group(pid, sig);
    }
}

fn exec_request(spec: &ServiceSpec, argv: Vec<String>, tag: &str) -> ExecRequest {
    ExecRequest {
        argv,
        env: spec.env.clone(),
        cwd: spec.workdir.clone(),
        user: spec.user.clone(),
        background: true,
        tag: Some(tag.into()),
        ..Default::default()
    }
}

fn describe(st: &ExitStatus) -> String {
    match (st.code, st.signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".into(),
    }
}

/// How one run ended.
enum Ended {
    /// It exited (or could not start: `None`).
    Exit(Option<ExitStatus>, Duration),
    /// Stopped on request.
    Stopped,
}

/// Runs the service until the policy or a stop ends it.
async fn supervise(generation: u64, spec: ServiceSpec, stop: Arc<Notify>, first: Started) {
    let mut backoff = BACKOFF_MIN;
    let mut retries = 0u32;
    let mut next = Some(first);
    loop {
        let started = match next.take() {
            Some(s) => s,
            None => begin(generation, &spec),
        };
        let ended = follow(generation, &spec, &stop, started).await;
        let (exit, ran) = match ended {
            Ended::Stopped => {
                with(|g| {
                    if let Some(c) = g.owned(generation) {
                        c.status.state = ServiceState::Stopped;
                        c.status.pid = None;
                        c.status.next_start_at_ms = None;
                        g.event("stopped", "stopped on request".into());
                    }
                });
                return;
            }
            Ended::Exit(exit, ran) => (exit, ran),
        };
        let failed = !exit.is_some_and(|e| e.success());
        let again = !SHUTTING_DOWN.load(Ordering::SeqCst)
            && match spec.restart {
                RestartPolicy::No => false,
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => failed && spec.max_retries.is_none_or(|m| retries < m),
            };
        if !again {
            with(|g| {
                if let Some(c) = g.owned(generation) {
                    c.status.state = ServiceState::Exited;
                    c.status.next_start_at_ms = None;
                    if spec.restart == RestartPolicy::OnFailure && failed {
                        g.event(
                            "gave_up",
                            format!("not restarted: {} restarts tried", retries),
                        );
                    }
                }
            });
            return;
        }
        if ran >= STABLE_RUN {
            backoff = BACKOFF_MIN;
        }
        let owned = with(|g| {
            let c = g.owned(generation)?;
            c.status.state = ServiceState::BackingOff;
            c.status.next_start_at_ms = Some(now_ms() + backoff.as_millis() as u64);
            g.event(
                "restarting",
                format!("starting again in {} ms", backoff.as_millis()),
            );
            Some(())
        });
        if owned.is_none() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.notified() => {
                with(|g| {
                    if let Some(c) = g.owned(generation) {
                        c.status.state = ServiceState::Stopped;
                        c.status.next_start_at_ms = None;
                        g.event("stopped", "stopped on request while waiting to restart".into());
                    }
                });
                return;
            }
        }
        retries += 1;
        with(|g| {
            if let Some(c) = g.owned(generation) {
                c.status.restarts += 1;
            }
        });
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A start: the process and its output, or `None` when it could not start.
type Started = Option<(u32, tokio::sync::mpsc::Receiver<Output>, Instant)>;

/// Starts the process once and records it.
fn begin(generation: u64, spec: &ServiceSpec) -> Started {
    let req = exec_request(spec, spec.command.clone(), TAG);
    let (pid, live) = match crate::process::start(&req) {
        Ok(v) => v,
        Err(e) => {
            with(|g| {
                if let Some(c) = g.owned(generation) {
                    c.status.error = Some(e.message.clone());
                    c.status.pid = None;
                    c.status.last_exit = None;
                    c.status.last_exit_at_ms = Some(now_ms());
                    g.event("failed", e.message.clone());
                }
                g.push_log(true, Bytes::from(format!("dwell: {}\n", e.message)));
            });
            return None;
        }
    };
    with(|g| {
        if let Some(c) = g.owned(generation) {
            c.status.state = ServiceState::Running;
            c.status.pid = Some(pid);
            c.status.started_at_ms = Some(now_ms());
            c.status.next_start_at_ms = None;
            c.status.error = None;
            if c.spec.healthcheck.is_some() {
                c.status.health = Some(HealthState::Starting);
                c.status.health_failures = 0;
            }
            g.event("started", format!("started as pid {pid}"));
        }
    });
    if let Some(hc) = &spec.healthcheck {
        tokio::spawn(health_loop(generation, pid, spec.clone(), hc.clone()));
    }
    Some((pid, live, Instant::now()))
}

/// Follows a start to its end.
async fn follow(generation: u64, spec: &ServiceSpec, stop: &Arc<Notify>, s: Started) -> Ended {
    let Some((pid, mut live, started)) = s else {
        return Ended::Exit(None, Duration::ZERO);
    };
    let exit = loop {
        tokio::select! {
            o = live.recv() => match o {
                Some(Output::Stdout(b)) => with(|g| g.push_log(false, b)),
                Some(Output::Stderr(b)) => with(|g| g.push_log(true, b)),
                Some(Output::Exit(st)) => break Some(st),
                None => break None,
            },
            _ = stop.notified() => {
                let st = terminate(pid, spec, &mut live).await;
                finish(generation, pid, st);
                return Ended::Stopped;
            }
        }
    };
    finish(generation, pid, exit);
    Ended::Exit(exit, started.elapsed())
}

/// Records the end of a run.
fn finish(generation: u64, pid: u32, exit: Option<ExitStatus>) {
    with(|g| {
        if let Some(c) = g.owned(generation) {
            c.status.pid = None;
            c.status.last_exit = exit;
            c.status.last_exit_at_ms = Some(now_ms());
            let how = exit.as_ref().map_or("an unknown status".into(), describe);
            g.event("exited", format!("pid {pid} exited with {how}"));
        }
    });
}

/// The stop signal, then SIGKILL after the stop timeout; collects output
/// until the exit.
async fn terminate(
    pid: u32,
    spec: &ServiceSpec,
    live: &mut tokio::sync::mpsc::Receiver<Output>,
) -> Option<ExitStatus> {
    pump::kill_group(pid, spec.stop_signal.unwrap_or(libc::SIGTERM));
    let grace = Duration::from_millis(spec.stop_timeout_ms.unwrap_or(STOP_TIMEOUT_MS));
    let deadline = Instant::now() + grace;
    let mut killed = false;
    loop {
        tokio::select! {
            o = live.recv() => match o {
                Some(Output::Stdout(b)) => with(|g| g.push_log(false, b)),
                Some(Output::Stderr(b)) => with(|g| g.push_log(true, b)),
                Some(Output::Exit(st)) => return Some(st),
                None => return None,
            },
            _ = tokio::time::sleep_until(deadline), if !killed => {
                killed = true;
                pump::kill_group(pid, libc::SIGKILL);
            }
        }
    }
}

/// Runs the health check on its interval while `pid` is the running
/// service of `generation`.
async fn health_loop(
    generation: u64,
    pid: u32,
    spec: ServiceSpec,
    hc: dwell_proto::HealthCheckSpec,
) {
    let Ok(argv) = hc.command_line() else { return };
    let interval = Duration::from_millis(hc.interval_ms.unwrap_or(HEALTH_INTERVAL_MS).max(1));
    let timeout = hc.timeout_ms.unwrap_or(HEALTH_TIMEOUT_MS).max(1);
    let start_period = Duration::from_millis(hc.start_period_ms.unwrap_or(0));
    let retries = hc.retries.unwrap_or(HEALTH_RETRIES).max(1);
    let began = Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        let current = |g: &mut Global| {
            g.owned(generation)
                .is_some_and(|c| c.status.pid == Some(pid))
        };
        if !with(current) {
            return;
        }
        let mut req = exec_request(&spec, argv.clone(), "healthcheck");
        req.timeout_ms = Some(timeout);
        let (ok, output) = run_check(&req).await;
        let in_start_period = began.elapsed() < start_period;
        with(|g| {
            let Some(c) = g.owned(generation).filter(|c| c.status.pid == Some(pid)) else {
                return;
            };
            c.status.health_output = Some(output);
            let before = c.status.health;
            if ok {
                c.status.health_failures = 0;
                c.status.health = Some(HealthState::Healthy);
            } else if !in_start_period {
                c.status.health_failures += 1;
                if c.status.health_failures >= retries {
                    c.status.health = Some(HealthState::Unhealthy);
                }
            }
            let after = c.status.health;
            let failures = c.status.health_failures;
            if before != after {
                if let Some(h) = after {
                    g.event(
                        "health",
                        format!("{} ({failures} consecutive failures)", h.as_str()),
                    );
                }
            }
        });
    }
}

/// Runs one check: whether it passed, and the end of its output.
async fn run_check(req: &ExecRequest) -> (bool, String) {
    let (pid, mut live) = match crate::process::start(req) {
        Ok(v) => v,
        Err(e) => return (false, e.message),
    };
    let mut out: Vec<u8> = Vec::new();
    let mut keep = |b: &Bytes| {
        out.extend_from_slice(b);
        if out.len() > HEALTH_OUTPUT {
            out.drain(..out.len() - HEALTH_OUTPUT);
        }
    };
    let st = loop {
        match live.recv().await {
            Some(Output::Stdout(b)) | Some(Output::Stderr(b)) => keep(&b),
            Some(Output::Exit(st)) => break Some(st),
            None => break None,
        }
    };
    registry::with(|r| r.forget_exited(pid));
    let ok = st.is_some_and(|s| s.success() && !s.timed_out);
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if st.is_some_and(|s| s.timed_out) {
        text.push_str("\n(the check timed out)");
    }
    (ok, text)
}

/// The start of the newest `n` lines of `log`: (entry, byte offset).
fn tail_start(log: &VecDeque<Arc<Entry>>, n: u64) -> (usize, usize) {
    if n == 0 {
        return (log.len(), 0);
    }
    let mut seen = 0u64;
    let mut last = true;
    for (i, e) in log.iter().enumerate().rev() {
        for (j, b) in e.data.iter().enumerate().rev() {
            if last {
                // A final newline ends the last line; it does not start one.
                last = false;
                if *b == b'\n' {
                    continue;
                }
            }
            if *b == b'\n' {
                seen += 1;
                if seen == n {
                    return (i, j + 1);
                }
            }
        }
    }
    (0, 0)
}

/// Streams the service log (see `Request::ServiceLogs`).
pub async fn logs(mut ctx: StreamCtx, follow: bool, tail: Option<u64>, since_ms: Option<u64>) {
    let (recorded, mut rx) = with(|g| {
        let (first, offset) = match tail {
            Some(n) => tail_start(&g.log, n),
            None => (0, 0),
        };
        let recorded: Vec<(bool, Bytes)> = g
            .log
            .iter()
            .enumerate()
            .skip(first)
            .filter(|(_, e)| since_ms.is_none_or(|s| e.at_ms >= s))
            .map(|(i, e)| {
                let data = if i == first {
                    e.data.slice(offset.min(e.data.len())..)
                } else {
                    e.data.clone()
                };
                (e.stderr, data)
            })
            .collect();
        (recorded, follow.then(|| g.live.subscribe()))
    });
    if ctx.event(&dwell_proto::Event::Ready).await.is_err() {
        return;
    }
    for (stderr, b) in recorded {
        if b.is_empty() {
            continue;
        }
        let kind = if stderr { Kind::Stderr } else { Kind::Stdout };
        if ctx.data(kind, b).await.is_err() {
            return;
        }
    }
    let Some(rx) = rx.as_mut() else {
        return ctx.end(Ok(())).await;
    };
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(e) => {
                    let kind = if e.stderr { Kind::Stderr } else { Kind::Stdout };
                    if ctx.data(kind, e.data.clone()).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let note = format!("[dwell: {n} chunks of output skipped: the reader fell behind]\n");
                    if ctx.data(Kind::Stderr, Bytes::from(note)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return ctx.end(Ok(())).await,
            },
            m = ctx.inbound.recv() => if m.is_none() {
                return;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(parts: &[&str]) -> VecDeque<Arc<Entry>> {
        parts
            .iter()
            .map(|p| {
                Arc::new(Entry {
                    at_ms: 0,
                    stderr: false,
                    data: Bytes::from(p.to_string()),
                })
            })
            .collect()
    }

    fn tail(l: &VecDeque<Arc<Entry>>, n: u64) -> String {
        let (i, o) = tail_start(l, n);
        let mut s = String::new();
        for (k, e) in l.iter().enumerate().skip(i) {
            let d = if k == i { &e.data[o..] } else { &e.data[..] };
            s.push_str(std::str::from_utf8(d).unwrap());
        }
        s
    }

    #[test]
    fn tail_counts_lines_across_chunks() {
        let l = log(&["a\nb", "\nc\n", "d\n"]);
        assert_eq!(tail(&l, 1), "d\n");
        assert_eq!(tail(&l, 2), "c\nd\n");
        assert_eq!(tail(&l, 3), "b\nc\nd\n");
        assert_eq!(tail(&l, 9), "a\nb\nc\nd\n");
        assert_eq!(tail(&l, 0), "");
        let l = log(&["x\ny"]);
        assert_eq!(tail(&l, 1), "y");
    }

    #[test]
    fn the_log_keeps_the_newest_bytes() {
        let mut g = Global {
            current: None,
            generations: 0,
            seq: 0,
            log: VecDeque::new(),
            log_bytes: 0,
            live: broadcast::channel(4).0,
        };
        for _ in 0..3 {
            g.push_log(false, Bytes::from(vec![b'x'; LOG_CAP / 2]));
        }
        assert!(g.log_bytes <= LOG_CAP);
        assert_eq!(g.log.len(), 2);
    }
}
