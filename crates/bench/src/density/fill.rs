//! One runtime's density run: fill the node with idle sandboxes one by one
//! (each create timed), then, with all of them idle, read what they cost
//! (host memory, cgroup memory, CPU over a quiet window, the daemon's CPU
//! and memory), time exec with all of them running against the same exec
//! on the empty node, delete them all (timed) and check that nothing is
//! left behind.

use std::time::{Duration, Instant};

use super::host::{self, Leftovers};
use super::DensityOpts;
use crate::api::Api;
use crate::error::{Error, Result};
use crate::memory;
use crate::stats::Samples;

/// Stop filling when the host has less memory available than this: "as
/// many as fit" must leave the machine usable.
pub const MEMORY_RESERVE: u64 = 2 << 30;

/// The runtime of a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Namespace,
    Gvisor,
}

impl Runtime {
    /// Its name in the API's `runtime` field.
    pub fn api_name(self) -> &'static str {
        match self {
            Runtime::Namespace => "ns",
            Runtime::Gvisor => "gvisor",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Runtime::Namespace => "namespace",
            Runtime::Gvisor => "gVisor",
        }
    }
}

/// What one fill measured.
pub struct Fill {
    pub runtime: Runtime,
    /// Sandboxes asked for, and made.
    pub asked: usize,
    pub created: usize,
    /// Why fewer than asked were made.
    pub stopped: Option<String>,
    /// `--memory`/`--disk` of each sandbox.
    pub memory: String,
    pub disk: String,
    /// Each POST /v1/sandboxes, in creation order.
    pub create: Vec<Duration>,
    /// The whole fill (creates and the first exec in each).
    pub fill_time: Duration,
    /// Creates served from the daemon's warm gVisor pool during the fill
    /// (`None`: the daemon reports no pool).
    pub pooled_creates: Option<u64>,
    /// Exec `true` in the first sandbox, alone on the node.
    pub exec_empty: Samples,
    /// The same with every sandbox running.
    pub exec_full: Samples,
    /// Exec `true` spread over all the sandboxes (each one woken in turn).
    pub exec_spread: Samples,
    /// Host `MemTotal - MemAvailable` before the first create and with all
    /// of them idle.
    pub host_used_before: u64,
    pub host_used_after: u64,
    /// The same once they are all deleted.
    pub host_used_end: u64,
    pub daemon_rss_before: u64,
    pub daemon_rss_after: u64,
    /// Per sandbox: its memory cgroup's usage and anonymous part.
    pub cg_usage: Vec<u64>,
    pub cg_anon: Vec<u64>,
    /// The cgroup parent the sandboxes are under.
    pub cgroup_parent: String,
    /// Idle time before the window.
    pub settle: Duration,
    /// The quiet window and, per sandbox, its cgroup's CPU time over it.
    pub window: Duration,
    pub cpu_ns: Vec<u64>,
    /// Sandboxes whose cgroup was frozen (asleep) when the window opened.
    pub frozen: usize,
    /// The daemon's own CPU time over the window.
    pub daemon_cpu_ns: Option<u64>,
    /// Deleting them all, one by one.
    pub teardown_total: Duration,
    pub teardown: Samples,
    pub delete_errors: Vec<String>,
    /// What the leftover search found while the sandboxes still ran: the
    /// proof that it can find something.
    pub live: Leftovers,
    pub leftovers: Leftovers,
    /// The web console, measured with all the namespace sandboxes in
    /// place (namespace fills only).
    pub console: Option<crate::console::Console>,
}

fn name(rt: Runtime, i: usize) -> String {
    format!("bench-{}-dn-{}-{i}", std::process::id(), rt.api_name())
}

/// Create one sandbox of `rt` with `--memory`/`--disk` and track it.
pub async fn create(
    api: &mut Api,
    rt: Runtime,
    name: &str,
    memory: &str,
    disk: &str,
) -> Result<String> {
    let body = serde_json::json!({
        "name": name, "runtime": rt.api_name(), "memory": memory, "disk": disk
    });
    api.create_with(body).await
}

/// `n` execs of `true`, over `ids` in turn (evenly spread when there are
/// more sandboxes than execs).
async fn execs(api: &mut Api, ids: &[String], n: usize) -> Result<Samples> {
    let mut s = Samples::default();
    for i in 0..n {
        let id = &ids[i * ids.len() / n.max(1)];
        let t = Instant::now();
        api.exec(id, &["true"]).await?;
        s.push(t.elapsed());
    }
    Ok(s)
}

fn progress(rt: Runtime, made: usize, asked: usize, t: Instant) {
    eprintln!(
        "dwell-bench: density: {made}/{asked} {} sandboxes ({:.0} s)",
        rt.label(),
        t.elapsed().as_secs_f64()
    );
}

/// Fill the node with up to `asked` idle sandboxes of `rt`, measure, tear
/// down. Sandboxes stay tracked by `api` until deleted, so a failure
/// midway leaves them to the caller's `delete_all`.
pub async fn run(
    api: &mut Api,
    rt: Runtime,
    asked: usize,
    o: &DensityOpts,
    daemon_pid: u32,
) -> Result<Fill> {
    if asked == 0 {
        return Err(Error::Usage(format!(
            "a {} density fill needs at least one sandbox",
            rt.label()
        )));
    }
    // One unmeasured sandbox first: the daemon's caches and allocator, the
    // image and the cgroup parents are warm before anything is measured.
    let w = create(api, rt, &name(rt, usize::MAX), &o.memory, &o.disk).await?;
    api.exec(&w, &["true"]).await?;
    api.delete(&w).await?;
    tokio::time::sleep(o.settle).await;

    let mut f = Fill {
        runtime: rt,
        asked,
        created: 0,
        stopped: None,
        memory: o.memory.clone(),
        disk: o.disk.clone(),
        create: Vec::with_capacity(asked),
        fill_time: Duration::ZERO,
        pooled_creates: None,
        exec_empty: Samples::default(),
        exec_full: Samples::default(),
        exec_spread: Samples::default(),
        host_used_before: memory::host_used(),
        host_used_after: 0,
        host_used_end: 0,
        daemon_rss_before: memory::proc_mem(daemon_pid).map_or(0, |m| m.rss),
        daemon_rss_after: 0,
        cg_usage: Vec::new(),
        cg_anon: Vec::new(),
        cgroup_parent: String::new(),
        settle: o.settle,
        window: o.window,
        cpu_ns: Vec::new(),
        frozen: 0,
        daemon_cpu_ns: None,
        teardown_total: Duration::ZERO,
        teardown: Samples::default(),
        delete_errors: Vec::new(),
        live: Leftovers::default(),
        leftovers: Leftovers::default(),
        console: None,
    };
    let claims_before = super::pool_claims(api).await;
    let mut ids: Vec<String> = Vec::with_capacity(asked);
    let t_fill = Instant::now();
    let every = (asked / 10).max(1);
    for i in 0..asked {
        if i > 0 && available_memory() < MEMORY_RESERVE {
            f.stopped = Some(format!(
                "stopped at {i}: the host had less than {} MiB of memory available",
                MEMORY_RESERVE >> 20
            ));
            break;
        }
        let t = Instant::now();
        let made = create(api, rt, &name(rt, i), &o.memory, &o.disk).await;
        let elapsed = t.elapsed();
        let id = match made {
            Ok(id) => id,
            Err(e) if i > 0 => {
                f.stopped = Some(format!("create #{} failed: {e}", i + 1));
                break;
            }
            Err(e) => return Err(e),
        };
        f.create.push(elapsed);
        ids.push(id.clone());
        if let Err(e) = api.exec(&id, &["true"]).await {
            if i == 0 {
                return Err(e);
            }
            f.stopped = Some(format!("the first exec in sandbox #{} failed: {e}", i + 1));
            break;
        }
        if i == 0 {
            // The empty-node figure: one sandbox, nothing else running.
            f.exec_empty = execs(api, &ids, o.exec).await?;
        }
        if (i + 1) % every == 0 {
            progress(rt, i + 1, asked, t_fill);
        }
    }
    f.fill_time = t_fill.elapsed();
    f.created = ids.len();
    if let (Some(a), Some(b)) = (claims_before, super::pool_claims(api).await) {
        f.pooled_creates = Some(b.saturating_sub(a));
    }
    f.cgroup_parent = host::find_parent(&ids[0]).unwrap_or_default();

    // All idle: let the last ones settle, then a quiet window (no API
    // traffic from here) over which every sandbox's CPU time is read.
    tokio::time::sleep(o.settle).await;
    let cpu0: Vec<Option<u64>> = ids
        .iter()
        .map(|id| host::cgroup_cpu_ns(&f.cgroup_parent, id))
        .collect();
    let daemon0 = host::proc_cpu_ns(daemon_pid);
    f.frozen = ids
        .iter()
        .filter(|id| host::is_frozen(&f.cgroup_parent, id))
        .count();
    let t_window = Instant::now();
    tokio::time::sleep(o.window).await;
    let cpu1: Vec<Option<u64>> = ids
        .iter()
        .map(|id| host::cgroup_cpu_ns(&f.cgroup_parent, id))
        .collect();
    let daemon1 = host::proc_cpu_ns(daemon_pid);
    f.window = t_window.elapsed();
    f.cpu_ns = cpu0
        .iter()
        .zip(&cpu1)
        .filter_map(|(a, b)| Some(b.as_ref()?.saturating_sub(*a.as_ref()?)))
        .collect();
    f.daemon_cpu_ns = daemon0.zip(daemon1).map(|(a, b)| b.saturating_sub(a));
    f.host_used_after = memory::host_used();
    f.daemon_rss_after = memory::proc_mem(daemon_pid).map_or(0, |m| m.rss);
    for id in &ids {
        let (usage, anon) = host::cgroup_memory(&f.cgroup_parent, id);
        f.cg_usage.push(usage);
        f.cg_anon.push(anon);
    }

    // Exec with all of them running: in the first sandbox again (against
    // the empty-node figure), then spread over all of them.
    f.exec_full = execs(api, &ids[..1], o.exec).await?;
    f.exec_spread = execs(api, &ids, o.exec).await?;
    // The web console's list of all of them, before they go (after the
    // quiet window: its polling would disturb it).
    if rt == Runtime::Namespace {
        f.console = Some(crate::console::run(api, o.console).await);
    }

    f.live = host::leftovers(&ids);
    // Teardown, one by one; a failed delete is reported and the rest go on.
    eprintln!(
        "dwell-bench: density: deleting {} {} sandboxes",
        ids.len(),
        rt.label()
    );
    let t_down = Instant::now();
    for id in &ids {
        let t = Instant::now();
        match api.delete(id).await {
            Ok(()) => f.teardown.push(t.elapsed()),
            Err(e) => f.delete_errors.push(format!("{id}: {e}")),
        }
    }
    f.teardown_total = t_down.elapsed();
    // Loop devices detach and cgroups go as the last process leaves:
    // give stragglers a few seconds before calling them leftovers.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        f.leftovers = host::leftovers(&ids);
        if f.leftovers.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    f.host_used_end = memory::host_used();
    Ok(f)
}

/// `MemAvailable` of the host, in bytes.
fn available_memory() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    m.lines()
        .find_map(|l| {
            let kb: u64 = l
                .strip_prefix("MemAvailable:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(u64::MAX)
}
