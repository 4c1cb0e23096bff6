//! The nearest non-dwell equivalents of each operation: a fresh `bwrap`
//! sandbox, `nsenter` into a live namespace set, and the kernel's cgroup
//! freezers written by hand. Everything made here is undone on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{io, Error, Result};

/// `bwrap` arguments for a new sandbox (all namespaces, read-only /usr, own
/// /proc, /dev, /tmp) that runs `true`.
pub const BWRAP_TRUE: &[&str] = &[
    "--ro-bind",
    "/usr",
    "/usr",
    "--symlink",
    "usr/bin",
    "/bin",
    "--symlink",
    "usr/lib",
    "/lib",
    "--symlink",
    "usr/lib64",
    "/lib64",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
    "--unshare-all",
    "--die-with-parent",
    "true",
];

/// Run a command to completion with no output; fail unless it exits 0.
pub fn run_quiet(cmd: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|source| Error::Spawn {
            cmd: cmd.into(),
            source,
        })?;
    if !status.success() {
        return Err(Error::Command {
            cmd: format!("{cmd} {}", args.join(" ")),
            status: status.to_string(),
        });
    }
    Ok(())
}

/// A sleeping process in its own mount, UTS, IPC, network and PID
/// namespaces, to `nsenter` into. Killed on drop.
pub struct NsTarget {
    unshare: Child,
    /// The host pid of the sleeper (PID 1 of the new PID namespace).
    pub pid: u32,
}

impl NsTarget {
    pub fn start() -> Result<NsTarget> {
        let args = [
            "--fork",
            "--kill-child",
            "--pid",
            "--mount-proc",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "sleep",
            "1000000",
        ];
        let mut unshare = Command::new("unshare")
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: "unshare".into(),
                source,
            })?;
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
                return Ok(NsTarget { unshare, pid });
            }
            if Instant::now() > deadline {
                let _ = unshare.kill();
                let _ = unshare.wait();
                return Err(Error::Other(format!(
                    "`unshare {}` did not start its child within 5 s",
                    args.join(" ")
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// `nsenter -t PID -m -u -i -n -p true` arguments.
    pub fn nsenter_args(&self) -> Vec<String> {
        [
            "-t",
            &self.pid.to_string(),
            "-m",
            "-u",
            "-i",
            "-n",
            "-p",
            "true",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl Drop for NsTarget {
    fn drop(&mut self) {
        // --kill-child: the sleeper dies with unshare.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// Which freezer interface a [`Freezer`] drives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FreezerKind {
    /// cgroup v1 `freezer.state` (FROZEN / THAWED).
    V1,
    /// cgroup v2 `cgroup.freeze`, waiting for `frozen 1` in `cgroup.events`.
    V2,
}

/// A cgroup of our own holding one `sleep`, frozen and thawed by hand.
/// The process is killed and the cgroup removed on drop.
pub struct Freezer {
    kind: FreezerKind,
    dir: PathBuf,
    child: Option<Child>,
}

impl Freezer {
    /// Where the hierarchy is mounted, if this host has it.
    pub fn root(kind: FreezerKind) -> Option<&'static Path> {
        let (root, probe) = match kind {
            FreezerKind::V1 => ("/sys/fs/cgroup/freezer", "freezer.state"),
            FreezerKind::V2 => ("/sys/fs/cgroup/unified", "cgroup.procs"),
        };
        // The v1 root cgroup has no freezer.state; probe for the hierarchy.
        let p = Path::new(root);
        let mounted = match kind {
            FreezerKind::V1 => p.join("tasks").exists(),
            FreezerKind::V2 => p.join(probe).exists(),
        };
        mounted.then_some(p)
    }

    pub fn new(kind: FreezerKind) -> Result<Freezer> {
        let root = Freezer::root(kind)
            .ok_or_else(|| Error::Other(format!("this host has no {kind:?} freezer hierarchy")))?;
        let dir = root.join(format!("dwell-bench-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(io("cannot create the cgroup", &dir))?;
        let mut f = Freezer {
            kind,
            dir,
            child: None,
        };
        let child = Command::new("sleep")
            .arg("1000000")
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: "sleep".into(),
                source,
            })?;
        let pid = child.id();
        f.child = Some(child);
        let procs = f.dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(io("cannot write", &procs))?;
        Ok(f)
    }

    fn control(&self) -> (PathBuf, PathBuf) {
        match self.kind {
            FreezerKind::V1 => (
                self.dir.join("freezer.state"),
                self.dir.join("freezer.state"),
            ),
            FreezerKind::V2 => (
                self.dir.join("cgroup.freeze"),
                self.dir.join("cgroup.events"),
            ),
        }
    }

    /// Request the state and spin until the kernel reports it reached.
    pub fn set(&self, frozen: bool) -> Result<()> {
        let (ctl, state) = self.control();
        let (value, want) = match (self.kind, frozen) {
            (FreezerKind::V1, true) => ("FROZEN", "FROZEN"),
            (FreezerKind::V1, false) => ("THAWED", "THAWED"),
            (FreezerKind::V2, true) => ("1", "frozen 1"),
            (FreezerKind::V2, false) => ("0", "frozen 0"),
        };
        std::fs::write(&ctl, value).map_err(io("cannot write", &ctl))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = std::fs::read_to_string(&state).map_err(io("cannot read", &state))?;
            if s.lines().any(|l| l.trim() == want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Other(format!(
                    "{} did not reach {want:?} within 10 s",
                    self.dir.display()
                )));
            }
            std::thread::yield_now();
        }
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        let _ = self.set(false);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "dwell-bench: could not remove {}; rmdir it by hand",
            self.dir.display()
        );
    }
}

/// Time moving a fresh `sleep` into a new cgroup of `hierarchy` (a
/// directory under /sys/fs/cgroup) by writing its pid to `cgroup.procs`:
/// the step every container runtime pays once per start. Waits `gap`
/// between runs so each move is as cold as in a create loop.
pub fn cgroup_move(hierarchy: &str, n: usize, gap: Duration) -> Result<crate::stats::Samples> {
    let dir = Path::new("/sys/fs/cgroup")
        .join(hierarchy)
        .join(format!("dwell-bench-move-{}", std::process::id()));
    std::fs::create_dir(&dir).map_err(io("cannot create the cgroup", &dir))?;
    let guard = Freezer {
        kind: FreezerKind::V2,
        dir: dir.clone(),
        child: None,
    };
    let mut s = crate::stats::Samples::default();
    let procs = dir.join("cgroup.procs");
    for _ in 0..n {
        std::thread::sleep(gap);
        let mut child = Command::new("sleep")
            .arg("1000000")
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: "sleep".into(),
                source,
            })?;
        let t = Instant::now();
        let r = std::fs::write(&procs, child.id().to_string());
        let took = t.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        r.map_err(io("cannot write", &procs))?;
        s.push(took);
    }
    drop(guard);
    Ok(s)
}
