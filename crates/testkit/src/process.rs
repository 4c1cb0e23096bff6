//! Child processes a test cannot hang on (every wait is bounded, a hung
//! child is killed and the test fails naming it), polling with a deadline,
//! and what tests read of host processes.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one command of a test may run: `DWELL_TEST_CMD_TIMEOUT`
/// seconds, 300 by default.
pub fn command_deadline() -> Duration {
    let secs = std::env::var("DWELL_TEST_CMD_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

/// `cmd.output()`, but a command still running after
/// [`command_deadline`] is killed and the test panics, naming `what` and
/// printing `context()` (a daemon log tail, say).
pub fn output_within(mut cmd: Command, what: &str, context: impl FnOnce() -> String) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    wait_within(child, command_deadline(), what, context)
}

/// [`output_within`] for a child already started with piped stdout and
/// stderr (one whose stdin the test feeds, say), killed after `limit`.
pub fn wait_within(
    mut child: Child,
    limit: Duration,
    what: &str,
    context: impl FnOnce() -> String,
) -> Output {
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout piped")));
    let err = drain(Box::new(child.stderr.take().expect("stderr piped")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for a command") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still ran after {limit:?}: killed\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A child process killed (and reaped) when dropped, even when the test
/// fails.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Its exit status once it exits before `deadline`; `None` if it is
    /// still running then (it is killed when dropped).
    pub fn exit_by(&mut self, deadline: Instant) -> Option<std::process::ExitStatus> {
        loop {
            if let Some(s) = self.0.try_wait().expect("wait for a child") {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Poll until `f` is true or panic after `secs`.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Whether a host process runs (a zombie does not count: on hosts whose
/// init does not reap orphans promptly, a dead sandbox may linger as one).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// Host processes whose command line names `id` (a gVisor sandbox's
/// runsc sandbox and gofer processes do); zombies do not count.
pub fn host_processes_of(id: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(id) && pid_alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's
/// ephemeral range (`ip_local_port_range`) and never handed out twice in
/// this process. A port from the ephemeral range (what binding port 0
/// gives) can become the source port of any outgoing connection while
/// nobody listens on it, between the test choosing it and a daemon
/// (re)binding it after a restart: that daemon then cannot listen.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    // Ports from 10000 up to the ephemeral range (and below Kubernetes'
    // NodePorts, 30000-32767, which kube-proxy takes without binding
    // them), from a start of this process's own (test binaries and their
    // helpers run side by side).
    let (first, span) = (10_000, low.min(30_000).saturating_sub(10_000));
    if span >= 1000 {
        let start = std::process::id().wrapping_mul(7919) % span;
        for _ in 0..span {
            let p = first + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            if std::net::TcpListener::bind(("127.0.0.1", p as u16)).is_ok() {
                return p as u16;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A command's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
