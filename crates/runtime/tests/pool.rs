//! The warm pool of boot processes against the real kernel: a start takes
//! the ready standby (its cgroups become the sandbox's), the pool refills,
//! `list_host` never reports pool cgroups, nothing is left after the
//! runtime is dropped or its process is killed, and the pool-less path
//! still works. They need root; everything is removed even on failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestSandbox, NEEDS};
use dwell_runtime::ns::pool::POOL_PREFIX;
use dwell_runtime::ns::{NamespaceRuntime, NsOptions};
use dwell_runtime::{Observed, Runtime};
use dwell_testkit::has_root;

/// Pool cgroup directories under the runtime's parent, in every hierarchy.
fn pool_dirs(rt: &NamespaceRuntime) -> Vec<PathBuf> {
    let parent = &rt.options().cgroup_parent;
    let mut v = Vec::new();
    for dir in rt.host_cgroups().parent_dirs(parent) {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(POOL_PREFIX) {
                v.push(e.path());
            }
        }
    }
    v
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim().starts_with('Z'))
}

/// Options with a cgroup parent of this test's own (tests run in parallel
/// and list what is under their parent).
fn own_options(test: &str) -> NsOptions {
    let mut o = common::options();
    o.cgroup_parent = format!("{}-{test}", common::cgroup_parent());
    o
}

fn ready_pid(rt: &NamespaceRuntime) -> i32 {
    wait_until("the pool has a standby", Duration::from_secs(20), || {
        !rt.pool_status().ready_pids.is_empty()
    });
    rt.pool_status().ready_pids[0]
}

#[test]
fn start_takes_the_standby_and_the_pool_refills() {
    if !has_root(NEEDS) {
        return;
    }
    let sb = TestSandbox::with_options("pooled", own_options("pooled"));
    let first = ready_pid(&sb.rt);
    let status = sb.rt.pool_status();
    let pool_cgroup = status.ready_cgroups[0].clone();
    assert!(pool_cgroup.contains(POOL_PREFIX), "{pool_cgroup}");
    let dirs = pool_dirs(&sb.rt);
    // On a host with v1 hierarchies the standby sits in its own cgroups.
    if !sb.rt.host_cgroups().v1.is_empty() {
        assert!(!dirs.is_empty(), "no pool cgroups");
        let mem = sb.rt.host_cgroups().v1["memory"].join(&pool_cgroup);
        let procs = std::fs::read_to_string(mem.join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|l| l == first.to_string()), "{procs}");
    }
    // Pool cgroups are never taken for sandboxes.
    assert!(sb.rt.list_host().unwrap().is_empty());

    let started = sb.start();
    let status = sb.rt.pool_status();
    assert_eq!(status.taken, 1, "{status:?}");
    // Start goes on once the standby reported; it exits (and is reaped on
    // a thread of its own) just after.
    let t0 = std::time::Instant::now();
    while alive(first) && t0.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        !alive(first),
        "the standby should have exited after booting"
    );
    for d in &dirs {
        assert!(!d.exists(), "{} was not renamed", d.display());
    }
    assert_eq!(sb.ok("echo pooled"), "pooled");
    assert_eq!(sb.ok("cat /proc/self/cgroup | grep '^0::'"), "0::/");
    if let Some(mem) = sb.rt.host_cgroups().v1.get("memory") {
        let dir = mem.join(&sb.rt.options().cgroup_parent).join(&sb.config.id);
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|l| l == started.pid.to_string()));
        let limit = std::fs::read_to_string(dir.join("memory.limit_in_bytes")).unwrap();
        assert_eq!(limit.trim(), sb.config.resources.memory_bytes.to_string());
    }
    let stats = sb.rt.stats(&sb.config).unwrap();
    assert_eq!(stats.memory_limit_bytes, sb.config.resources.memory_bytes);

    // Refilled behind the start; still only the sandbox is listed.
    let second = ready_pid(&sb.rt);
    assert_ne!(first, second);
    assert_eq!(sb.rt.list_host().unwrap(), vec![sb.config.id.clone()]);

    // Pause and resume work on a pooled sandbox.
    sb.rt.pause(&sb.config).unwrap();
    assert_eq!(sb.rt.observe(&sb.config).unwrap(), Observed::Paused);
    sb.rt.resume(&sb.config).unwrap();
    assert_eq!(sb.ok("echo again"), "again");
    sb.rt.stop(&sb.config).unwrap();
    assert!(sb.rt.list_host().unwrap().is_empty());
}

#[test]
fn failed_pooled_start_leaves_nothing_behind() {
    if !has_root(NEEDS) {
        return;
    }
    let mut sb = TestSandbox::with_options("poolfail", own_options("poolfail"));
    sb.config.agent_binary = "/usr/bin/true".into();
    let standby = ready_pid(&sb.rt);
    let err = sb.rt.start(&sb.config).unwrap_err().to_string();
    assert!(err.contains("agent"), "{err}");
    assert_eq!(sb.rt.pool_status().taken, 1);
    assert!(!alive(standby));
    assert_eq!(sb.rt.observe(&sb.config).unwrap(), Observed::Stopped);
    assert!(!sb.rt.list_host().unwrap().contains(&sb.config.id));
    assert!(!sb.rt.cgroup(&sb.config.id).v1.is_some_and(|_| sb
        .rt
        .host_cgroups()
        .parent_dirs(&sb.rt.options().cgroup_parent)
        .iter()
        .any(|d| d.join(&sb.config.id).exists())));
}

#[test]
fn dropping_the_runtime_removes_the_pool() {
    if !has_root(NEEDS) {
        return;
    }
    let opts = own_options("drop");
    let rt = NamespaceRuntime::new(opts).unwrap();
    let pid = ready_pid(&rt);
    let dirs = pool_dirs(&rt);
    let parents = rt.host_cgroups().parent_dirs(&rt.options().cgroup_parent);
    drop(rt);
    assert!(!alive(pid), "the standby outlived the runtime");
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    for p in parents {
        let _ = std::fs::remove_dir(p);
    }
}

#[test]
fn without_a_pool_every_start_boots_fresh() {
    if !has_root(NEEDS) {
        return;
    }
    let mut opts = own_options("nopool");
    opts.pool_size = 0;
    let sb = TestSandbox::with_options("nopool", opts);
    sb.start();
    assert_eq!(sb.ok("echo fresh"), "fresh");
    assert_eq!(sb.ok("cat /proc/self/cgroup | grep '^0::'"), "0::/");
    let status = sb.rt.pool_status();
    assert_eq!((status.spawned, status.taken), (0, 0));
    assert!(pool_dirs(&sb.rt).is_empty());
    sb.rt.stop(&sb.config).unwrap();
    sb.start();
    assert_eq!(sb.ok("echo twice"), "twice");
}

const HELPER_ENV: &str = "DWELL_NS_TEST_POOL_HELPER";

/// Run in a child process by `standby_cleans_up_when_its_daemon_dies`:
/// make a runtime with a pool, write the standby's pid, hang until killed.
#[test]
#[ignore = "helper process of standby_cleans_up_when_its_daemon_dies"]
fn helper_pool_and_hang() {
    let Ok(out) = std::env::var(HELPER_ENV) else {
        return;
    };
    let rt = NamespaceRuntime::new(common::options()).unwrap();
    let pid = ready_pid(&rt);
    let status = rt.pool_status();
    std::fs::write(&out, format!("{pid} {}", status.ready_cgroups[0])).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn standby_cleans_up_when_its_daemon_dies() {
    if !has_root(NEEDS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("standby");
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_pool_and_hang",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, &out)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let helper_pid = helper.id();
    let kill = Kill(&mut helper);
    let mut line = String::new();
    wait_until(
        "the helper reports its standby",
        Duration::from_secs(60),
        || {
            line = std::fs::read_to_string(&out).unwrap_or_default();
            !line.is_empty()
        },
    );
    let (pid, cgroup) = line.split_once(' ').unwrap();
    let pid: i32 = pid.parse().unwrap();
    assert!(alive(pid));
    // SIGKILL: the daemon gets no chance to clean up.
    drop(kill);
    wait_until(
        "the orphaned standby exits",
        Duration::from_secs(10),
        || !alive(pid),
    );
    let host = dwell_runtime::host::cgroup::HostCgroups::detect().unwrap();
    let parent = format!("dwelltest-{helper_pid}");
    for root in host.v1.values() {
        wait_until(
            "the standby's cgroups are removed",
            Duration::from_secs(10),
            || !root.join(cgroup).exists(),
        );
    }
    for d in host.parent_dirs(&parent) {
        let _ = std::fs::remove_dir(d);
    }
    assert!(Path::new(&format!("/proc/{pid}")).exists() || !alive(pid));
}

#[test]
fn options_default_to_a_pool_of_one() {
    assert_eq!(NsOptions::new("/bin/true", vec![]).pool_size, 1);
}
