//! The warm pool of the gVisor runtime: runsc sandboxes started ahead of
//! time, so that a create pays only for adding the dwell sandbox's own
//! container to one of them ([`super::claim`]) instead of for booting a
//! sandbox (the sentry, its gofer and their cgroups).
//!
//! A pool sandbox is a runsc sandbox whose root container is a placeholder:
//! an empty read-only root holding only the agent binary, which runs as
//! `dwell-agent --idle` (it blocks in `pause(2)`) with no capability. It is started with the daemon's runsc flags (the same as a
//! cold sandbox's: `--network=none`, `--overlay2=none`, `--host-uds=create`,
//! `--directfs=false`) and the memory limit of the sandboxes it can serve,
//! in a cgroup `<parent>/gvpool.<hex>`, and then frozen with the cgroup
//! freezer: while it waits it costs no CPU (the systrap sentry would
//! otherwise wake every few hundred microseconds).
//!
//! Each pool sandbox serves exactly one dwell sandbox and is never given
//! back: what ran in it never meets another tenant. Names start with
//! [`POOL_PREFIX`], whose `.` never occurs in a sandbox id, so nothing keyed
//! on sandbox ids can mistake one (and `list_host` leaves them out).
//!
//! The pool lives as long as the runtime: [`WarmPool::shutdown`] (the
//! daemon's exit) deletes the sandboxes still waiting; after a crash, the
//! next daemon's [`sweep`] deletes every pool sandbox that was not claimed
//! (a claimed one holds a second container and belongs to its dwell
//! sandbox) and the cgroups and directories left of them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use super::runsc::{Output, Runsc};
use crate::error::Context;
use crate::host::cgroup::{HostCgroups, SandboxCgroup};
use crate::host::layout;
use crate::{Error, Result};

/// Prefix of pool sandboxes' runsc ids and cgroups ('.' never occurs in a
/// sandbox id).
pub const POOL_PREFIX: &str = "gvpool.";
/// The pids limit of a pool sandbox while it waits (its claim writes the
/// sandbox's own).
const WAITING_PIDS: u64 = 256;
/// How long freezing or thawing a pool sandbox may take.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed refill, doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// The pool's status file in its directory, read by `dwell doctor`.
pub const STATUS_FILE: &str = "status.json";

/// How big the pool is and what its sandboxes can serve.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// How many pool sandboxes to keep ready (0: no pool, every start is
    /// cold).
    pub size: usize,
    /// The memory limit a pool sandbox is started with; only sandboxes with
    /// exactly this limit start from the pool (the sentry sizes its kernel,
    /// /proc/meminfo included, by the limit it boots with).
    pub memory_bytes: u64,
    /// How long the pool waits before it starts a sandbox (the
    /// replacement of a claimed one, or one of the first fill; 0: at once),
    /// so that a new sandbox's first commands do not share the CPU with
    /// the refill.
    pub refill_delay: Duration,
    /// The agent binary (the placeholder init). Without one, no pool.
    pub agent: Option<PathBuf>,
    /// Where the pool keeps its sandboxes' bundles and its status file.
    pub dir: PathBuf,
}

impl PoolOptions {
    /// No pool; its directory next to the runsc root `root`.
    pub fn disabled(root: &Path) -> PoolOptions {
        let mut dir = root.as_os_str().to_owned();
        dir.push("-pool");
        PoolOptions {
            size: 0,
            memory_bytes: 512 << 20,
            refill_delay: Duration::ZERO,
            agent: None,
            dir: dir.into(),
        }
    }
}

/// Counters of the pool, for `/metrics` and `dwell doctor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolStatus {
    /// Configured size.
    pub size: u64,
    /// Pool sandboxes ready to be claimed.
    pub ready: u64,
    /// Creates served from the pool since the daemon started.
    pub claimed_total: u64,
    /// Pool sandboxes that failed to start since the daemon started.
    pub refill_failures_total: u64,
    /// Memory limit of each pool sandbox.
    pub memory_bytes: u64,
}

/// What starting and deleting pool sandboxes needs.
#[derive(Debug, Clone)]
pub struct PoolCtx {
    pub runsc: Runsc,
    /// runsc's state root.
    pub root: PathBuf,
    pub cgroup_parent: String,
    pub timeout: Duration,
    pub options: PoolOptions,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<String>,
    stopping: bool,
}

#[derive(Debug)]
struct Shared {
    ctx: PoolCtx,
    state: Mutex<State>,
    cond: Condvar,
    claimed: AtomicU64,
    failures: AtomicU64,
}

/// The pool: a refill thread and the ready sandboxes' names.
#[derive(Debug)]
pub struct WarmPool {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn status(&self) -> PoolStatus {
        PoolStatus {
            size: self.ctx.options.size as u64,
            ready: self.lock().ready.len() as u64,
            claimed_total: self.claimed.load(Ordering::Relaxed),
            refill_failures_total: self.failures.load(Ordering::Relaxed),
            memory_bytes: self.ctx.options.memory_bytes,
        }
    }

    /// Rewrite the status file (best effort: it is informational).
    fn publish(&self) {
        let status = self.status();
        let path = self.ctx.options.dir.join(STATUS_FILE);
        let tmp = path.with_extension("tmp");
        if let Ok(body) = serde_json::to_vec(&status) {
            if std::fs::write(&tmp, body).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
    }
}

impl WarmPool {
    /// Start the refill thread, which first sweeps what an earlier daemon
    /// left.
    /// None (logged) on a cgroup2-only host, where a claim cannot move the
    /// pool sandbox's cgroup (see [`super::claim`]).
    pub fn start(ctx: PoolCtx) -> Result<Option<WarmPool>> {
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            tracing::warn!(
                "the gVisor warm pool is off: this host has only cgroup2, which cannot \
                 rename a cgroup (every gVisor create starts cold)"
            );
            return Ok(None);
        }
        std::fs::create_dir_all(&ctx.options.dir)
            .context(|| format!("creating the pool dir {}", ctx.options.dir.display()))?;
        let shared = Arc::new(Shared {
            ctx,
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            claimed: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        shared.publish();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("dwell-gvisor-pool".into())
            .spawn(move || {
                // Off the daemon's start: deleting a runsc sandbox takes a while.
                sweep(&s.ctx);
                refill(&s)
            })
            .context(|| "starting the gVisor pool's refill thread".to_string())?;
        Ok(Some(WarmPool {
            shared,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// What the pool's sandboxes can serve.
    pub fn options(&self) -> &PoolOptions {
        &self.shared.ctx.options
    }

    /// A ready pool sandbox's name (the caller owns it from now on: it
    /// claims it or discards it, then calls [`WarmPool::done`]), or None
    /// when none is ready.
    pub fn take(&self) -> Option<String> {
        self.shared.lock().ready.pop_front()
    }

    /// The claim of a taken sandbox is over (`ok`: it succeeded): the
    /// refill may start its replacement. Not earlier: booting a runsc
    /// sandbox takes a few hundred ms of CPU, which the claim would share.
    pub fn done(&self, ok: bool) {
        if ok {
            self.shared.claimed.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.publish();
        self.shared.cond.notify_all();
    }

    pub fn status(&self) -> PoolStatus {
        self.shared.status()
    }

    /// Stop refilling and delete the sandboxes still waiting. Idempotent.
    pub fn shutdown(&self) {
        self.shared.lock().stopping = true;
        self.shared.cond.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        let left: Vec<String> = self.shared.lock().ready.drain(..).collect();
        for name in left {
            discard(&self.shared.ctx, &name);
        }
        let _ = std::fs::remove_file(self.shared.ctx.options.dir.join(STATUS_FILE));
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The refill thread: keep `size` sandboxes ready, one start at a time,
/// backing off after failures.
fn refill(shared: &Shared) {
    let mut retry = FIRST_RETRY;
    loop {
        {
            let mut st = shared.lock();
            while !st.stopping && st.ready.len() >= shared.ctx.options.size {
                st = shared.cond.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.stopping {
                return;
            }
            let delay = shared.ctx.options.refill_delay;
            if !delay.is_zero() {
                let (st, _) = shared
                    .cond
                    .wait_timeout_while(st, delay, |s| !s.stopping)
                    .unwrap_or_else(|e| e.into_inner());
                if st.stopping {
                    return;
                }
            }
        }
        match start_one(&shared.ctx) {
            Ok(name) => {
                retry = FIRST_RETRY;
                let mut st = shared.lock();
                if st.stopping {
                    drop(st);
                    discard(&shared.ctx, &name);
                    return;
                }
                st.ready.push_back(name);
                drop(st);
                shared.publish();
            }
            Err(e) => {
                shared.failures.fetch_add(1, Ordering::Relaxed);
                shared.publish();
                tracing::warn!(error = %e, "starting a gVisor pool sandbox failed; retrying in {retry:?}");
                let st = shared.lock();
                let (st, _) = shared
                    .cond
                    .wait_timeout_while(st, retry, |s| !s.stopping)
                    .unwrap_or_else(|e| e.into_inner());
                if st.stopping {
                    return;
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

/// A fresh pool sandbox's name.
fn new_name() -> Result<String> {
    let r = crate::host::sys::random_u64().context(|| "reading random bytes".to_string())?;
    Ok(format!("{POOL_PREFIX}{r:016x}"))
}

/// The cgroup path (`/<parent>/<name>`) runsc gets for a pool sandbox.
pub fn cgroups_path(ctx_parent: &str, name: &str) -> String {
    format!("/{ctx_parent}/{name}")
}

/// Inside the placeholder: the directory of its hostname socket.
const CTL_DIR: &str = "/.dwell/ctl";
/// The hostname socket, relative to a pool sandbox's directory.
pub const CTL_SOCKET: &str = "ctl/sock";
/// How long the placeholder may take to listen on its socket.
const CTL_TIMEOUT: Duration = Duration::from_secs(10);

/// The placeholder root container's spec: `agent --idle` as root in an
/// empty read-only `rootfs`, in cgroup `cgroups_path` with `memory_bytes`
/// (and as much swap: none) and `pids`. With `ctl`, it first takes the
/// sandbox's hostname on a socket in `ctl` ([`set_hostname`]; runsc's
/// containers of one sandbox share its UTS namespace) and holds
/// CAP_SYS_ADMIN for that alone; otherwise it has no capability.
pub fn root_spec(
    rootfs: &Path,
    ctl: Option<&Path>,
    cgroups_path: &str,
    memory_bytes: u64,
    pids: u64,
) -> Value {
    let caps: &[&str] = if ctl.is_some() {
        &["CAP_SYS_ADMIN"]
    } else {
        &[]
    };
    let mut args = vec![layout::SANDBOX_AGENT.to_string(), "--idle".to_string()];
    let mut mounts = vec![json!({"destination": layout::SANDBOX_AGENT, "type": "bind",
        "source": "", "options": ["bind", "ro", "nosuid", "nodev"]})];
    if let Some(ctl) = ctl {
        args.push(format!("{CTL_DIR}/sock"));
        mounts.push(
            json!({"destination": CTL_DIR, "type": "bind", "source": ctl,
            "options": ["bind", "rw", "nosuid", "nodev", "noexec"]}),
        );
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            // Root of the sentry's kernel without a single capability (the
            // agent binary and the daemon's directories are root's, 0700).
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": [],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true,
        },
        "root": {"path": rootfs, "readonly": true},
        "hostname": "pool",
        "mounts": mounts,
        "annotations": {"io.kubernetes.cri.container-type": "sandbox"},
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {
                "memory": {"limit": memory_bytes, "swap": memory_bytes},
                "pids": {"limit": pids},
            },
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "network"},
            ],
        },
    })
}

/// Make the placeholder's root under `dir` (`dir/rootfs`, holding the
/// agent at its usual path, and `dir/ctl`) and write `dir/config.json`;
/// `spec_of` gets the root and the ctl dir.
pub fn write_root_bundle(
    dir: &Path,
    agent: &Path,
    spec_of: impl Fn(&Path, &Path) -> Value,
) -> Result<()> {
    let rootfs = dir.join("rootfs");
    let agent_dir = rootfs.join(".dwell");
    let ctl = dir.join("ctl");
    for d in [agent_dir.join("ctl"), ctl.clone()] {
        std::fs::create_dir_all(&d).context(|| format!("creating {}", d.display()))?;
    }
    let _ = std::fs::remove_file(ctl.join("sock"));
    let target = agent_dir.join("agent");
    // The agent comes in by a bind mount on an empty file.
    if !target.exists() {
        std::fs::write(&target, b"").context(|| format!("creating {}", target.display()))?;
    }
    let mut spec = spec_of(&rootfs, &ctl);
    spec["mounts"][0]["source"] = json!(agent);
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&spec).expect("the spec serialises"),
    )
    .context(|| format!("writing {}", path.display()))
}

/// Start one pool sandbox and freeze it; nothing is left of it on error.
fn start_one(ctx: &PoolCtx) -> Result<String> {
    let agent = ctx.options.agent.as_deref().ok_or_else(|| {
        Error::Other("the gVisor pool has no agent binary to start sandboxes with".into())
    })?;
    let name = new_name()?;
    let r = start_named(ctx, agent, &name);
    if r.is_err() {
        discard(ctx, &name);
    }
    r.map(|()| name)
}

fn start_named(ctx: &PoolCtx, agent: &Path, name: &str) -> Result<()> {
    let dir = ctx.options.dir.join(name);
    let cg = cgroups_path(&ctx.cgroup_parent, name);
    let memory = ctx.options.memory_bytes;
    write_root_bundle(&dir, agent, |rootfs, ctl| {
        root_spec(rootfs, Some(ctl), &cg, memory, WAITING_PIDS)
    })?;
    let bundle = dir.display().to_string();
    ctx.runsc.run(
        &["run", "--detach", "--bundle", &bundle, name],
        Output::Console(&dir.join("console.log")),
        ctx.timeout,
    )?;
    // Frozen before it listens, it could not take the hostname.
    let sock = dir.join(CTL_SOCKET);
    let deadline = std::time::Instant::now() + CTL_TIMEOUT;
    let mut backoff =
        crate::host::wait::Backoff::new(Duration::from_micros(200), Duration::from_millis(10));
    while !crate::agent_channel::is_socket(&sock) {
        if std::time::Instant::now() >= deadline {
            return Err(Error::Start(format!(
                "the pool sandbox {name} did not listen on {} within {CTL_TIMEOUT:?}; its \
                 output:\n{}",
                sock.display(),
                layout::tail_lines(&dir.join("console.log"), 10)
            )));
        }
        backoff.sleep_until(deadline);
    }
    freeze(ctx, name, true)
}

/// Give (thawed) pool sandbox `name` its hostname through its placeholder.
pub fn set_hostname(ctx: &PoolCtx, name: &str, hostname: &str) -> Result<()> {
    use std::io::{Read, Write};
    let sock = ctx.options.dir.join(name).join(CTL_SOCKET);
    let io = |e| Error::Io {
        context: format!(
            "giving pool sandbox {name} its hostname on {}",
            sock.display()
        ),
        source: e,
    };
    // The pool saw the socket's file, which bind() makes before listen():
    // a pool sandbox frozen between the two refuses for a moment after
    // the thaw.
    let deadline = std::time::Instant::now() + CTL_TIMEOUT;
    let mut conn = loop {
        match std::os::unix::net::UnixStream::connect(&sock) {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            r => break r.map_err(io)?,
        }
    };
    conn.set_read_timeout(Some(CTL_TIMEOUT)).map_err(io)?;
    conn.write_all(format!("{hostname}\n").as_bytes())
        .map_err(io)?;
    let mut reply = String::new();
    conn.take(256).read_to_string(&mut reply).map_err(io)?;
    if reply.trim() != "ok" {
        return Err(Error::Start(format!(
            "pool sandbox {name} could not take hostname {hostname:?}: {}",
            reply.trim()
        )));
    }
    Ok(())
}

/// Freeze (or thaw) pool sandbox `name` through its cgroup.
pub fn freeze(ctx: &PoolCtx, name: &str, frozen: bool) -> Result<()> {
    let host = HostCgroups::detect()?;
    let cg = SandboxCgroup::new(&host, &ctx.cgroup_parent, name);
    if frozen {
        crate::ns::pause::freeze(&cg, FREEZE_TIMEOUT)
    } else {
        crate::ns::resume::thaw(&cg, FREEZE_TIMEOUT)
    }
}

/// Delete pool sandbox `name` (thawed first: a frozen process cannot die)
/// with its cgroups and directory. Best effort, idempotent.
pub fn discard(ctx: &PoolCtx, name: &str) {
    let _ = freeze(ctx, name, false);
    if let Err(e) = ctx
        .runsc
        .run(&["delete", "--force", name], Output::Capture, ctx.timeout)
    {
        if !e.to_string().contains("does not exist") {
            tracing::warn!(name, error = %e, "deleting a gVisor pool sandbox");
        }
    }
    remove_cgroups(&ctx.cgroup_parent, name);
    let _ = std::fs::remove_dir_all(ctx.options.dir.join(name));
}

/// Remove the (empty) cgroup `<parent>/<name>` from every hierarchy
/// under `/sys/fs/cgroup` (symlinked co-mounts are visited once).
pub fn remove_cgroups(parent: &str, name: &str) {
    // A cgroup whose last process just died stays busy for a moment:
    // retry EBUSY for up to 2 s (a cgroup left behind would be reused,
    // without limits, by the next start under the same name).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    for dir in hierarchy_dirs(parent, name) {
        loop {
            match std::fs::remove_dir(&dir) {
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                _ => break,
            }
        }
    }
}

/// SIGKILL every process in cgroup `<parent>/<name>` (of every hierarchy):
/// what ends a pooled sandbox's runsc sandbox when runsc could not.
pub fn kill_cgroup_processes(parent: &str, name: &str) {
    for dir in hierarchy_dirs(parent, name) {
        let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
            continue;
        };
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if pid > 1 {
                // SAFETY: kill(2) with a pid read from the sandbox's cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// `<hierarchy>/<parent>/<name>` for every cgroup hierarchy mounted under
/// `/sys/fs/cgroup` (cgroup2 alone: the root itself), existing or not.
pub fn hierarchy_dirs(parent: &str, name: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = Vec::new();
    if root.join("cgroup.controllers").exists() {
        dirs.push(root.join(parent).join(name));
        return dirs;
    }
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            // A symlink (cpu -> cpu,cpuacct) names a hierarchy seen anyway.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path().join(parent).join(name));
            }
        }
    }
    dirs
}

/// Containers per runsc sandbox, from the state files in runsc's root
/// (`<container>_sandbox:<sandbox>.state`).
pub fn containers_by_sandbox(root: &Path) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut map = std::collections::BTreeMap::<String, Vec<String>>::new();
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(n) = name.to_str().and_then(|n| n.strip_suffix(".state")) else {
                continue;
            };
            if let Some((container, sandbox)) = n.split_once("_sandbox:") {
                map.entry(sandbox.to_string())
                    .or_default()
                    .push(container.to_string());
            }
        }
    }
    map
}

/// [`sweep`] on a thread of its own (a daemon without a pool).
pub fn sweep_in_background(ctx: PoolCtx) {
    let r = std::thread::Builder::new()
        .name("dwell-gvisor-pool-sweep".into())
        .spawn(move || sweep(&ctx));
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot sweep the gVisor pool's leftovers");
    }
}

/// Delete what an earlier daemon left of its pool: pool sandboxes that
/// hold only their placeholder (never claimed), their cgroups, their
/// directories. Claimed ones belong to their dwell sandboxes and stay.
pub fn sweep(ctx: &PoolCtx) {
    let sandboxes = containers_by_sandbox(&ctx.root);
    let mut kept = std::collections::BTreeSet::new();
    for (sandbox, containers) in &sandboxes {
        if !sandbox.starts_with(POOL_PREFIX) {
            continue;
        }
        if containers.iter().all(|c| c == sandbox) {
            tracing::info!(name = %sandbox, "removing an unclaimed gVisor pool sandbox left by an earlier daemon");
            discard(ctx, sandbox);
        } else {
            kept.insert(sandbox.clone());
        }
    }
    // Directories and cgroups of pool sandboxes runsc does not know. One
    // may be a `runsc run` the dead daemon started and that is still
    // finishing (runsc outlives the daemon): it is discarded again once
    // any runsc call would have timed out, so it cannot run on unseen.
    let mut unknown = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&ctx.options.dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(POOL_PREFIX) && !sandboxes.contains_key(&name) {
                unknown.push(name.clone());
            }
            if name.starts_with(POOL_PREFIX) && !kept.contains(&name) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if !unknown.is_empty() {
        let late = ctx.clone();
        let r = std::thread::Builder::new()
            .name("dwell-gvisor-pool-late-sweep".into())
            .spawn(move || {
                std::thread::sleep(late.timeout + Duration::from_secs(5));
                for name in unknown {
                    discard(&late, &name);
                }
            });
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot schedule the late sweep of the gVisor pool");
        }
    }
    for parent_dir in hierarchy_dirs(&ctx.cgroup_parent, "") {
        if let Ok(rd) = std::fs::read_dir(&parent_dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(POOL_PREFIX) && !kept.contains(&name) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_never_sandbox_ids() {
        let n = new_name().unwrap();
        assert!(n.starts_with(POOL_PREFIX));
        assert!(layout::validate_id(&n).is_err());
    }

    #[test]
    fn the_placeholder_has_no_capability_on_a_read_only_root() {
        let dir = tempfile::tempdir().unwrap();
        write_root_bundle(dir.path(), Path::new("/bin/agent"), |r, _| {
            root_spec(r, None, "/p/gvpool.1", 64 << 20, 32)
        })
        .unwrap();
        let spec: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(spec["process"]["user"]["uid"], 0);
        assert_eq!(spec["process"]["args"][1], "--idle");
        assert!(spec["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .is_empty());
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64u64 << 20);
        assert_eq!(spec["mounts"][0]["source"], "/bin/agent");
        assert!(dir.path().join("rootfs/.dwell/agent").is_file());
    }

    #[test]
    fn containers_are_grouped_by_their_runsc_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "gvpool.a_sandbox:gvpool.a.state",
            "sb1_sandbox:gvpool.a.state",
            "gvpool.b_sandbox:gvpool.b.state",
            "gvpool.b_sandbox:gvpool.b.lock",
            "cold_sandbox:cold.state",
        ] {
            std::fs::write(dir.path().join(f), b"{}").unwrap();
        }
        let m = containers_by_sandbox(dir.path());
        let mut a = m["gvpool.a"].clone();
        a.sort();
        assert_eq!(a, ["gvpool.a", "sb1"]);
        assert_eq!(m["gvpool.b"], ["gvpool.b"]);
        assert_eq!(m["cold"], ["cold"]);
    }
}
