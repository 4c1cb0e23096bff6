//! The gVisor runtime against real runsc: start, exec through the agent's
//! socket, writes landing in the volume, stats, pause/resume, and a stop
//! that leaves no container and no mount behind. Skipped (with a printed
//! reason) when not root or when runsc is not installed.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{init_exec, make_layer};
use dwell_testkit::skip::runsc_path;
use dwell_testkit::{agent_bin, has_root, has_runsc, skip};

use dwell_runtime::gvisor::{rootfs, state_file, GvisorOptions, GvisorRuntime};
use dwell_runtime::{
    NetworkMode, Observed, Resources, RootfsSpec, Runtime, SandboxConfig, Started,
};

/// Skip (printing why) unless root and runsc are here.
fn cannot_run() -> bool {
    !(has_root("runsc, mounts, cgroups") && has_runsc())
}

/// One sandbox under its own runsc root; stopped and removed on drop, even
/// when the test fails.
struct Sandbox {
    rt: GvisorRuntime,
    config: SandboxConfig,
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new(name: &str) -> Sandbox {
        Sandbox::with_agent(name, PathBuf::from(env!("CARGO_BIN_EXE_dwell-ns-testinit")))
    }

    fn with_agent(name: &str, agent: PathBuf) -> Sandbox {
        Sandbox::with_runsc(name, agent, runsc_path())
    }

    /// With `runsc` as the runsc executable (a wrapper that injects faults).
    fn with_runsc(name: &str, agent: PathBuf, runsc: PathBuf) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("dwell-gv-test-")
            .tempdir()
            .unwrap();
        let layer = dir.path().join("layer");
        make_layer(&layer);
        let mut opts = GvisorOptions::new(dir.path().join("runsc"));
        opts.runsc = runsc;
        opts.cgroup_parent = format!("dwell-gvtest-{}", std::process::id());
        let config = SandboxConfig {
            id: format!("{name}-{}", std::process::id()),
            hostname: format!("gv-{name}"),
            rootfs: RootfsSpec {
                layers: vec![layer],
                host_dirs: vec![PathBuf::from("/usr")],
                upper_root: dir.path().join("volume"),
            },
            resources: Resources {
                vcpus: 1.0,
                memory_bytes: 256 << 20,
                pids: 256,
            },
            env: BTreeMap::from([("DWELL_TEST".to_string(), "gv".to_string())]),
            network: NetworkMode::None,
            state_dir: dir.path().join("state"),
            agent_binary: agent,
            agent_key: None,
            grants: Default::default(),
            id_map: None,
            private_nets: Vec::new(),
            egress: Default::default(),
            binds: Vec::new(),
        };
        Sandbox {
            rt: GvisorRuntime::new(opts).unwrap(),
            config,
            dir,
        }
    }

    /// Run a shell command through the test init: (exit code, output).
    fn exec(&self, cmd: &str) -> (i32, String) {
        let sock = self.config.state_dir.join("run/agent.sock");
        init_exec(&sock, cmd, Duration::from_secs(30))
    }

    fn ok(&self, cmd: &str) -> String {
        let (code, out) = self.exec(cmd);
        assert_eq!(code, 0, "{cmd:?} failed with {code}: {out}");
        out.trim().to_string()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = self.rt.stop(&self.config) {
            eprintln!("cleanup: stopping {} failed: {e}", self.config.id);
        }
        rootfs::unmount(&dwell_runtime::host::Kernel, &self.config);
        // The cgroup parent runsc created for this run (empty by now).
        let parent = &self.rt.options().cgroup_parent;
        for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let _ = std::fs::remove_dir(Path::new(base).join(parent));
        }
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir(e.path().join(parent));
            }
        }
        let _ = &self.dir;
    }
}

#[test]
fn lifecycle() {
    if cannot_run() {
        return;
    }
    let sb = Sandbox::new("life");
    let rt = &sb.rt;
    let started = rt
        .start(&sb.config)
        .unwrap_or_else(|e| panic!("start: {e}"));
    assert!(started.pid > 0);
    assert_eq!(rt.observe(&sb.config).unwrap(), Observed::Running);

    // The agent runs in gVisor's kernel, with the sandbox's identity.
    assert_eq!(sb.ok("hostname"), "gv-life");
    assert_eq!(sb.ok("echo $DWELL_TEST"), "gv");
    let dmesg = sb.ok("cat /proc/version");
    assert!(dmesg.contains("4.4.0"), "not the gVisor kernel: {dmesg}");
    // Writes land in the volume, on the host.
    sb.ok("echo persisted > /root/f && mkdir -p /usr/local/gvtest && touch /usr/local/gvtest/x");
    let vol = &sb.config.rootfs.upper_root;
    assert_eq!(
        std::fs::read_to_string(vol.join("root/upper/root/f")).unwrap(),
        "persisted\n"
    );
    assert!(vol.join("host/usr/upper/local/gvtest/x").exists());
    assert!(!Path::new("/usr/local/gvtest").exists());
    // Only a loopback interface.
    let ifaces = sb.ok("cat /proc/net/dev");
    assert!(!ifaces.contains("eth"), "{ifaces}");

    let stats = rt.stats(&sb.config).unwrap();
    assert!(stats.memory_bytes > 0, "{stats:?}");

    assert!(rt.list_host().unwrap().contains(&sb.config.id));

    // A live sandbox is observed from runsc's state file, without a runsc
    // call (and only then: a stopped one is asked of runsc).
    let root = &rt.options().root;
    let from_file = || state_file::live_status(root, &sb.config.id);
    assert_eq!(from_file().as_deref(), Some("running"));
    rt.pause(&sb.config).unwrap();
    assert_eq!(rt.observe(&sb.config).unwrap(), Observed::Paused);
    assert_eq!(from_file().as_deref(), Some("paused"));
    rt.resume(&sb.config).unwrap();
    assert_eq!(rt.observe(&sb.config).unwrap(), Observed::Running);
    assert_eq!(from_file().as_deref(), Some("running"));
    assert_eq!(sb.ok("cat /root/f"), "persisted");
    // Another id whose state file names this sandbox's process (a stale
    // file whose pid was reused) is not live: the process boots this id.
    let id = &sb.config.id;
    let other = root.join("gv-other_sandbox:gv-other.state");
    std::fs::copy(root.join(format!("{id}_sandbox:{id}.state")), &other).unwrap();
    let copied = state_file::live_status(root, "gv-other");
    std::fs::remove_file(&other).unwrap();
    assert_eq!(copied, None);

    rt.stop(&sb.config).unwrap();
    assert_eq!(from_file(), None);
    assert_eq!(rt.observe(&sb.config).unwrap(), Observed::Stopped);
    assert!(!rt.list_host().unwrap().contains(&sb.config.id));
    assert!(rootfs::mounts_below(&sb.config.state_dir).is_empty());
    // Idempotent.
    rt.stop(&sb.config).unwrap();

    // Restart on the same volume: the file is still there.
    rt.start(&sb.config)
        .unwrap_or_else(|e| panic!("restart: {e}"));
    assert_eq!(sb.ok("cat /root/f"), "persisted");
}

#[test]
fn failed_start_leaves_nothing() {
    if cannot_run() {
        return;
    }
    let sb = Sandbox::new("fail");
    let mut config = sb.config.clone();
    // An agent that exits at once: the start must fail and clean up.
    config.agent_binary = PathBuf::from("/usr/bin/true");
    let err = sb.rt.start(&config).unwrap_err().to_string();
    assert!(err.contains("agent"), "{err}");
    assert_eq!(sb.rt.observe(&config).unwrap(), Observed::Stopped);
    assert!(!sb.rt.list_host().unwrap().contains(&config.id));
    assert!(rootfs::mounts_below(&config.state_dir).is_empty());
}

/// The static dwell-agent built by `PROFILE=dev scripts/build.sh` (or
/// `DWELL_AGENT`); panics with that command when it is not built.
fn real_agent() -> PathBuf {
    agent_bin().canonicalize().unwrap()
}

/// A started sandbox running the real static agent, and a runtime to talk
/// to it; `None` (with the reason printed) where runsc or the agent is
/// missing.
fn real_agent_sandbox(name: &str) -> Option<(Sandbox, Started, tokio::runtime::Runtime)> {
    if cannot_run() {
        return None;
    }
    let agent = real_agent();
    let sb = Sandbox::with_agent(name, agent);
    let started = sb
        .rt
        .start(&sb.config)
        .unwrap_or_else(|e| panic!("start: {e}"));
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Some((sb, started, tokio))
}

#[test]
fn real_agent_over_the_protocol() {
    let Some((sb, started, tokio)) = real_agent_sandbox("agent") else {
        return;
    };
    let run = |cmd: &str| {
        tokio.block_on(async {
            let client = dwell_proto::AgentClient::connect_unix(&started.agent_socket)
                .await
                .expect("connect to the agent");
            client
                .exec(dwell_proto::ExecRequest::shell(cmd))
                .await
                .expect("exec")
                .output(1 << 24)
                .await
                .expect("exec output")
        })
    };
    let out = run("hostname; cat /proc/version");
    assert_eq!(out.status.code, Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("gv-agent\n"), "{text}");
    assert!(text.contains("4.4.0"), "not the gVisor kernel: {text}");

    sb.rt.pause(&sb.config).unwrap();
    sb.rt.resume(&sb.config).unwrap();
    let out = run("echo after-resume");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "after-resume\n");

    sb.rt.stop(&sb.config).unwrap();
    assert!(!sb.rt.list_host().unwrap().contains(&sb.config.id));
    assert!(rootfs::mounts_below(&sb.config.state_dir).is_empty());
}

/// A stand-in agent for hibernation: counts in memory (and into
/// /root/n), answers each connection with the count, and follows the
/// hibernation contract (SIGUSR1: close the listener and remove the
/// socket; SIGUSR2: listen again).
const COUNTER_AGENT: &str = r#"#!/usr/bin/python3
import os, signal, socket, sys, time
path = sys.argv[2]
state = {"l": None}
def listen(*_):
    try: os.unlink(path)
    except FileNotFoundError: pass
    l = socket.socket(socket.AF_UNIX)
    l.bind(path); l.listen(8); l.setblocking(False)
    state["l"] = l
def unlisten(*_):
    if state["l"] is not None:
        state["l"].close(); state["l"] = None
    try: os.unlink(path)
    except FileNotFoundError: pass
signal.signal(signal.SIGUSR1, unlisten)
signal.signal(signal.SIGUSR2, listen)
listen()
n = 0
while True:
    n += 1
    with open("/root/n", "w") as f: f.write(str(n))
    l = state["l"]
    if l is not None:
        try:
            c, _ = l.accept()
            c.sendall(b"%d\n" % n); c.close()
        except OSError:
            pass  # no connection waiting, or the peer left already
    time.sleep(0.02)
"#;

/// [`COUNTER_AGENT`] written to `scratch`, or `None` (with the reason
/// printed) where the test cannot run.
fn counter_agent(scratch: &Path) -> Option<PathBuf> {
    if cannot_run() {
        return None;
    }
    if !Path::new("/usr/bin/python3").is_file() {
        skip("the counter agent needs /usr/bin/python3 on the host");
        return None;
    }
    use std::os::unix::fs::PermissionsExt;
    let agent = scratch.join("counter-agent");
    std::fs::write(&agent, COUNTER_AGENT).unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(agent)
}

/// The count a [`COUNTER_AGENT`] sandbox reports on its socket.
fn agent_count(sb: &Sandbox) -> u64 {
    let mut s = UnixStream::connect(sb.config.state_dir.join("run/agent.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.trim().parse().unwrap()
}

#[test]
fn hibernate_and_restore_continue_the_counter() {
    let scratch = tempfile::tempdir().unwrap();
    let Some(agent) = counter_agent(scratch.path()) else {
        return;
    };
    let sb = Sandbox::with_agent("hib", agent);
    let rt = &sb.rt;
    let count = || agent_count(&sb);
    // The counter truncates the file before each write: the file of a
    // hibernated sandbox is empty when the checkpoint fell in between (and
    // stays so until the restore), so `None` is a state, not a failure.
    let on_disk = || -> Option<u64> {
        let f = sb.config.rootfs.upper_root.join("root/upper/root/n");
        std::fs::read_to_string(&f).unwrap().trim().parse().ok()
    };
    rt.start(&sb.config)
        .unwrap_or_else(|e| panic!("start: {e}"));
    std::thread::sleep(Duration::from_millis(300));
    let mut last = count();
    assert!(last > 0);
    let image = sb.dir.path().join("image");
    for round in 0..5 {
        rt.hibernate(&sb.config, &image)
            .unwrap_or_else(|e| panic!("hibernate {round}: {e}"));
        // Nothing of the sandbox runs and nothing is mounted.
        assert_eq!(rt.observe(&sb.config).unwrap(), Observed::Stopped);
        assert!(!rt.list_host().unwrap().contains(&sb.config.id));
        assert!(rootfs::mounts_below(&sb.config.state_dir).is_empty());
        assert!(image.join("checkpoint.img").is_file());
        let frozen = on_disk();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(on_disk(), frozen, "the counter ran on while hibernated");
        // The count the agent saw last before the hibernation is a floor
        // of the saved one (on disk, or one step behind when the write was
        // cut off).
        let frozen = frozen.unwrap_or(last);
        assert!(frozen >= last);

        rt.restore(&sb.config, &image)
            .unwrap_or_else(|e| panic!("restore {round}: {e}"));
        assert_eq!(rt.observe(&sb.config).unwrap(), Observed::Running);
        let now = count();
        // Continues from the saved count (a fresh start would be at 1).
        assert!(
            now >= frozen && now < frozen + 200,
            "round {round}: {now} after hibernating at {frozen}"
        );
        last = now;
    }
    rt.stop(&sb.config).unwrap();
    assert!(!rt.list_host().unwrap().contains(&sb.config.id));
}

/// A `runsc delete` that fails after a complete checkpoint (twice: the
/// delete and its retry) does not lose the saved memory: hibernate
/// succeeds, and the restore clears what runsc kept of the sandbox and
/// brings its processes back where they stopped.
#[test]
fn a_failed_delete_after_the_checkpoint_keeps_the_saved_memory() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = tempfile::tempdir().unwrap();
    let Some(agent) = counter_agent(scratch.path()) else {
        return;
    };
    // Fails as many `runsc delete` calls as the file says, then runs runsc.
    let fails = scratch.path().join("deletes-to-fail");
    let wrapper = scratch.path().join("runsc-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = delete ] && [ -s {f} ] && [ \"$(cat {f})\" -gt 0 ]; then\n    echo $(( $(cat {f}) - 1 )) > {f}\n    echo 'injected: runsc delete failed' >&2\n    exit 1\n  fi\ndone\nexec {runsc} \"$@\"\n",
            runsc = runsc_path().display(),
            f = fails.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sb = Sandbox::with_runsc("hib-del", agent, wrapper);
    let rt = &sb.rt;
    let count = || agent_count(&sb);
    rt.start(&sb.config)
        .unwrap_or_else(|e| panic!("start: {e}"));
    std::thread::sleep(Duration::from_millis(300));
    let before = count();
    let image = sb.dir.path().join("image");
    std::fs::write(&fails, "2").unwrap();
    rt.hibernate(&sb.config, &image)
        .unwrap_or_else(|e| panic!("hibernate with a failing delete: {e}"));
    assert_eq!(
        std::fs::read_to_string(&fails).unwrap().trim(),
        "0",
        "both deletes were tried"
    );
    assert!(
        image.join("checkpoint.img").is_file(),
        "the saved memory was lost"
    );
    assert_eq!(rt.observe(&sb.config).unwrap(), Observed::Stopped);
    assert!(rootfs::mounts_below(&sb.config.state_dir).is_empty());
    rt.restore(&sb.config, &image)
        .unwrap_or_else(|e| panic!("restore after a failed delete: {e}"));
    let now = count();
    assert!(
        now >= before && now < before + 200,
        "{now} after hibernating at {before}: the processes did not continue"
    );
    rt.stop(&sb.config).unwrap();
    assert!(!rt.list_host().unwrap().contains(&sb.config.id));
}

/// The real agent through hibernate and restore: it gives up its host
/// socket on SIGUSR1 and takes it back on SIGUSR2, and a background process
/// started through it continues counting where it stopped.
#[test]
fn real_agent_hibernates_and_resumes() {
    let Some((sb, started, tokio)) = real_agent_sandbox("hib-real") else {
        return;
    };
    let connect = || async {
        dwell_proto::AgentClient::connect_unix(&started.agent_socket)
            .await
            .expect("connect to the agent")
    };
    let run = |cmd: &str| {
        tokio.block_on(async {
            let req = dwell_proto::ExecRequest::shell(cmd);
            let out = connect()
                .await
                .exec(req)
                .await
                .expect("exec")
                .output(1 << 24)
                .await
                .expect("output");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    tokio.block_on(async {
        let mut req = dwell_proto::ExecRequest::shell(
            "i=0; while true; do i=$((i+1)); echo $i > /root/n; sleep 0.05; done",
        );
        req.background = true;
        connect().await.exec(req).await.expect("start the counter");
    });
    // The shell truncates /root/n before each write, so a read can land in
    // between and find it empty: read again then.
    let number = || -> u64 {
        for _ in 0..50 {
            if let Ok(n) = run("cat /root/n").trim().parse() {
                return n;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("/root/n never held a number");
    };
    std::thread::sleep(Duration::from_millis(500));
    let image = sb.dir.path().join("image");
    let mut last = number();
    for round in 0..2 {
        sb.rt
            .hibernate(&sb.config, &image)
            .unwrap_or_else(|e| panic!("hibernate {round}: {e}"));
        assert_eq!(sb.rt.observe(&sb.config).unwrap(), Observed::Stopped);
        sb.rt
            .restore(&sb.config, &image)
            .unwrap_or_else(|e| panic!("restore {round}: {e}"));
        let now = number();
        assert!(
            now >= last && now < last + 200,
            "round {round}: {now} after {last}"
        );
        std::thread::sleep(Duration::from_millis(300));
        let later = number();
        assert!(
            later > now,
            "round {round}: the counter did not continue ({now} -> {later})"
        );
        last = later;
    }
    sb.rt.stop(&sb.config).unwrap();
    assert!(!sb.rt.list_host().unwrap().contains(&sb.config.id));
}

/// A hibernation that stops short of the checkpoint (here: the image dir
/// cannot be made) after the agent was asked to stop listening, as the
/// daemon asks it, leaves a sandbox whose agent listens again.
#[test]
fn a_hibernation_that_fails_before_the_checkpoint_keeps_the_agent_reachable() {
    let Some((sb, started, tokio)) = real_agent_sandbox("hib-abort") else {
        return;
    };
    let sock = started.agent_socket.clone();
    tokio.block_on(async {
        let c = dwell_proto::AgentClient::connect_unix(&sock)
            .await
            .expect("connect to the agent");
        c.unlisten().await.expect("unlisten");
    });
    let t = std::time::Instant::now();
    while sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the agent kept its socket"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // A regular file where the image dir's parent should be.
    let blocker = sb.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let err = sb
        .rt
        .hibernate(&sb.config, &blocker.join("image"))
        .expect_err("hibernate into a path under a file");
    assert!(err.to_string().contains("image dir"), "{err}");
    assert_eq!(sb.rt.observe(&sb.config).unwrap(), Observed::Running);
    tokio.block_on(async {
        let c = dwell_proto::AgentClient::connect_unix(&sock)
            .await
            .expect("the agent listens again after the failed hibernation");
        c.health().await.expect("health");
    });
    sb.rt.stop(&sb.config).unwrap();
}
