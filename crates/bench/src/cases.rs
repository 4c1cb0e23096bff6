//! The measured operations, each dwell's way and its nearest baseline's way.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::api::Api;
use crate::baseline::{self, Freezer, FreezerKind, NsTarget};
use crate::error::Result;
use crate::memory::{self, MemCgroup, ProcMem};
use crate::stats::Samples;

/// A unique sandbox name for this run.
fn name(kind: &str, i: usize) -> String {
    format!("bench-{}-{kind}-{i}", std::process::id())
}

/// Time `n` runs of a blocking command (after `warmup` unmeasured ones).
pub fn time_command(cmd: &str, args: &[&str], warmup: usize, n: usize) -> Result<Samples> {
    let mut s = Samples::default();
    for i in 0..warmup + n {
        let t = Instant::now();
        baseline::run_quiet(cmd, args)?;
        if i >= warmup {
            s.push(t.elapsed());
        }
    }
    Ok(s)
}

/// Create-to-first-exec through the API.
pub struct CreateApi {
    /// POST /v1/sandboxes, then the first exec of `true`.
    pub total: Samples,
    /// The create call alone.
    pub create: Samples,
    /// The first exec alone.
    pub first_exec: Samples,
    /// DELETE ?force=true (not part of the measured total).
    pub delete: Samples,
}

pub async fn create_api(api: &mut Api, warmup: usize, n: usize) -> Result<CreateApi> {
    let mut r = CreateApi {
        total: Samples::default(),
        create: Samples::default(),
        first_exec: Samples::default(),
        delete: Samples::default(),
    };
    for i in 0..warmup + n {
        let t0 = Instant::now();
        let id = api.create(&name("c", i)).await?;
        let t1 = Instant::now();
        api.exec(&id, &["true"]).await?;
        let t2 = Instant::now();
        api.delete(&id).await?;
        if i >= warmup {
            r.total.push(t2 - t0);
            r.create.push(t1 - t0);
            r.first_exec.push(t2 - t1);
            r.delete.push(t2.elapsed());
        }
    }
    Ok(r)
}

/// Create-to-first-exec through the CLI: `dwell create` then `dwell exec`.
pub async fn create_cli(
    api: &mut Api,
    dwell: &Path,
    socket: &Path,
    warmup: usize,
    n: usize,
) -> Result<Samples> {
    let mut s = Samples::default();
    let sock = socket.to_string_lossy().into_owned();
    let bin = dwell.to_string_lossy().into_owned();
    for i in 0..warmup + n {
        let nm = name("cli", i);
        let t = Instant::now();
        api.track(nm.clone());
        baseline::run_quiet(&bin, &["--socket", &sock, "create", "--name", &nm])?;
        baseline::run_quiet(&bin, &["--socket", &sock, "exec", &nm, "--", "true"])?;
        if i >= warmup {
            s.push(t.elapsed());
        }
        api.delete(&nm).await?;
    }
    Ok(s)
}

/// Exec of `true` in one running sandbox.
pub struct ExecApi {
    /// Over one kept-alive HTTP connection.
    pub keepalive: Samples,
    /// A new connection per request.
    pub fresh_conn: Samples,
    /// `dwell exec` (the CLI).
    pub cli: Samples,
}

pub async fn exec_api(
    api: &mut Api,
    dwell: &Path,
    socket: &Path,
    warmup: usize,
    n: usize,
    cli_n: usize,
) -> Result<ExecApi> {
    let id = api.create(&name("x", 0)).await?;
    let mut r = ExecApi {
        keepalive: Samples::default(),
        fresh_conn: Samples::default(),
        cli: Samples::default(),
    };
    for i in 0..warmup + n {
        let t = Instant::now();
        api.exec(&id, &["true"]).await?;
        if i >= warmup {
            r.keepalive.push(t.elapsed());
        }
    }
    for i in 0..warmup + n {
        api.disconnect();
        let t = Instant::now();
        api.exec(&id, &["true"]).await?;
        if i >= warmup {
            r.fresh_conn.push(t.elapsed());
        }
    }
    let sock = socket.to_string_lossy().into_owned();
    r.cli = time_command(
        &dwell.to_string_lossy(),
        &["--socket", &sock, "exec", &id, "--", "true"],
        warmup,
        cli_n,
    )?;
    api.delete(&id).await?;
    Ok(r)
}

/// `nsenter` into a live namespace set, running `true`.
pub fn nsenter(warmup: usize, n: usize) -> Result<Samples> {
    let target = NsTarget::start()?;
    let args = target.nsenter_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    time_command("nsenter", &args, warmup, n)
}

/// Pause + resume of one running sandbox through the API.
pub struct PauseApi {
    pub pause: Samples,
    pub resume: Samples,
    pub both: Samples,
}

pub async fn pause_api(api: &mut Api, warmup: usize, n: usize) -> Result<PauseApi> {
    let id = api.create(&name("p", 0)).await?;
    let mut r = PauseApi {
        pause: Samples::default(),
        resume: Samples::default(),
        both: Samples::default(),
    };
    for i in 0..warmup + n {
        let t0 = Instant::now();
        api.pause(&id).await?;
        let t1 = Instant::now();
        api.resume(&id).await?;
        let t2 = Instant::now();
        if i >= warmup {
            r.pause.push(t1 - t0);
            r.resume.push(t2 - t1);
            r.both.push(t2 - t0);
        }
    }
    // The sandbox must still work after all that.
    api.exec(&id, &["true"]).await?;
    api.delete(&id).await?;
    Ok(r)
}

/// Freeze + thaw of a hand-made cgroup holding one `sleep`.
pub fn freezer(kind: FreezerKind, warmup: usize, n: usize) -> Result<PauseApi> {
    let f = Freezer::new(kind)?;
    let mut r = PauseApi {
        pause: Samples::default(),
        resume: Samples::default(),
        both: Samples::default(),
    };
    for i in 0..warmup + n {
        let t0 = Instant::now();
        f.set(true)?;
        let t1 = Instant::now();
        f.set(false)?;
        let t2 = Instant::now();
        if i >= warmup {
            r.pause.push(t1 - t0);
            r.resume.push(t2 - t1);
            r.both.push(t2 - t0);
        }
    }
    Ok(r)
}

/// What one idle sandbox costs.
#[derive(Debug, Clone, Default)]
pub struct IdleSandbox {
    /// The pid file's process (PID 1 inside) and its command name.
    pub pid1: u32,
    pub pid1_comm: String,
    pub pid1_mem: ProcMem,
    /// Every process in the sandbox's memory cgroup.
    pub procs: Vec<(u32, String)>,
    pub procs_mem: ProcMem,
    pub cg_usage: u64,
    pub cg_rss: u64,
    pub cg_cache: u64,
    pub cg_kmem: Option<u64>,
}

/// Memory of `n` idle sandboxes.
pub struct Idle {
    pub sandboxes: Vec<IdleSandbox>,
    pub cgroup_parent: String,
    pub daemon_before: ProcMem,
    pub daemon_after: ProcMem,
    pub host_used_before: u64,
    pub host_used_after: u64,
    pub settle: Duration,
}

pub async fn idle(
    api: &mut Api,
    data_dir: &Path,
    daemon_pid: u32,
    n: usize,
    settle: Duration,
) -> Result<Idle> {
    // Warm the daemon's allocator and caches with one create/delete first,
    // so the growth measured below is per sandbox, not first-use cost.
    let w = api.create(&name("iw", 0)).await?;
    api.exec(&w, &["true"]).await?;
    api.delete(&w).await?;
    tokio::time::sleep(settle).await;

    let daemon_before = memory::proc_mem(daemon_pid).unwrap_or_default();
    let host_used_before = memory::host_used();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = api.create(&name("idle", i)).await?;
        api.exec(&id, &["true"]).await?;
        ids.push(id);
    }
    tokio::time::sleep(settle).await;
    let daemon_after = memory::proc_mem(daemon_pid).unwrap_or_default();
    let host_used_after = memory::host_used();

    let cgroup_parent = ids
        .first()
        .and_then(|id| memory::find_parent(id))
        .unwrap_or_default();
    let mut sandboxes = Vec::new();
    for id in &ids {
        let pid1 = memory::pid_file(&data_dir.join("sandboxes").join(id).join("pid")).unwrap_or(0);
        let cg = MemCgroup::new(&cgroup_parent, id);
        let mut s = IdleSandbox {
            pid1,
            pid1_comm: memory::comm(pid1),
            pid1_mem: memory::proc_mem(pid1).unwrap_or_default(),
            cg_usage: cg.usage().unwrap_or(0),
            cg_rss: cg.stat("rss").unwrap_or(0),
            cg_cache: cg.stat("cache").unwrap_or(0),
            cg_kmem: cg.kmem(),
            ..Default::default()
        };
        for p in cg.procs() {
            s.procs.push((p, memory::comm(p)));
            s.procs_mem += memory::proc_mem(p).unwrap_or_default();
        }
        sandboxes.push(s);
    }
    for id in ids {
        api.delete(&id).await?;
    }
    Ok(Idle {
        sandboxes,
        cgroup_parent,
        daemon_before,
        daemon_after,
        host_used_before,
        host_used_after,
        settle,
    })
}

/// Whether a program can be run at all (for optional baselines).
pub fn available(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A baseline that may be missing on this host: report and skip it.
pub fn optional<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            eprintln!("dwell-bench: skipping a baseline: {e}");
            Ok(None)
        }
    }
}
