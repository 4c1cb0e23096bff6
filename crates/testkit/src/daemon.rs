//! A real `dwell serve` with its own data dir, socket and cgroup parent,
//! driven through the real `dwell` binary as a user would.
//!
//! Dropping a [`Daemon`] removes every sandbox it made (restarting the
//! daemon first if a test killed it), stops the daemon, and checks that no
//! mount, loop device or cgroup of it is left behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::http::wait_listening;
use crate::process::{free_port, output_within, tail};
use crate::skip::{has_root, has_runsc};

/// The target directory of the running test binary (it runs from
/// `target/<profile>/deps/`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .expect("a test binary under target/<profile>/deps")
        .to_path_buf()
}

/// The `dwell` binary cargo built for the running integration test:
/// `DWELL_BIN`, or `dwell` beside the test's `deps/` directory (cargo
/// builds a package's binaries before its integration tests).
pub fn dwell_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DWELL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .ancestors()
        .nth(2)
        .expect("a test binary under target/<profile>/deps")
        .join("dwell");
    assert!(
        bin.is_file(),
        "no dwell binary at {}: run the test with `cargo test -p dwell` (which builds it) or set DWELL_BIN",
        bin.display()
    );
    bin
}

/// The static agent: `DWELL_AGENT`, or where `scripts/build.sh` builds it
/// (`target/<triple>/debug/dwell-agent`; the copy next to the dwell binary
/// is overwritten by a dynamic build whenever cargo builds the workspace).
/// Panics with the command that builds it when there is none.
pub fn agent_bin() -> PathBuf {
    if let Ok(p) = std::env::var("DWELL_AGENT") {
        return PathBuf::from(p);
    }
    let target = target_dir();
    let found = std::fs::read_dir(&target)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("debug/dwell-agent"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "no static dwell-agent under {}/<triple>/debug: build it with `PROFILE=dev scripts/build.sh` (scripts/test.sh does) or set DWELL_AGENT",
            target.display()
        )
    })
}

/// Whether this process can run a daemon with namespace sandboxes (root);
/// prints why not.
pub fn can_run() -> bool {
    has_root("namespaces, cgroups, loop devices")
}

/// Whether gVisor sandboxes can run here (root and runsc); prints why not.
pub fn can_run_gvisor() -> bool {
    can_run() && has_runsc()
}

/// The isolation the daemon gives sandboxes created without
/// `--isolation`: `DWELL_TEST_ISOLATION` (`namespace` or `gvisor`), so the
/// same end-to-end tests run against either runtime.
pub fn isolation() -> String {
    std::env::var("DWELL_TEST_ISOLATION").unwrap_or_else(|_| "namespace".into())
}

/// The isolations every host-boundary test runs on: `namespace` always,
/// `gvisor` where this host has runsc (a skip is printed otherwise).
pub fn runtimes() -> Vec<&'static str> {
    let mut v = vec!["namespace"];
    if can_run_gvisor() {
        v.push("gvisor");
    }
    v
}

/// The addresses of a daemon's E2B listeners (see [`Daemon::start_e2b`]).
#[derive(Debug, Clone)]
pub struct E2bListeners {
    /// The E2B control plane (`--e2b-listen`).
    pub api: String,
    /// The envd data plane (`--e2b-sandbox-listen`).
    pub envd: String,
}

/// A running `dwell serve` of one test (see the module docs).
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub data: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// Extra environment of the daemon (e.g. DWELL_CRASH_AT).
    pub env: Vec<(String, String)>,
    /// The agent binary the daemon installs (`--agent`).
    pub agent: PathBuf,
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Daemon {
        Self::start_with_agent(args, agent_bin())
    }

    /// A daemon whose sandboxes run `agent` (another agent version).
    pub fn start_with_agent(args: &[&str], agent: PathBuf) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("dwell-e2e-")
            .tempdir_in("/tmp")
            .unwrap();
        let mut d = Daemon {
            socket: dir.path().join("s.sock"),
            data: dir.path().join("data"),
            dir,
            child: None,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            agent,
        };
        d.spawn();
        d
    }

    /// A daemon with both E2B listeners (`--e2b-listen` and
    /// `--e2b-sandbox-listen`, on free ports) and `extra` flags, once both
    /// accept connections.
    pub fn start_e2b(extra: &[&str]) -> (Daemon, E2bListeners) {
        let api = format!("127.0.0.1:{}", free_port());
        let envd = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--e2b-listen", &api, "--e2b-sandbox-listen", &envd];
        args.extend_from_slice(extra);
        let d = Daemon::start_with(&args);
        wait_listening(&api, 20);
        wait_listening(&envd, 20);
        (d, E2bListeners { api, envd })
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    /// Starts the daemon and waits for its socket; why not, if it did not
    /// come up (the drop of a failed test must not panic again).
    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let child = Command::new(dwell_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--agent")
            .arg(&self.agent)
            .arg("--default-isolation")
            .arg(isolation())
            .args(self.pool_args())
            .args(&self.extra_args)
            .env("DWELL_LOG", "debug")
            // Tests pull only from registries they start on loopback: a
            // reference to anywhere else fails at once, without traffic.
            .env("DWELL_ALLOWED_REGISTRIES", "loopback")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start dwell serve: {e}"))?;
        self.child = Some(child);
        // Startup opens the store, the object store and recovers sandboxes;
        // on a loaded 2-core CI machine that has taken over 20 s. A daemon
        // that exits fails at once instead of waiting out the limit.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(90) {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "daemon exited ({status}) before it listened; log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Err(format!(
            "daemon did not come up in 90 s (killed); log:\n{}",
            self.log()
        ))
    }

    /// The gVisor warm pool (2 sandboxes by default) costs every daemon's
    /// start two runsc boots: off unless the test asks for it or
    /// DWELL_GVISOR_POOL says otherwise. With gVisor as the tested isolation
    /// it is on, for the memory [`Daemon::create`] gives, so that the suite
    /// runs on pooled sandboxes.
    fn pool_args(&self) -> Vec<&'static str> {
        let asked = self
            .extra_args
            .iter()
            .any(|a| a.starts_with("--gvisor-pool"))
            || std::env::var_os("DWELL_GVISOR_POOL").is_some();
        if asked {
            vec![]
        } else if isolation() == "gvisor" {
            vec!["--gvisor-pool-memory", "256M"]
        } else {
            vec!["--gvisor-pool", "0"]
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL the daemon (sandboxes must survive).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Replace the extra `serve` flags of the next (re)start.
    pub fn set_args(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|s| s.to_string()).collect();
    }

    /// Start it again on the same data dir.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(dwell_bin());
        c.args(args)
            .env("DWELL_SOCKET", &self.socket)
            .env_remove("DWELL_HOST")
            .env_remove("DWELL_AS_TENANT")
            .stdin(Stdio::null());
        c
    }

    /// Run `dwell ARGS`; returns the output whatever the exit code. A
    /// command that hangs is killed and fails the test (with the daemon's
    /// log) instead of holding the suite until CI gives up.
    pub fn run(&self, args: &[&str]) -> Output {
        output_within(self.cmd(args), &format!("dwell {args:?}"), || {
            tail(&self.log(), 30)
        })
    }

    /// Run `dwell ARGS`, which must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "dwell {args:?} failed with {:?}\nstdout: {}\nstderr: {}\ndaemon log tail:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `dwell exec SB -- sh -c SCRIPT`, must succeed; returns stdout.
    pub fn sh(&self, sb: &str, script: &str) -> String {
        self.ok(&["exec", sb, "--", "sh", "-c", script])
    }

    /// Create a small sandbox with extra flags; returns its id.
    pub fn create(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "create", "--name", name, "--memory", "256M", "--disk", "512M", "--json",
        ];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    pub fn inspect(&self, sb: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["inspect", sb, "--json"])).unwrap()
    }

    /// Creates a tenant; returns its first API key.
    pub fn tenant_key(&self, name: &str) -> String {
        self.ok(&["tenant", "create", name])
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_string()
    }

    /// The admin API key the daemon wrote (it does once a TCP listener is
    /// configured).
    pub fn admin_key(&self) -> String {
        std::fs::read_to_string(self.data.join("admin.key"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Host pid of a sandbox's PID 1 (of a gVisor sandbox: its runsc
    /// sandbox process).
    pub fn host_pid(&self, id: &str) -> i32 {
        let dir = self.data.join("sandboxes").join(id);
        let s = std::fs::read_to_string(dir.join("pid"))
            .or_else(|_| std::fs::read_to_string(dir.join("runsc.pid")))
            .unwrap();
        s.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// A sandbox's `network.json` (its addresses, veth and table).
    pub fn network(&self, id: &str) -> serde_json::Value {
        let path = self.data.join("sandboxes").join(id).join("network.json");
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&raw).unwrap()
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Wait until the daemon process has exited (a crash point fired).
    pub fn wait_exit(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failing test shows what the daemon said (and whether it had
        // died) before the cleanup below restarts it and its dir goes.
        if std::thread::panicking() {
            let exited = match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => format!(" (it had exited: {status})"),
                _ => String::new(),
            };
            eprintln!(
                "--- the daemon's log, last 60 lines{exited} ---\n{}\n--- end of the daemon's log ---",
                tail(&self.log(), 60)
            );
        }
        self.env.clear();
        if !self.alive() {
            if let Err(e) = self.try_spawn() {
                // Nothing to clean up through: say so (a second panic
                // while unwinding would abort the whole test binary).
                eprintln!("cannot restart the daemon to clean up: {e}");
                if !std::thread::panicking() {
                    panic!("cannot restart the daemon to clean up: {e}");
                }
                return;
            }
        }
        // Every tenant's sandboxes, not only the default tenant's: a test
        // that failed midway has not removed those it made as others.
        let mut tenants = vec!["default".to_string()];
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(
            &self.run(&["tenant", "ls", "--json"]).stdout,
        ) {
            let names = v.as_array().into_iter().flatten();
            tenants.extend(names.filter_map(|t| t["name"].as_str().map(String::from)));
        }
        for t in &tenants {
            let as_t = |args: &[&str]| {
                let mut c = self.cmd(args);
                c.env("DWELL_AS_TENANT", t);
                output_within(c, &format!("dwell {args:?} as {t}"), || {
                    tail(&self.log(), 30)
                })
            };
            let ids = as_t(&["ls", "-q"]);
            for id in String::from_utf8_lossy(&ids.stdout).lines() {
                let _ = as_t(&["rm", "-f", id]);
            }
        }
        let mut hung = None;
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) of our own child, not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            // A daemon that does not stop is killed, not waited for
            // until CI's limit, and fails the test.
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(c.try_wait(), Ok(None)) {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    hung = Some("the daemon did not stop within 60 s of SIGTERM (killed)");
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.wait();
        }
        let mut leftovers = leftovers(&self.data);
        leftovers.extend(hung.map(String::from));
        leftovers.extend(cgroup_leftovers(&self.log()));
        if !leftovers.is_empty() && !std::thread::panicking() {
            panic!("the daemon left things behind: {leftovers:?}");
        }
    }
}

/// The cgroup parents (namespace and gVisor) of the daemon whose log this
/// is, in any hierarchy, that still exist after it stopped.
pub fn cgroup_leftovers(log: &str) -> Vec<String> {
    let Some(parent) = log
        .split("cgroup parent ")
        .nth(1)
        .and_then(|s| s.split(')').next())
    else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for name in [parent.to_string(), format!("{parent}-gvisor")] {
        let root = Path::new("/sys/fs/cgroup");
        let mut dirs = vec![root.join(&name)];
        if let Ok(rd) = std::fs::read_dir(root) {
            dirs.extend(rd.flatten().map(|e| e.path().join(&name)));
        }
        found.extend(
            dirs.into_iter()
                .filter(|d| d.is_dir())
                .map(|d| format!("cgroup: {}", d.display())),
        );
    }
    found
}

/// Mounts and loop devices under `data` that still exist.
pub fn leftovers(data: &Path) -> Vec<String> {
    let data = data.to_string_lossy().to_string();
    let mut found = Vec::new();
    if let Ok(m) = std::fs::read_to_string("/proc/self/mountinfo") {
        for l in m.lines() {
            if l.contains(&data) {
                found.push(format!("mount: {l}"));
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
                if b.contains(&data) {
                    found.push(format!(
                        "loop: {} -> {}",
                        e.file_name().to_string_lossy(),
                        b.trim()
                    ));
                }
            }
        }
    }
    found
}
