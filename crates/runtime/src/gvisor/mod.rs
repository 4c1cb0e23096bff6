//! The gVisor runtime: each sandbox is a runsc container, so the sandbox's
//! processes talk to gVisor's user-space kernel (the sentry) instead of
//! the host kernel. See the gVisor section of SECURITY.md in this crate.
//!
//! The runtime writes an OCI bundle to `state_dir/bundle` ([`bundle`]),
//! mounts the sandbox's overlay root on the host at `state_dir/rootfs`
//! ([`rootfs`]) and runs `runsc run --detach` under a runsc state root of
//! its own ([`GvisorOptions::root`]). Every runsc call is bounded by a
//! timeout ([`runsc`]).
//!
//! The agent listens on `/run/dwell/agent.sock`, a bind mount of
//! `state_dir/run`, a small tmpfs of the sandbox's own ([`run_dir`]). A
//! unix socket bound inside gVisor exists only in the sentry unless runsc
//! runs with `--host-uds=create`, which makes it a real socket in the host
//! directory. The sandbox can write that directory, so the daemon reaches
//! the socket only through [`crate::agent_channel`] (no symlink followed,
//! the peer in the sandbox's cgroup) and the agent key handshake.
//!
//! Sandboxes in network mode none (and on no private network) run with
//! `--network=none` (loopback only); NAT sandboxes and private network
//! members get a network namespace of their own and run with
//! `--network=sandbox` ([`network`]).

pub mod bundle;
pub mod claim;
pub mod cpu;
pub mod doctor;
pub mod doze;
pub mod headroom;
pub mod hibernate;
pub mod network;
pub mod platform;
pub mod pool;
mod reap;
pub mod rootfs;
pub mod run_dir;
pub mod runsc;
pub mod state_file;

use std::borrow::Cow;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::Context;
use crate::host::{layout, wait::Backoff, Host, Kernel};
use crate::{Error, NetworkMode, Observed, Result, Runtime, SandboxConfig, Started, Stats};
use runsc::{Output, Runsc};

/// Directory of the bundle inside the state dir.
pub const BUNDLE_DIR: &str = "bundle";

/// How the gVisor runtime is set up.
#[derive(Debug, Clone)]
pub struct GvisorOptions {
    /// The runsc executable.
    pub runsc: PathBuf,
    /// runsc's state root (`runsc --root`): one per daemon, so `list_host`
    /// sees exactly this daemon's sandboxes.
    pub root: PathBuf,
    /// Prefix of the sandboxes' cgroup paths (`/<prefix>/<id>`).
    pub cgroup_parent: String,
    /// Bound of every runsc call.
    pub runsc_timeout: Duration,
    /// How long the agent may take to accept connections.
    pub agent_timeout: Duration,
    /// The pool NAT sandboxes' /30 subnets come from (shared with the
    /// namespace runtime's default, so addresses never collide).
    pub nat_pool: String,
    /// Networks NAT sandboxes may not reach besides the built-in ones
    /// (see [`crate::host::blocklist`]).
    pub deny_net: Vec<String>,
    /// How the sentry intercepts system calls (see [`platform`]).
    pub platform: platform::Platform,
    /// The warm pool ([`pool`]; size 0: none).
    pub pool: pool::PoolOptions,
}

impl GvisorOptions {
    /// Defaults: `/usr/bin/runsc`, cgroup parent `dwell-gvisor`, 30 s per
    /// runsc call, 10 s for the agent.
    pub fn new(root: impl Into<PathBuf>) -> GvisorOptions {
        let root = root.into();
        GvisorOptions {
            runsc: PathBuf::from("/usr/bin/runsc"),
            pool: pool::PoolOptions::disabled(&root),
            root,
            cgroup_parent: "dwell-gvisor".into(),
            runsc_timeout: Duration::from_secs(30),
            agent_timeout: Duration::from_secs(10),
            nat_pool: crate::host::network::DEFAULT_NAT_POOL.into(),
            deny_net: Vec::new(),
            platform: platform::Platform::default(),
        }
    }
}

/// The gVisor runtime.
#[derive(Debug)]
pub struct GvisorRuntime {
    options: GvisorOptions,
    runsc: Runsc,
    /// Seen: runsc names its state files in the root after the container
    /// id. Then a root without such a file means "unknown container" and
    /// `state` needs no runsc call (tens of ms each).
    files_named_by_id: std::sync::atomic::AtomicBool,
    /// The host's cgroup mounts: stats are read from the sandbox's cgroup
    /// (microseconds) rather than asked of runsc (tens of ms; every exec
    /// reads the OOM counter).
    host_cgroups: Option<crate::host::cgroup::HostCgroups>,
    /// Where the mounts and the network go (the kernel; a recording double
    /// in tests).
    host: Arc<dyn Host>,
    /// The warm pool, when configured ([`pool`], [`claim`]).
    pool: Option<pool::WarmPool>,
}

/// What `runsc state` reports.
#[derive(Debug, Deserialize)]
struct State {
    status: String,
}

/// Remove the (empty) cgroup `parent` from every cgroup hierarchy under
/// `/sys/fs/cgroup`. runsc makes it below each hierarchy for a daemon's
/// first gVisor sandbox and never removes it; the daemon calls this when it
/// stops with no sandbox left. A parent still in use is not removable and
/// stays.
pub fn remove_cgroup_parent(parent: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let _ = std::fs::remove_dir(root.join(parent));
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(e.path().join(parent));
            }
        }
    }
}

impl GvisorRuntime {
    /// Check that runsc runs and create its state root.
    pub fn new(options: GvisorOptions) -> Result<GvisorRuntime> {
        GvisorRuntime::with_host(options, Arc::new(Kernel))
    }

    /// [`GvisorRuntime::new`] with the host calls going to `host`.
    pub fn with_host(options: GvisorOptions, host: Arc<dyn Host>) -> Result<GvisorRuntime> {
        let p = &options.cgroup_parent;
        if p.is_empty() || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(Error::Other(format!(
                "invalid cgroup parent {p:?}: use a relative name such as \"dwell-gvisor\""
            )));
        }
        crate::host::network::parse_pool(&options.nat_pool)?;
        crate::host::blocklist::validate(&options.deny_net)?;
        std::fs::create_dir_all(&options.root)
            .context(|| format!("creating the runsc root {}", options.root.display()))?;
        let mut runsc = Runsc {
            binary: options.runsc.clone(),
            global: vec![
                "--root".into(),
                options.root.display().to_string(),
                // Only a loopback: NetworkMode::None.
                "--network=none".into(),
                // Writes go to the volume's upper dir, not to a file
                // inside the sandbox's memory.
                "--overlay2=none".into(),
                // The agent's socket on the /run/dwell bind mount must be
                // a real socket on the host (see the module docs).
                "--host-uds=create".into(),
                // Every file operation of the sentry goes through the
                // gofer: the sentry then runs as nobody (65534) in a user
                // namespace of its own with no capability at all, instead
                // of host root with CAP_DAC_OVERRIDE, CAP_SETUID, ... (see
                // SECURITY.md).
                "--directfs=false".into(),
                format!("--platform={}", options.platform),
            ],
            hide_sysctl_net: false,
        };
        // runsc's own debug logs, one file per command, for diagnosing it.
        // (An empty value is unset: it would scatter the logs over `/`.)
        if let Some(dir) = std::env::var_os("DWELL_RUNSC_DEBUG_LOG").filter(|d| !d.is_empty()) {
            runsc.global.push("--debug".into());
            runsc.global.push(format!(
                "--debug-log={}/",
                std::path::Path::new(&dir).display()
            ));
        }
        runsc.run(&["--version"], Output::Capture, options.runsc_timeout)?;
        let mut rt = GvisorRuntime {
            options,
            runsc,
            files_named_by_id: Default::default(),
            host_cgroups: crate::host::cgroup::HostCgroups::detect().ok(),
            host,
            pool: None,
        };
        // --- warm pool (see `pool` and `claim`) ---
        if rt.options.pool.size > 0 {
            rt.pool = pool::WarmPool::start(rt.pool_ctx())?;
        } else {
            // What a daemon that had a pool left still goes.
            pool::sweep_in_background(rt.pool_ctx());
        }
        Ok(rt)
    }

    /// The warm pool's counters (None: no pool).
    pub fn pool_status(&self) -> Option<pool::PoolStatus> {
        self.pool.as_ref().map(|p| p.status())
    }

    /// Stop the warm pool and delete its waiting sandboxes (the daemon's
    /// exit). Idempotent.
    pub fn shutdown_pool(&self) {
        if let Some(p) = &self.pool {
            p.shutdown();
        }
    }

    pub fn options(&self) -> &GvisorOptions {
        &self.options
    }

    /// How runsc starts (`run`, `restore`) this sandbox: a NAT sandbox
    /// (or one on private networks) uses gVisor's network stack on the
    /// interfaces of its network namespace; a sandbox granted raw sockets gets `--net-raw`. Other
    /// commands do not depend on these flags.
    fn runsc_for(&self, config: &SandboxConfig) -> Cow<'_, Runsc> {
        let netns = network::needs_netns(config);
        if !netns && !config.grants.raw_sockets {
            return Cow::Borrowed(&self.runsc);
        }
        let mut r = self.runsc.clone();
        if netns {
            for flag in &mut r.global {
                if flag == "--network=none" {
                    *flag = "--network=sandbox".into();
                }
            }
            // Hibernation with open connections resets them instead of failing.
            r.global.push("--net-disconnect-ok".into());
            r.hide_sysctl_net = true;
        }
        if config.grants.raw_sockets {
            // runsc refuses raw sockets without it, CAP_NET_RAW or not.
            r.global.push("--net-raw".into());
        }
        Cow::Owned(r)
    }

    fn call(&self, args: &[&str]) -> Result<String> {
        self.runsc
            .run(args, Output::Capture, self.options.runsc_timeout)
    }

    /// `runsc state`, or None when runsc does not know the container.
    fn state(&self, id: &str) -> Result<Option<State>> {
        use std::sync::atomic::Ordering;
        let named = self.files_named_by_id.load(Ordering::Relaxed);
        if named && self.root_mentions(id) == Some(false) {
            return Ok(None);
        }
        // A live sandbox is told from runsc's state file and its process,
        // without the tens of ms of a runsc call.
        // (Found by its id, that file also shows runsc's naming.)
        if let Some(status) = state_file::live_status(&self.options.root, id) {
            self.files_named_by_id.store(true, Ordering::Relaxed);
            return Ok(Some(State { status }));
        }
        // A frozen pooled sandbox (dozing, or paused), which the file above
        // does not tell, cannot answer runsc: its processes are there, and
        // runsc's record says which it is.
        if self.cgroup(id).is_some_and(|cg| doze::frozen(&cg)) {
            if let Some(status) = state_file::recorded_status(&self.options.root, id) {
                return Ok(Some(State { status }));
            }
        }
        match self.call(&["state", id]) {
            Ok(out) => {
                let s = serde_json::from_str(&out).map_err(|e| {
                    Error::Other(format!(
                        "runsc state {id} printed unexpected output ({e}): {out}"
                    ))
                })?;
                if !named && self.root_mentions(id) == Some(true) {
                    self.files_named_by_id.store(true, Ordering::Relaxed);
                }
                Ok(Some(s))
            }
            Err(Error::Other(msg)) if msg.contains("does not exist") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether an entry of runsc's root names `id` (None: unreadable).
    fn root_mentions(&self, id: &str) -> Option<bool> {
        let rd = std::fs::read_dir(&self.options.root).ok()?;
        let mut found = false;
        for e in rd {
            if e.ok()?.file_name().to_string_lossy().contains(id) {
                found = true;
                break;
            }
        }
        Some(found)
    }

    /// See [`Runtime::connect_agent`]: the socket the gofer created in the
    /// run dir, reached without following a symlink, served by a process
    /// of the sandbox's cgroup.
    fn connect(&self, config: &SandboxConfig) -> Result<UnixStream> {
        layout::validate_id(&config.id)?;
        // A dozing agent would take the connection and never answer.
        self.wake_sandbox(config, false)?;
        let cgroup = format!("{}/{}", self.options.cgroup_parent, config.id);
        crate::agent_channel::connect(
            &config.state_dir,
            run_dir::AGENT_SOCKET,
            &crate::agent_channel::Expected {
                id: &config.id,
                cgroup: &cgroup,
            },
        )
    }

    /// The sandbox's cgroups (those runsc made), when the host's cgroup
    /// mounts are known. On a hybrid host runsc makes v1 cgroups only: the
    /// unified one counts only where it exists, so the freezer used is the
    /// one that holds the sandbox.
    fn cgroup(&self, id: &str) -> Option<crate::host::cgroup::SandboxCgroup> {
        let host = self.host_cgroups.as_ref()?;
        let mut cg = crate::host::cgroup::SandboxCgroup::new(host, &self.options.cgroup_parent, id);
        if cg.v1.is_some() && cg.v2.as_ref().is_some_and(|g| !g.exists()) {
            cg.v2 = None;
        }
        Some(cg)
    }

    /// Thaw the sandbox if it dozes (see [`doze`]): before anything that
    /// needs its sentry to run. A paused sandbox stays frozen unless
    /// `paused_too` (pause, resume, stop and hibernate thaw it; a
    /// connection does not).
    pub(crate) fn wake_sandbox(&self, config: &SandboxConfig, paused_too: bool) -> Result<()> {
        let Some(cg) = self.cgroup(&config.id) else {
            return Ok(());
        };
        if !paused_too
            && doze::frozen(&cg)
            && state_file::recorded_status(&self.options.root, &config.id).as_deref()
                == Some("paused")
        {
            return Ok(());
        }
        doze::wake(&cg)
    }

    fn cgroups_path(&self, id: &str) -> String {
        format!("/{}/{id}", self.options.cgroup_parent)
    }

    fn boot(&self, config: &SandboxConfig) -> Result<Started> {
        // --- warm pool: a claim when it can, a cold start otherwise ---
        match self.boot_warm(config) {
            Some(Ok(started)) => return Ok(started),
            Some(Err(_)) => self.release_host(config),
            None => {}
        }
        run_dir::mount(&*self.host, config)?;
        let sock = run_dir::agent_socket(config);
        let root = rootfs::mount(&*self.host, config)?;
        self.write_bundle(config, &root)?;
        let bundle = layout::state_file(config, BUNDLE_DIR);
        let console = layout::console_path(config);
        let bundle_s = bundle.display().to_string();
        // runsc writes the sandbox's pid here: no `runsc state` needed.
        let pid_file = layout::state_file(config, hibernate::PID_FILE);
        let _ = std::fs::remove_file(&pid_file);
        let pid_arg = format!("--pid-file={}", pid_file.display());
        self.runsc_for(config).run(
            &[
                "run", "--detach", &pid_arg, "--bundle", &bundle_s, &config.id,
            ],
            Output::Console(&console),
            self.options.runsc_timeout,
        )?;
        cpu::apply(config, &self.cgroups_path(&config.id))?;
        self.wait_for_agent(config, &sock)?;
        let pid = hibernate::read_pid(&pid_file);
        Ok(Started {
            pid,
            agent_socket: sock,
        })
    }

    /// Write `state_dir/bundle/config.json` with `root` as the root. A NAT
    /// sandbox's (or a private network member's) network namespace is set
    /// up here too (the spec names it).
    fn write_bundle(&self, config: &SandboxConfig, root: &Path) -> Result<()> {
        let bundle = layout::state_file(config, BUNDLE_DIR);
        std::fs::create_dir_all(&bundle).context(|| format!("creating {}", bundle.display()))?;
        let mut spec = bundle::spec(config, root, &self.cgroups_path(&config.id));
        if let Some((netns, info)) = network::setup_all(
            &*self.host,
            config,
            &self.options.nat_pool,
            &self.options.deny_net,
        )? {
            network::join_in_spec(&mut spec, &netns, info.as_ref());
        }
        let spec_path = bundle.join("config.json");
        std::fs::write(
            &spec_path,
            serde_json::to_vec_pretty(&spec).expect("the spec serialises"),
        )
        .context(|| format!("writing {}", spec_path.display()))
    }

    /// See [`release_host`].
    fn release_host(&self, config: &SandboxConfig) {
        release_host(&*self.host, config)
    }

    /// Connect attempts with a backoff (100 µs to 5 ms) until the agent
    /// accepts; fails early when the container stops.
    fn wait_for_agent(&self, config: &SandboxConfig, sock: &Path) -> Result<()> {
        let timeout = self.options.agent_timeout;
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::new(Duration::from_micros(100), Duration::from_millis(5));
        let mut checks = 0u32;
        loop {
            let err = match self.connect(config) {
                Ok(_) => return Ok(()),
                Err(Error::Io { source, .. }) => source,
                Err(e) => return Err(e),
            };
            checks += 1;
            // Asking runsc costs a few ms: only now and then.
            if checks.is_multiple_of(64) && self.observe(config)? == Observed::Stopped {
                return Err(Error::Start(format!(
                    "the agent exited before listening on {}; its output:\n{}",
                    sock.display(),
                    console_tail(config)
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::Start(format!(
                    "the agent does not accept connections on {} within {timeout:?}: {err}; \
                     its output:\n{}",
                    sock.display(),
                    console_tail(config)
                )));
            }
            backoff.sleep_until(deadline);
        }
    }
}

/// Remove what the host holds for a sandbox runsc no longer runs: its
/// network (network.json stays: a restore tries the same address again),
/// its mounts and its agent socket.
pub(crate) fn release_host(host: &dyn Host, config: &SandboxConfig) {
    network::teardown_on(host, config);
    rootfs::unmount(host, config);
    run_dir::unmount(host, config);
    let _ = std::fs::remove_file(run_dir::agent_socket(config));
}

/// The last lines of the console log (runsc's and the agent's output).
fn console_tail(config: &SandboxConfig) -> String {
    layout::console_tail(config, 20)
}

/// Parse `runsc events --stats` output into [`Stats`].
fn parse_stats(out: &str, id: &str) -> Result<Stats> {
    let v: serde_json::Value = serde_json::from_str(out.trim()).map_err(|e| {
        Error::Other(format!(
            "runsc events --stats {id} printed unexpected output ({e}): {out}"
        ))
    })?;
    let d = &v["data"];
    let n = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    Ok(Stats {
        memory_bytes: n(&d["memory"]["usage"]["usage"]),
        memory_limit_bytes: n(&d["memory"]["usage"]["limit"]),
        cpu_usage_ns: n(&d["cpu"]["usage"]["total"]),
        pids: n(&d["pids"]["current"]),
        oom_kills: n(&d["memory"]["oom_kill"]),
    })
}

impl Runtime for GvisorRuntime {
    fn name(&self) -> &'static str {
        "gvisor"
    }

    fn start(&self, config: &SandboxConfig) -> Result<Started> {
        layout::validate(config)?;
        crate::core_pattern::check_grants(config)?;
        if config.network == NetworkMode::Nat {
            crate::host::network::check_forwarding()?;
        }
        if self.observe(config)? != Observed::Stopped {
            return Err(Error::Start(format!(
                "sandbox {} is already running on this host; stop it before starting it again",
                config.id
            )));
        }
        // A record left by a crash (container stopped, mounts kept).
        self.stop(config)?;
        match self.boot(config) {
            Ok(started) => Ok(started),
            Err(e) => {
                if let Err(cleanup) = self.stop(config) {
                    tracing::warn!(id = %config.id, error = %cleanup, "cleanup after a failed start");
                }
                Err(e)
            }
        }
    }

    fn observe(&self, config: &SandboxConfig) -> Result<Observed> {
        layout::validate_id(&config.id)?;
        let observed = match self.state(&config.id)? {
            Some(s) if s.status == "running" => Observed::Running,
            Some(s) if s.status == "paused" => Observed::Paused,
            _ => Observed::Stopped,
        };
        if observed != Observed::Stopped {
            // Left unlimited by a daemon that died right after runsc
            // started the sandbox (see `cpu`).
            // Best effort: the sandbox may have ended since `runsc state`
            // (its cgroup gone); that is not an error of the observation.
            let path = self.cgroups_path(&config.id);
            if !cpu::limited(&path) {
                // --- warm pool: a claim a dead daemon left halfway ---
                if let Some(root) = claim::pool_root(&self.options.root, &config.id) {
                    if let Err(e) = self.finish_claim(config, &root) {
                        tracing::warn!(id = %config.id, error = %e, "finishing a claim from the gVisor pool");
                    }
                }
                if let Err(e) = cpu::apply(config, &path) {
                    tracing::warn!(id = %config.id, error = %e, "re-applying the CPU limit");
                }
            }
        }
        Ok(observed)
    }

    fn pause(&self, config: &SandboxConfig) -> Result<()> {
        layout::validate_id(&config.id)?;
        self.wake_sandbox(config, true)?;
        self.call(&["pause", &config.id])?;
        // runsc's pause stops the sandbox's tasks, not the sentry's own
        // polling (see [`doze`]): freeze the rest too, so a paused sandbox
        // costs no CPU. Best effort: it is paused either way.
        if let Some(cg) = self.cgroup(&config.id) {
            if let Err(e) = doze::doze(&cg) {
                tracing::warn!(id = %config.id, error = %e, "freezing a paused sandbox");
            }
        }
        Ok(())
    }

    fn resume(&self, config: &SandboxConfig) -> Result<()> {
        layout::validate_id(&config.id)?;
        self.wake_sandbox(config, true)?;
        self.call(&["resume", &config.id]).map(drop)
    }

    fn stop(&self, config: &SandboxConfig) -> Result<()> {
        layout::validate_id(&config.id)?;
        // `delete --force` kills the sandbox and removes runsc's record
        // (and the cgroup runsc made). The host's share is released even
        // when runsc fails.
        // Under cgroup v1 a frozen process dies of SIGKILL only once
        // thawed; a frozen cgroup left behind would also freeze the next
        // start in it. (A failed thaw is logged: delete anyway.)
        if let Err(e) = self.wake_sandbox(config, true) {
            tracing::warn!(id = %config.id, error = %e, "thawing before the delete");
        }
        let deleted = match self.state(&config.id) {
            // --- warm pool: the runsc sandbox is the pool sandbox ---
            Ok(Some(_)) => match claim::pool_root(&self.options.root, &config.id) {
                Some(root) => self.stop_pooled(config, &root),
                None => self.call(&["delete", "--force", &config.id]).map(drop),
            },
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        self.release_host(config);
        deleted
    }

    /// The whole sandbox's host usage (sentry and application) from its
    /// cgroup; runsc's own report when the cgroup cannot be read.
    fn stats(&self, config: &SandboxConfig) -> Result<Stats> {
        use crate::host::cgroup::{Cgroup, SandboxCgroup};
        layout::validate_id(&config.id)?;
        if let Some(host) = &self.host_cgroups {
            let cg = SandboxCgroup::new(host, &self.options.cgroup_parent, &config.id);
            if cg.exists() {
                return cg.stats();
            }
        }
        if self.observe(config)? == Observed::Stopped {
            return Err(Error::Other(format!(
                "sandbox {} is not running under gVisor on this host",
                config.id
            )));
        }
        self.wake_sandbox(config, true)?;
        let out = self.call(&["events", "--stats", &config.id])?;
        parse_stats(&out, &config.id)
    }

    fn hibernate(&self, config: &SandboxConfig, image_dir: &Path) -> Result<()> {
        GvisorRuntime::hibernate(self, config, image_dir)
    }

    fn restore(&self, config: &SandboxConfig, image_dir: &Path) -> Result<Started> {
        GvisorRuntime::restore(self, config, image_dir)
    }

    fn connect_agent(&self, config: &SandboxConfig) -> Result<UnixStream> {
        self.connect(config)
    }

    fn doze(&self, config: &SandboxConfig) -> Result<()> {
        layout::validate_id(&config.id)?;
        let Some(cg) = self.cgroup(&config.id) else {
            return Err(Error::Other(
                "cannot doze: this host's cgroup mounts were not found".into(),
            ));
        };
        doze::doze(&cg)
    }

    fn wake(&self, config: &SandboxConfig) -> Result<()> {
        layout::validate_id(&config.id)?;
        self.wake_sandbox(config, false)
    }

    fn dozing(&self, config: &SandboxConfig) -> bool {
        layout::validate_id(&config.id).is_ok()
            && self.cgroup(&config.id).is_some_and(|cg| doze::frozen(&cg))
    }

    fn capabilities(&self) -> crate::Capabilities {
        crate::Capabilities {
            // On ptrace an idle sentry does not poll: nothing to save, and
            // asking a busy sandbox whether it may doze costs it (slow)
            // system calls.
            doze: self.options.platform != platform::Platform::Ptrace,
            ..crate::Kind::Gvisor.capabilities()
        }
    }

    fn agent_listening(&self, config: &SandboxConfig) -> bool {
        hibernate::is_socket(&run_dir::agent_socket(config))
    }

    fn before_unlisten(&self, config: &SandboxConfig) {
        // The agent would listen again on seeing it.
        let _ = std::fs::remove_file(layout::state_file(config, hibernate::RESTORED_MARKER));
    }

    /// The network (a NAT sandbox's pinned namespace, veth and table, when
    /// its start failed halfway), the rootfs and run dir mounts, the socket.
    fn release_leftovers(&self, config: &SandboxConfig) {
        self.release_host(config);
    }

    fn warm_pool(&self) -> Option<pool::PoolStatus> {
        self.pool_status()
    }

    /// Every container runsc's root has a record of (what `runsc list`
    /// prints), read from its state file names: `runsc list` asks each
    /// sandbox for its state and hangs on a frozen one (the warm pool's).
    /// Pool sandboxes are left out (see [`pool`]).
    fn list_host(&self) -> Result<Vec<String>> {
        std::fs::metadata(&self.options.root)
            .context(|| format!("reading the runsc root {}", self.options.root.display()))?;
        let mut ids: Vec<String> = pool::containers_by_sandbox(&self.options.root)
            .into_values()
            .flatten()
            .filter(|c| !c.starts_with(pool::POOL_PREFIX))
            .collect();
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::recording::{config, Recording};

    #[test]
    fn releasing_the_host_removes_network_rootfs_and_run_dir_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.network = NetworkMode::Nat;
        let host = Recording::new();
        // What a NAT sandbox's start left: its run dir, its root, its
        // pinned namespace and veth.
        run_dir::mount(&host, &config).unwrap();
        rootfs::mount(&host, &config).unwrap();
        let netns = network::netns_path(&config);
        std::fs::write(&netns, b"").unwrap();
        host.pin_netns(&netns).unwrap();
        host.net_setup(
            &config.id,
            crate::host::network::Netns::Path(&netns),
            crate::host::network::DEFAULT_NAT_POOL,
            &[],
            &config.state_dir,
        )
        .unwrap();
        std::fs::write(run_dir::agent_socket(&config), b"").unwrap();
        host.clear();
        release_host(&host, &config);
        let s = dir.path().display();
        assert_eq!(
            host.calls(),
            [
                "net teardown sb1".to_string(),
                format!("unmount {s}/netns"),
                format!("unmount {s}/rootfs"),
                format!("unmount {s}/rootfs"),
                format!("unmount {s}/run"),
                format!("unmount {s}/run"),
            ]
        );
        assert!(host.mounted().is_empty());
        assert!(!netns.exists());
        // Idempotent and cheap: no network call when nothing is left.
        host.clear();
        release_host(&host, &config);
        assert_eq!(
            host.calls(),
            [format!("unmount {s}/rootfs"), format!("unmount {s}/run")]
        );
    }
}
