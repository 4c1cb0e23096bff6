//! Integration tests of the namespace runtime against the real kernel:
//! isolation, limits, pause/resume, cleanup, survival of the starter.
//! They need root; each sandbox is stopped and removed even on failure.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestSandbox, NEEDS};
use dwell_runtime::ns::caps::default_mask;
use dwell_runtime::{Observed, Runtime};
use dwell_testkit::has_root;

fn status_field(pid: i32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} missing"))
        .trim()
        .to_string()
}

fn host_mounts_below(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect()
}

#[test]
fn isolation_privileges_and_cleanup() {
    if !has_root(NEEDS) {
        return;
    }
    let sb = TestSandbox::new("iso");
    let started = sb.start();
    let pid = started.pid;
    assert!(started.agent_socket.ends_with("agent/agent.sock"));

    // PID 1 is the init; host processes are invisible.
    let cmdline = sb.ok("tr '\\0' ' ' < /proc/1/cmdline");
    assert_eq!(cmdline, "/.dwell/agent --listen-fd 3");
    let procs: usize = sb.ok("ls /proc | grep -c '^[0-9]'").parse().unwrap();
    assert!(procs < 10, "sandbox sees {procs} processes");
    assert_eq!(sb.ok("cat /proc/sys/kernel/hostname"), sb.config.hostname);
    assert_eq!(sb.ok("echo $DWELL_TEST"), "1");

    // Writes to /usr land in the sandbox's volume, not on the host.
    let name = format!("dwell-probe-{}", sb.config.id);
    assert_eq!(
        sb.ok(&format!("echo hi > /usr/{name} && cat /usr/{name}")),
        "hi"
    );
    assert!(
        !Path::new("/usr").join(&name).exists(),
        "write leaked to the host"
    );
    let upper = sb
        .config
        .rootfs
        .upper_root
        .join("host/usr/upper")
        .join(&name);
    assert_eq!(std::fs::read_to_string(upper).unwrap(), "hi\n");

    // Privileges of PID 1 and of what it runs.
    let mask = format!("{:016x}", default_mask());
    for field in ["CapEff", "CapPrm", "CapBnd", "CapInh"] {
        assert_eq!(status_field(pid, field), mask, "{field}");
    }
    assert_eq!(status_field(pid, "CapAmb"), "0000000000000000");
    // In its user namespace set-user-id binaries may work (sandbox root
    // only): no_new_privs is off, the filters are on all the same.
    assert_eq!(status_field(pid, "NoNewPrivs"), "0");
    assert_eq!(status_field(pid, "Seccomp"), "2");
    assert_eq!(sb.ok("grep CapEff /proc/self/status | cut -f2"), mask);

    // System calls a sandbox must not make.
    let probe = sb.ok("/.dwell/agent --probe");
    for (call, errno) in [
        ("init_module", libc::EPERM),
        ("finit_module", libc::EPERM),
        ("mount", libc::EPERM),
        ("unshare_user", libc::EPERM),
        ("unshare_net", libc::EPERM),
        ("keyctl", libc::EPERM),
        ("bpf", libc::EPERM),
        ("clone3", libc::ENOSYS),
        ("personality_rie", libc::EPERM),
        ("x32_getpid", libc::EPERM),
    ] {
        assert!(
            probe.lines().any(|l| l == format!("{call}={errno}")),
            "{call} should fail with errno {errno}: {probe}"
        );
    }

    // Masked and read-only kernel paths.
    // (a file this kernel lacks is fine: there is nothing to hide)
    for f in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ] {
        sb.ok(&format!("test ! -e {f} || test \"$(wc -c < {f})\" = 0"));
    }
    assert_eq!(sb.ok("ls /sys/firmware | wc -l"), "0");
    assert_ne!(sb.exec("echo x > /proc/sys/kernel/domainname").0, 0);
    assert_ne!(sb.exec("echo h > /proc/sysrq-trigger").0, 0);
    assert_ne!(sb.exec("touch /sys/dwell-x").0, 0);
    assert_eq!(sb.ok("cat /proc/self/cgroup | grep '^0::'"), "0::/");

    // /dev: the usual devices work; a node made with CAP_MKNOD cannot be
    // opened (nodev), so a host disk is out of reach.
    sb.ok("echo x > /dev/null && head -c 4 /dev/urandom | wc -c && test -e /dev/ptmx");
    let (code, out) = sb.exec("mknod /tmp/disk b 8 0 && head -c 1 /tmp/disk");
    assert_ne!(code, 0, "opening a block device node must fail: {out}");
    assert!(
        out.contains("Permission denied") || out.contains("Operation not permitted"),
        "{out}"
    );

    assert_eq!(sb.rt.observe(&sb.config).unwrap(), Observed::Running);
    let stats = sb.rt.stats(&sb.config).unwrap();
    assert_eq!(stats.memory_limit_bytes, sb.config.resources.memory_bytes);
    assert!(stats.pids >= 1 && stats.memory_bytes > 0, "{stats:?}");
    assert!(sb.rt.list_host().unwrap().contains(&sb.config.id));

    // Stop leaves nothing behind, and is idempotent.
    sb.rt.stop(&sb.config).unwrap();
    assert_eq!(sb.rt.observe(&sb.config).unwrap(), Observed::Stopped);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || status_field(pid, "Name") != "dwell-ns-testin"
    );
    assert!(!sb.rt.list_host().unwrap().contains(&sb.config.id));
    let cg = sb.rt.cgroup(&sb.config.id);
    assert!(
        cg.v1.is_none()
            || !Path::new("/sys/fs/cgroup/memory")
                .join(common::cgroup_parent())
                .join(&sb.config.id)
                .exists()
    );
    assert!(host_mounts_below(&sb.config.state_dir).is_empty());
    assert!(!started.agent_socket.exists());
    sb.rt.stop(&sb.config).unwrap();
}

/// no_new_privs is set when the grants ask for it and, always, without a
/// user namespace (root inside is host root there); the capability drop
/// and the filters are the same either way.
#[test]
fn no_new_privs_when_asked_and_without_a_user_namespace() {
    if !has_root(NEEDS) {
        return;
    }
    let mask = format!("{:016x}", default_mask());
    for (name, asked, userns) in [("nnpask", true, true), ("nnproot", false, false)] {
        let mut sb = TestSandbox::new(name);
        sb.config.grants.no_new_privs = asked;
        if !userns {
            sb.config.id_map = None;
        }
        let pid = sb.start().pid;
        assert_eq!(status_field(pid, "NoNewPrivs"), "1", "{name}");
        assert_eq!(status_field(pid, "Seccomp"), "2", "{name}");
        assert_eq!(status_field(pid, "CapBnd"), mask, "{name}");
        assert_eq!(sb.ok("grep NoNewPrivs /proc/self/status | cut -f2"), "1");
        sb.rt.stop(&sb.config).unwrap();
    }
}

#[test]
fn memory_limit_oom_kills_a_hog() {
    if !has_root(NEEDS) {
        return;
    }
    let mut sb = TestSandbox::new("oom");
    sb.config.resources.memory_bytes = 64 << 20;
    sb.start();
    // tail keeps the current line in memory; /dev/zero has no newline.
    let (code, _) = sb.exec("tail /dev/zero");
    assert_eq!(code, 128 + libc::SIGKILL, "the hog must be OOM-killed");
    let stats = sb.rt.stats(&sb.config).unwrap();
    assert!(stats.oom_kills >= 1, "{stats:?}");
    assert_eq!(sb.ok("echo alive"), "alive");
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    if !has_root(NEEDS) {
        return;
    }
    let mut sb = TestSandbox::new("pids");
    sb.config.resources.pids = 16;
    sb.start();
    // Bounded: 40 short sleeps, at most 16 tasks may exist.
    let (_, out) =
        sb.exec("i=0; while [ $i -lt 40 ]; do sleep 1 & i=$((i+1)); done; wait; echo done");
    assert!(
        out.to_lowercase().contains("fork"),
        "expected fork failures: {out}"
    );
    let stats = sb.rt.stats(&sb.config).unwrap();
    assert!(stats.pids <= 16, "{stats:?}");
    assert_eq!(sb.ok("echo alive"), "alive");
}

fn read_counter(path: &Path) -> u64 {
    for _ in 0..50 {
        if let Some(n) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("counter {} unreadable", path.display());
}

#[test]
fn pause_freezes_and_resume_thaws() {
    if !has_root(NEEDS) {
        return;
    }
    let sb = TestSandbox::new("pause");
    sb.start();
    sb.ok("nohup sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.02; done' >/dev/null 2>&1 &");
    let counter = sb.config.rootfs.upper_root.join("root/upper/tmp/counter");
    std::thread::sleep(Duration::from_millis(300));
    let before = read_counter(&counter);

    sb.rt.pause(&sb.config).unwrap();
    assert_eq!(sb.rt.observe(&sb.config).unwrap(), Observed::Paused);
    let c1 = read_counter(&counter);
    assert!(c1 >= before);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        read_counter(&counter),
        c1,
        "the counter advanced while paused"
    );

    sb.rt.resume(&sb.config).unwrap();
    assert_eq!(sb.rt.observe(&sb.config).unwrap(), Observed::Running);
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        read_counter(&counter) > c1,
        "the counter did not advance after resume"
    );

    // A paused sandbox can be stopped.
    sb.rt.pause(&sb.config).unwrap();
    sb.rt.stop(&sb.config).unwrap();
    assert_eq!(sb.rt.observe(&sb.config).unwrap(), Observed::Stopped);
}

/// Stops a sandbox and removes the cgroup parent of `rt` on drop.
struct StopOnDrop<'a>(
    &'a dwell_runtime::ns::NamespaceRuntime,
    &'a dwell_runtime::SandboxConfig,
);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.stop(self.1);
        self.0.remove_cgroup_parent();
    }
}

const HELPER_ENV: &str = "DWELL_NS_TEST_HELPER_CONFIG";

/// Run in a child process by `survives_the_death_of_its_starter`: start the
/// sandbox described in the file named by the environment, print its pid,
/// and hang until killed.
#[test]
#[ignore = "helper process of survives_the_death_of_its_starter"]
fn helper_start_and_hang() {
    let Ok(path) = std::env::var(HELPER_ENV) else {
        return;
    };
    let config = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let rt = dwell_runtime::ns::NamespaceRuntime::new(common::options()).unwrap();
    let started = rt.start(&config).unwrap();
    let done = std::path::PathBuf::from(path).with_file_name("helper-started");
    std::fs::write(done, started.pid.to_string()).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn survives_the_death_of_its_starter() {
    if !has_root(NEEDS) {
        return;
    }
    let sb = TestSandbox::new("survive");
    let cfg_path = sb.dir.path().join("helper-config.json");
    std::fs::write(&cfg_path, serde_json::to_vec(&sb.config).unwrap()).unwrap();
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_start_and_hang",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, &cfg_path)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Its cgroup parent is named after its pid, not ours.
    let mut opts = common::options();
    opts.cgroup_parent = format!("dwelltest-{}", helper.id());
    let rt = dwell_runtime::ns::NamespaceRuntime::new(opts).unwrap();
    let cleanup = StopOnDrop(&rt, &sb.config);
    let marker = sb.dir.path().join("helper-started");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
        {
            break Some(pid);
        }
        if std::time::Instant::now() > deadline || helper.try_wait().unwrap().is_some() {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    helper.kill().unwrap();
    helper.wait().unwrap();
    let pid = pid.expect("the helper did not start the sandbox");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_ne!(status_field(pid, "PPid"), helper.id().to_string());
    assert_eq!(sb.ok("echo still here"), "still here");
    assert_eq!(rt.observe(&sb.config).unwrap(), Observed::Running);
    rt.stop(&sb.config).unwrap();
    drop(cleanup);
    assert!(
        !Path::new(&format!("/proc/{pid}/status")).exists()
            || status_field(pid, "Name") != "dwell-ns-testin"
    );
}

#[test]
fn failed_start_leaves_nothing_behind() {
    if !has_root(NEEDS) {
        return;
    }
    let mut sb = TestSandbox::new("fail");
    // An "agent" that exits at once without creating its socket.
    sb.config.agent_binary = "/usr/bin/true".into();
    let err = sb.rt.start(&sb.config).unwrap_err().to_string();
    assert!(err.contains("agent"), "{err}");
    assert_eq!(sb.rt.observe(&sb.config).unwrap(), Observed::Stopped);
    assert!(!sb.rt.list_host().unwrap().contains(&sb.config.id));
    assert!(!sb.config.state_dir.join("pid").exists());
}
