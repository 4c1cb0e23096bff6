//! The boot process: a fresh, single-threaded exec of the daemon binary
//! (`dwell __ns-boot <state_dir>`) that builds one sandbox and exits, so the
//! sandbox is reparented away from the daemon and outlives it.
//!
//! It joins the sandbox's v1 cgroups (or, taken from the warm pool, renames
//! the pool cgroups it already sits in), clones the child into new mount,
//! pid, uts, ipc, net namespaces (and a user namespace, see
//! [`super::userns`]) and straight into its cgroup2 directory,
//! sets up the host side (pid file, network), lets the child exec the agent
//! and exits as soon as the exec succeeded; the daemon waits for the
//! agent's socket. On any failure it kills the child and removes what it
//! made.

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{child, layout, pidfile, standby, stop, userns};
use crate::host::cgroup::v1::V1Group;
use crate::host::cgroup::{Cgroup, HostCgroups, SandboxCgroup};
use crate::host::{network, sys};
use crate::{Error, NetworkMode, Result, SandboxConfig};

/// Runtime options the boot process needs besides the sandbox config
/// (stored as `runtime.json` in the state dir).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BootOptions {
    pub cgroup_parent: String,
    pub nat_pool: String,
    /// Blocked networks besides the built-in ones (`--deny-net`).
    #[serde(default)]
    pub deny_net: Vec<String>,
    /// How long the daemon waits for the agent's socket, in milliseconds
    /// (recorded for diagnosis; the boot process exits once the agent is
    /// executed and does not wait for it).
    pub agent_timeout_ms: u64,
    /// Use the config's id range, if it has one (see [`super::userns`]).
    #[serde(default = "default_true")]
    pub user_namespaces: bool,
}

fn default_true() -> bool {
    true
}

pub const BOOT_OPTIONS_FILE: &str = "runtime.json";

/// Namespaces PID 1 is cloned into. The cgroup namespace is missing on
/// purpose: the child unshares it once it sits in its cgroups.
const NAMESPACES: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWNET;

/// How the boot process comes to be in the sandbox's v1 cgroups.
#[derive(Debug, Clone, Copy)]
pub enum Placement<'a> {
    /// A fresh boot process: create the cgroups and move itself in (on v1
    /// hierarchies the first move waits for an RCU grace period).
    Fresh,
    /// A warm-pool boot process already sitting in these v1 cgroups (none
    /// on a pure v2 host): rename them to the sandbox's names.
    Pooled(Option<&'a V1Group>),
}

/// Entry point of the boot process. Returns the exit code; errors are
/// printed to stderr for the daemon to show. With the warm-pool variable
/// set (see [`super::standby`]) it first waits, inside its pool cgroups,
/// for the state dir to arrive on stdin.
pub fn boot_main(state_dir: &Path) -> i32 {
    if let Some(spec) = std::env::var_os(standby::POOL_ENV) {
        return standby::main(Path::new(&spec));
    }
    report(boot(state_dir, Placement::Fresh, None))
}

/// Print the pid (success) or the error and return the exit code. Write
/// errors are ignored: the daemon may be gone.
pub(crate) fn report(result: Result<i32>) -> i32 {
    match result {
        Ok(pid) => {
            let _ = writeln!(std::io::stdout(), "{pid}");
            0
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
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
        let _ = stop::kill_and_remove(&crate::host::Kernel, self.cg, stop::KILL_TIMEOUT);
        if self.config.network == NetworkMode::Nat {
            network::teardown(&self.config.id);
        }
        crate::host::private_net::teardown(&self.config.state_dir);
        let _ = std::fs::remove_file(layout::state_file(self.config, layout::PID_FILE));
        let _ = std::fs::remove_file(layout::state_file(self.config, layout::NETWORK_FILE));
        let _ = std::fs::remove_file(layout::state_file(self.config, layout::HOST_AGENT_SOCKET));
    }
}

/// Bind (not listen: the agent does, so SO_PEERCRED names it) a unix
/// socket at `state_dir/agent/agent.sock`, in a 0700 directory that is
/// never mounted into the sandbox. A socket left by an earlier run is
/// replaced.
fn bind_agent_socket(config: &SandboxConfig) -> Result<std::os::fd::OwnedFd> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = layout::state_file(config, layout::HOST_AGENT_DIR);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir)
        .map_err(|e| io_err(&format!("creating {}", dir.display()), e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err(&format!("making {} private", dir.display()), e))?;
    let path = layout::state_file(config, layout::HOST_AGENT_SOCKET);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_err(&format!("removing the old {}", path.display()), e))
        }
        _ => {}
    }
    sys::bind_unix(&path).map_err(|e| io_err(&format!("binding {}", path.display()), e))
}

/// Build the sandbox described in `state_dir`; returns PID 1's host pid.
pub(crate) fn boot(
    state_dir: &Path,
    placement: Placement,
    detected: Option<&HostCgroups>,
) -> Result<i32> {
    // Own session: signals for the daemon's process group miss us.
    // SAFETY: plain syscall; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
    let config: SandboxConfig = read_json(&state_dir.join(layout::CONFIG_FILE))?;
    let opts: BootOptions = read_json(&state_dir.join(BOOT_OPTIONS_FILE))?;
    layout::validate(&config)?;
    if config.network == NetworkMode::Nat {
        network::check_forwarding()?;
    }
    // (A pool boot process detected them while it waited.)
    let host = match detected {
        Some(h) => h.clone(),
        None => HostCgroups::detect()?,
    };
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
    // The agent's socket, bound here on the host side where the sandbox
    // cannot reach it, and passed to PID 1 (which calls listen itself).
    let listen = bind_agent_socket(&config)?;
    let me = std::process::id() as i32;
    // v1: the boot process is in the cgroups, its child inherits them.
    if let Some(v1) = &cg.v1 {
        match placement {
            Placement::Pooled(Some(pool)) => {
                v1.adopt(pool, me)?;
                v1.create(&config.resources)?;
            }
            Placement::Pooled(None) | Placement::Fresh => {
                v1.create(&config.resources)?;
                v1.add_process(me)?;
            }
        }
    }
    // v2: the child is created directly inside (no migration).
    let v2_dir = match &cg.v2 {
        Some(v2) => {
            v2.create(&config.resources)?;
            Some(
                std::fs::File::open(v2.dir())
                    .map_err(|e| io_err(&format!("opening {}", v2.dir().display()), e))?,
            )
        }
        None => None,
    };

    let id_map = config.id_map.filter(|_| opts.user_namespaces);
    let mut namespaces = NAMESPACES;
    let mut mounts_chan = None;
    if id_map.is_some() {
        userns::prepare_host(&config)?;
        namespaces |= libc::CLONE_NEWUSER;
        mounts_chan = Some(
            std::os::unix::net::UnixStream::pair()
                .map_err(|e| io_err("creating the mounts socketpair", e))?,
        );
    }
    // Opened here: in a user namespace the child cannot reach the data dir.
    let console = layout::open_console(&config).map_err(|e| {
        Error::Start(format!(
            "opening the console log {}: {e}",
            layout::console_path(&config).display()
        ))
    })?;
    let (go_r, mut go_w) = sys::pipe().map_err(|e| io_err("creating a pipe", e))?;
    let (mut err_r, err_w) = sys::pipe().map_err(|e| io_err("creating a pipe", e))?;
    let pid = match id_map {
        // The user namespace is owned by the sandbox's own host uid, so
        // what the kernel counts per user (inotify instances, ...) up the
        // namespace chain is charged to it, not to the host's root.
        Some(map) => userns::as_owner(map, || clone_child(&cg, v2_dir.as_ref(), namespaces))?,
        None => clone_child(&cg, v2_dir.as_ref(), namespaces)?,
    };
    if pid == 0 {
        drop(go_w);
        drop(err_r);
        child::run(
            &config,
            console,
            go_r,
            err_w,
            listen,
            mounts_chan.map(|(_, c)| c),
        );
    }
    drop(console);
    guard.child = Some(pid);
    drop(listen);
    drop(go_r);
    drop(err_w);
    drop(v2_dir);
    if let (Some(map), Some((parent, child_end))) = (id_map, mounts_chan) {
        drop(child_end);
        userns::hand_over(pid, &config, map, &parent)?;
    }

    // The go message: "g", and for a NAT sandbox its DNS resolver's
    // address (the gateway), which the child hands to the agent.
    let mut go = b"g".to_vec();
    if config.network == NetworkMode::Nat {
        let info = network::setup(
            &config.id,
            network::Netns::Pid(pid),
            &opts.nat_pool,
            &opts.deny_net,
            state_dir,
        )?;
        crate::host::egress::install(&config.id, &config.egress)?;
        go.extend_from_slice(info.gateway_ip.to_string().as_bytes());
    }
    crate::host::private_net::attach(
        &config.id,
        network::Netns::Pid(pid),
        &config.private_nets,
        state_dir,
    )?;
    pidfile::write(&layout::state_file(&config, layout::PID_FILE), pid)?;
    // A failed write means the child already died; its message follows.
    let _ = go_w.write_all(&go);
    drop(go_w);

    let mut msg = String::new();
    let _ = err_r.read_to_string(&mut msg);
    if !msg.is_empty() {
        return Err(Error::Start(msg));
    }
    guard.armed = false;
    Ok(pid)
}

/// Clone PID 1 into new namespaces, straight into the sandbox's cgroup2
/// directory when the kernel has `CLONE_INTO_CGROUP`; otherwise join that
/// cgroup first and fork. Returns 0 in the child, its pid in the parent. The cgroup namespace is unshared by the child itself, once it
/// is in its cgroups, so that its cgroup root is its own cgroup.
fn clone_child(
    cg: &SandboxCgroup,
    v2_dir: Option<&std::fs::File>,
    namespaces: libc::c_int,
) -> Result<i32> {
    if let (Some(dir), Some(v2)) = (v2_dir, &cg.v2) {
        // SAFETY: the boot process is single-threaded (fresh exec, no
        // threads started), so a fork-like clone is sound.
        match unsafe { sys::clone3_into_cgroup(namespaces, dir) } {
            Ok(pid) => return Ok(pid),
            Err(e) => {
                tracing::debug!("clone3 into the cgroup failed ({e}); joining it instead");
                v2.add_process(std::process::id() as i32)?;
            }
        }
    }
    // SAFETY: as above.
    let pid = unsafe { sys::clone_fork(namespaces) }
        .map_err(|e| io_err("clone into new namespaces", e))?;
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
    layout::console_tail(config, 10)
}
