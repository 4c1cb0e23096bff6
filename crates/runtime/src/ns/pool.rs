//! The warm pool: boot processes started ahead of time (standbys, see
//! [`super::standby`]) so that `start()` neither execs the boot binary nor
//! pays the first cgroup migration, which on a quiet host waits for an RCU
//! grace period (7-15 ms).
//!
//! A background thread keeps `size` standbys ready. `start()` takes one,
//! sends it the state dir and reads its report; the thread refills behind
//! it. Each standby is tied to the daemon by a unix socket (its stdin,
//! stdout and stderr): when the pool is dropped, or the daemon dies by any
//! means, the socket closes and the standby removes its cgroups and exits.
//! (PR_SET_PDEATHSIG is not used: it fires when the spawning *thread*
//! exits, not the daemon.) Pool cgroups are named `pool.<hex>`, which is
//! never a valid sandbox id, so `list_host` cannot mistake them.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::standby::{POOL_ENV, READY};
use crate::host::cgroup::v1::V1Group;
use crate::host::cgroup::HostCgroups;
use crate::host::sys;
use crate::host::wait::{read_to_end_until, Backoff};
use crate::{Error, Result};

/// Prefix of pool cgroup names ('.' never occurs in a sandbox id).
pub const POOL_PREFIX: &str = "pool.";
/// The pool refills while starts are in progress after all once it has
/// waited this long (under a steady stream of starts).
const MAX_DEFER: Duration = Duration::from_millis(500);
/// How long a new standby may take to report `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a standby may take to exit once its socket is closed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pool cgroups younger than this are never swept: their standby may be
/// between mkdir and joining them.
const SWEEP_MIN_AGE: Duration = Duration::from_secs(30);

/// How to start standbys.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub exe: PathBuf,
    pub args: Vec<String>,
    pub cgroup_parent: String,
    pub host: HostCgroups,
    pub size: usize,
}

/// What the pool holds right now (for tests and diagnostics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Host pids of the ready standbys.
    pub ready_pids: Vec<i32>,
    /// Their cgroups, relative to the hierarchy roots.
    pub ready_cgroups: Vec<String>,
    /// Standbys started since the pool was made.
    pub spawned: u64,
    /// Standbys handed to `start()` since the pool was made.
    pub taken: u64,
}

/// One ready boot process, sitting in its pool cgroups.
#[derive(Debug)]
pub struct Standby {
    child: Option<Child>,
    sock: UnixStream,
    /// `<parent>/pool.<hex>`.
    cgroup: String,
    /// Its v1 directories (removed here if it died without doing so).
    dirs: Vec<PathBuf>,
}

impl Standby {
    fn spawn(spec: &PoolSpec) -> Result<Standby> {
        let rand = sys::random_u64().map_err(|e| Error::Io {
            context: "reading random bytes for a pool cgroup name".into(),
            source: e,
        })?;
        let cgroup = format!("{}/{POOL_PREFIX}{rand:016x}", spec.cgroup_parent);
        let dirs = if spec.host.v1.is_empty() {
            Vec::new()
        } else {
            V1Group::new(&spec.host.v1, Path::new(&cgroup)).dirs()
        };
        let io = |context: &str| {
            let context = context.to_string();
            move |source| Error::Io { context, source }
        };
        let (ours, theirs) = UnixStream::pair().map_err(io("creating a socket pair"))?;
        let stdio = |s: &UnixStream| -> Result<Stdio> {
            Ok(Stdio::from(OwnedFd::from(
                s.try_clone().map_err(io("duplicating a socket"))?,
            )))
        };
        let child = Command::new(&spec.exe)
            .args(&spec.args)
            .arg(&cgroup)
            .env(POOL_ENV, &cgroup)
            .stdin(stdio(&theirs)?)
            .stdout(stdio(&theirs)?)
            .stderr(stdio(&theirs)?)
            .spawn()
            .map_err(io(&format!(
                "running the pool boot process {}",
                spec.exe.display()
            )))?;
        drop(theirs);
        let mut standby = Standby {
            child: Some(child),
            sock: ours,
            cgroup,
            dirs,
        };
        let line = standby.read_ready()?;
        if line != READY {
            return Err(Error::Start(format!(
                "a pool boot process failed before becoming ready: {}",
                line.trim()
            )));
        }
        Ok(standby)
    }

    /// The first line the standby prints (or all it printed before dying).
    fn read_ready(&mut self) -> Result<String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Start(format!(
                    "a pool boot process did not become ready within {READY_TIMEOUT:?}"
                )));
            }
            let _ = self.sock.set_read_timeout(Some(left));
            match self.sock.read(&mut byte) {
                Ok(0) => break,
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = self.sock.set_read_timeout(None);
        if line == READY.as_bytes() {
            return Ok(READY.into());
        }
        // Not ready: collect the rest of its message.
        let _ = self.sock.set_read_timeout(Some(Duration::from_millis(100)));
        let mut rest = Vec::new();
        let _ = self.sock.read_to_end(&mut rest);
        line.push(b' ');
        line.extend(rest);
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Boot the sandbox in `state_dir` with this standby. `None` when the
    /// standby turned out to be dead before it got the job (the caller
    /// boots fresh instead); otherwise its exit status and output.
    pub fn launch(
        mut self,
        state_dir: &Path,
        deadline: Instant,
    ) -> Option<Result<(ExitStatus, String)>> {
        let child = self.child.as_mut()?;
        if !matches!(child.try_wait(), Ok(None)) {
            return None;
        }
        let mut line = state_dir.as_os_str().as_encoded_bytes().to_vec();
        line.push(b'\n');
        if self.sock.write_all(&line).is_err() {
            return None;
        }
        let mut child = self.child.take().expect("checked above");
        Some(match read_to_end_until(&mut self.sock, deadline) {
            Ok(output) => match child.try_wait() {
                Ok(Some(status)) => Ok((status, output)),
                // It reported success (its pid; it made everything and
                // undoes nothing more) and is exiting: reaped aside.
                Ok(None) if reported_pid(&output) => {
                    reap_aside(child);
                    Ok((ExitStatus::from_raw(0), output))
                }
                _ => child
                    .wait()
                    .map(|status| (status, output))
                    .map_err(|e| Error::Io {
                        context: "waiting for the boot process".into(),
                        source: e,
                    }),
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(Error::Start(
                    "the boot process did not finish in time; it was killed".into(),
                ))
            }
        })
    }
}

/// Whether a boot process's output is its success report: PID 1's pid
/// alone on one line (errors are words).
fn reported_pid(output: &str) -> bool {
    output
        .strip_suffix('\n')
        .is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
}

/// Reap an exiting boot process on a thread of its own (it is never left a
/// zombie); inline if no thread can be made.
fn reap_aside(child: Child) {
    let shared = Arc::new(Mutex::new(Some(child)));
    let theirs = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("dwell-ns-reap".into())
        .spawn(move || {
            if let Some(mut c) = theirs.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = c.wait();
            }
        });
    if let Err(e) = spawned {
        tracing::debug!("reaping a boot process inline: {e}");
        if let Some(mut c) = shared.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = c.wait();
        }
    }
}

impl Drop for Standby {
    /// Close the socket (the standby cleans up and exits), reap it, and
    /// remove its cgroups if it could not.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let mut backoff = Backoff::new(Duration::from_micros(200), Duration::from_millis(20));
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    tracing::warn!(cgroup = %self.cgroup, "a pool boot process ignored its closed socket; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => backoff.sleep_until(deadline),
            }
        }
        for d in &self.dirs {
            if d.exists() {
                let _ = crate::host::cgroup::rmdir(d);
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    ready: Vec<Standby>,
    spawning: bool,
    shutdown: bool,
    /// Starts in progress ([`Busy`] guards alive).
    in_flight: usize,
}

/// Marks a start in progress; the pool does not refill meanwhile (a new
/// standby's exec and first cgroup migration would compete with the start
/// for the CPU and for the kernel's cgroup lock).
#[derive(Debug)]
pub struct Busy<'a> {
    pool: &'a Pool,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut st = self.pool.shared.lock();
        st.in_flight -= 1;
        self.pool.shared.cond.notify_all();
    }
}

#[derive(Debug)]
struct Shared {
    spec: PoolSpec,
    state: Mutex<State>,
    cond: Condvar,
    spawned: AtomicU64,
    taken: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pool of standbys of one runtime.
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Pool {
    /// Start the refill thread (nothing when `spec.size` is 0).
    pub fn new(spec: PoolSpec) -> Pool {
        let size = spec.size;
        let shared = Arc::new(Shared {
            spec,
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            spawned: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        });
        let worker = (size > 0).then(|| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("dwell-ns-pool".into())
                .spawn(move || refill(&shared))
                .expect("spawning the pool thread")
        });
        Pool {
            shared,
            worker: Mutex::new(worker),
        }
    }

    /// Mark a start in progress until the guard is dropped.
    pub fn busy(&self) -> Busy<'_> {
        self.shared.lock().in_flight += 1;
        Busy { pool: self }
    }

    /// A ready standby; waits up to `wait` for one being started. `None`
    /// when the pool is empty, off, or failing to start standbys.
    pub fn take(&self, wait: Duration) -> Option<Standby> {
        if self.shared.spec.size == 0 {
            return None;
        }
        let deadline = Instant::now() + wait;
        let mut st = self.shared.lock();
        loop {
            if let Some(s) = st.ready.pop() {
                self.shared.taken.fetch_add(1, Ordering::Relaxed);
                self.shared.cond.notify_all();
                return Some(s);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if st.shutdown || !st.spawning || left.is_zero() {
                return None;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub fn status(&self) -> PoolStatus {
        let st = self.shared.lock();
        PoolStatus {
            ready_pids: st.ready.iter().map(Standby::pid).collect(),
            ready_cgroups: st.ready.iter().map(|s| s.cgroup.clone()).collect(),
            spawned: self.shared.spawned.load(Ordering::Relaxed),
            taken: self.shared.taken.load(Ordering::Relaxed),
        }
    }

    /// Stop refilling and release every standby (their cgroups go too).
    /// The pool stays empty afterwards.
    pub fn shutdown(&self) {
        let drained = {
            let mut st = self.shared.lock();
            st.shutdown = true;
            self.shared.cond.notify_all();
            std::mem::take(&mut st.ready)
        };
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = worker {
            let _ = w.join();
        }
        drop(drained);
        // One may have been added while the worker finished.
        let late = std::mem::take(&mut self.shared.lock().ready);
        drop(late);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The refill thread: keep `size` standbys ready, back off on failures.
fn refill(shared: &Shared) {
    let mut failures: u32 = 0;
    loop {
        let mut st = shared.lock();
        while !st.shutdown && st.ready.len() >= shared.spec.size {
            st = shared.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        // Let starts in progress finish first (bounded).
        let defer_until = Instant::now() + MAX_DEFER;
        while !st.shutdown && st.in_flight > 0 {
            let left = defer_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = shared
                .cond
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if st.shutdown {
            return;
        }
        st.spawning = true;
        drop(st);
        let result = Standby::spawn(&shared.spec);
        shared.spawned.fetch_add(1, Ordering::Relaxed);
        let mut st = shared.lock();
        st.spawning = false;
        let mut discard = None;
        match result {
            Ok(s) if st.shutdown => discard = Some(s),
            Ok(s) => {
                st.ready.push(s);
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "cannot start a pool boot process; sandboxes boot without the pool meanwhile");
            }
        }
        shared.cond.notify_all();
        if failures > 0 && !st.shutdown {
            let nap = Duration::from_millis(100 << failures.min(8));
            let _ = shared.cond.wait_timeout(st, nap);
        } else {
            drop(st);
        }
        drop(discard);
    }
}

/// Remove pool cgroups left by standbys that died without cleaning up
/// (killed by SIGKILL themselves): empty `pool.*` directories older than
/// [`SWEEP_MIN_AGE`]. The kernel refuses to remove one that holds a process.
pub fn sweep_stale(host: &HostCgroups, parent: &str) {
    let mut roots: Vec<&PathBuf> = host.v1.values().collect();
    roots.sort();
    roots.dedup();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root.join(parent)) else {
            continue;
        };
        for e in entries.flatten() {
            let is_pool = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(POOL_PREFIX));
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= SWEEP_MIN_AGE);
            if is_pool && old {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}
