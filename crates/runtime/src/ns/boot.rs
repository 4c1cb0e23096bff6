//! The boot process: a fresh, single-threaded exec of the daemon binary
//! (`dwell __ns-boot <state_dir>`) that builds one sandbox and exits, so the
//! sandbox is reparented away from the daemon and outlives it.
//!
//! It joins the sandbox's cgroups, clones the child into new mount, pid,
//! uts, ipc, net and cgroup namespaces, sets up the host side (pid file,
//! network), lets the child exec the agent and waits for the agent's
//! socket. On any failure it kills the child and removes what it made.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cgroup::{Cgroup, HostCgroups, SandboxCgroup};
use super::{child, layout, network, pidfile, stop, sys};
use crate::{Error, NetworkMode, Result, SandboxConfig};

/// Runtime options the boot process needs besides the sandbox config
/// (stored as `runtime.json` in the state dir).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BootOptions {
    pub cgroup_parent: String,
    pub nat_pool: String,
    /// How long to wait for the agent's socket, in milliseconds.
    pub agent_timeout_ms: u64,
}

pub const BOOT_OPTIONS_FILE: &str = "runtime.json";

const NAMESPACES: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP;

/// Entry point of the boot process. Returns the exit code; errors are
/// printed to stderr for the daemon to show.
pub fn boot_main(state_dir: &Path) -> i32 {
    match boot(state_dir) {
        Ok(pid) => {
            println!("{pid}");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        context: format!("reading {}", path.display()),
        source: e,
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Other(format!("parsing {}: {e}", path.display())))
}

/// Undo everything on failure unless defused.
struct Guard<'a> {
    config: &'a SandboxConfig,
    host: &'a HostCgroups,
    cg: &'a SandboxCgroup,
    child: Option<i32>,
    armed: bool,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.child {
            let _ = sys::kill(pid, libc::SIGKILL);
            let _ = sys::waitpid(pid, 0);
        }
        // Leave the cgroups ourselves before killing what is in them.
        self.host.move_to_root(std::process::id() as i32);
        let _ = stop::kill_and_remove(self.cg, stop::KILL_TIMEOUT);
        if self.config.network == NetworkMode::Nat {
            network::teardown(&self.config.id);
        }
        let _ = std::fs::remove_file(layout::state_file(self.config, layout::PID_FILE));
        let _ = std::fs::remove_file(layout::state_file(self.config, layout::NETWORK_FILE));
    }
}

fn boot(state_dir: &Path) -> Result<i32> {
    // Own session: signals for the daemon's process group miss us.
    // SAFETY: plain syscall; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
    let config: SandboxConfig = read_json(&state_dir.join(layout::CONFIG_FILE))?;
    let opts: BootOptions = read_json(&state_dir.join(BOOT_OPTIONS_FILE))?;
    layout::validate(&config)?;
    if config.network == NetworkMode::Nat {
        network::check_forwarding()?;
    }
    let host = HostCgroups::detect()?;
    let cg = SandboxCgroup::new(&host, &opts.cgroup_parent, &config.id);
    if cg.exists() && !cg.procs()?.is_empty() {
        return Err(Error::Start(format!(
            "sandbox {} already has running processes on this host; stop it first",
            config.id
        )));
    }
    let mut guard = Guard {
        config: &config,
        host: &host,
        cg: &cg,
        child: None,
        armed: true,
    };
    // A socket left by an earlier run would look like a ready agent.
    let _ = std::fs::remove_file(layout::state_file(&config, layout::AGENT_SOCKET));
    cg.create(&config.resources)?;
    cg.add_process(std::process::id() as i32)?;

    let (go_r, mut go_w) = sys::pipe().map_err(|e| io_err("creating a pipe", e))?;
    let (mut err_r, err_w) = sys::pipe().map_err(|e| io_err("creating a pipe", e))?;
    // SAFETY: the boot process is single-threaded (fresh exec, no threads
    // started), so a fork-like clone is sound.
    let pid = unsafe { sys::clone_fork(NAMESPACES) }
        .map_err(|e| io_err("clone into new namespaces", e))?;
    if pid == 0 {
        drop(go_w);
        drop(err_r);
        child::run(&config, go_r, err_w);
    }
    guard.child = Some(pid);
    drop(go_r);
    drop(err_w);

    if config.network == NetworkMode::Nat {
        network::setup(&config.id, pid, &opts.nat_pool, state_dir)?;
    }
    pidfile::write(&layout::state_file(&config, layout::PID_FILE), pid)?;
    // A failed write means the child already died; its message follows.
    let _ = go_w.write_all(b"g");
    drop(go_w);

    let mut msg = String::new();
    let _ = err_r.read_to_string(&mut msg);
    if !msg.is_empty() {
        return Err(Error::Start(msg));
    }
    wait_for_socket(&config, pid, Duration::from_millis(opts.agent_timeout_ms))?;
    guard.armed = false;
    Ok(pid)
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::Io {
        context: what.into(),
        source: e,
    }
}

/// The tail of the sandbox's console log, for error messages.
pub fn console_tail(config: &SandboxConfig) -> String {
    let log = std::fs::read_to_string(layout::state_file(config, layout::CONSOLE_LOG))
        .unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(10).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

fn wait_for_socket(config: &SandboxConfig, pid: i32, timeout: Duration) -> Result<()> {
    let sock = layout::state_file(config, layout::AGENT_SOCKET);
    let deadline = Instant::now() + timeout;
    loop {
        if sock.exists() {
            return Ok(());
        }
        if let Ok(Some(status)) = sys::waitpid(pid, libc::WNOHANG) {
            return Err(Error::Start(format!(
                "the agent exited (wait status {status:#x}) before creating {}; its output:\n{}",
                sock.display(),
                console_tail(config)
            )));
        }
        if Instant::now() >= deadline {
            return Err(Error::Start(format!(
                "the agent did not create {} within {timeout:?}; its output:\n{}",
                sock.display(),
                console_tail(config)
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
