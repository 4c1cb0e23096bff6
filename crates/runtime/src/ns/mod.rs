//! The namespace runtime: each sandbox is a tree of processes in its own
//! user (an unprivileged host uid range, see [`userns`]), mount, pid, uts,
//! ipc, net and cgroup namespaces, rooted in an overlay,
//! limited by cgroups, with reduced capabilities and a seccomp filter
//! (no_new_privs too without a user namespace; see [`child`]). See
//! SECURITY.md in this crate for what each layer stops.
//!
//! The daemon never forks to build a sandbox: [`NamespaceRuntime::start`]
//! runs a boot process (an exec of the daemon binary calling
//! [`boot_main`]) that does the work and exits, leaving the sandbox
//! reparented away from the daemon. To keep the exec and the first cgroup
//! migration off the start path, the runtime keeps a warm pool
//! ([`pool`]) of boot processes started ahead of time and already sitting
//! in cgroups of their own ([`standby`]); `start` takes one and the pool
//! refills in the background. The daemon blocks on the boot process's
//! output until it ends (no polling, see [`crate::host::wait`]; a pooled
//! one ends it with its report, before its exit) and then connects to the
//! agent every 100 µs until it listens (backing off after 20 ms).

pub mod boot;
pub mod caps;
pub mod child;
pub mod dev;
pub mod doctor;
pub mod layout;
pub mod mountapi;
pub mod mounts;
pub mod observe;
pub mod pause;
pub mod pidfile;
pub mod pool;
pub mod resume;
pub mod seccomp;
pub mod standby;
pub mod start;
pub mod stop;
pub mod userns;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::doctor::Check;
pub use crate::host::network::NetInfo;
pub use boot::boot_main;
pub use doctor::doctor;

use crate::host::cgroup::{Cgroup, HostCgroups, SandboxCgroup};
use crate::host::{blocklist, network, Host, Kernel};

use crate::{Error, Observed, Result, Runtime, SandboxConfig, Started, Stats};

/// How the namespace runtime is set up.
#[derive(Debug, Clone)]
pub struct NsOptions {
    /// The executable run as the boot process (the daemon binary).
    pub boot_exe: PathBuf,
    /// Arguments before the state dir (e.g. `["__ns-boot"]`).
    pub boot_args: Vec<String>,
    /// Name of the cgroup that holds every sandbox's cgroup (may contain
    /// slashes), e.g. `dwell` -> /sys/fs/cgroup/memory/dwell/<id>.
    pub cgroup_parent: String,
    /// Pool that NAT sandboxes take their /30 from.
    pub nat_pool: String,
    /// Networks NAT sandboxes may not reach, on top of
    /// [`blocklist::DEFAULT_DENY`] and the host's own addresses.
    pub deny_net: Vec<String>,
    /// How long the agent may take to accept connections.
    pub agent_timeout: Duration,
    /// Boot processes kept ready ahead of time (0 turns the warm pool off:
    /// every start execs a fresh boot process).
    pub pool_size: usize,
    /// Start sandboxes whose config has an id range ([`crate::IdMap`]) in
    /// a user namespace of their own (`dwell serve --user-namespaces`).
    /// Off: their root is host root, as before user namespaces.
    pub user_namespaces: bool,
}

impl NsOptions {
    /// Defaults: cgroup parent `dwell`, NAT pool 10.200.0.0/16, 10 s, a
    /// warm pool of 1, user namespaces on.
    pub fn new(boot_exe: impl Into<PathBuf>, boot_args: Vec<String>) -> NsOptions {
        NsOptions {
            boot_exe: boot_exe.into(),
            boot_args,
            cgroup_parent: "dwell".into(),
            nat_pool: network::DEFAULT_NAT_POOL.into(),
            deny_net: Vec::new(),
            agent_timeout: Duration::from_secs(10),
            pool_size: 1,
            user_namespaces: true,
        }
    }
}

/// The namespace runtime. Dropping it releases its warm pool (the pooled
/// boot processes exit and remove their cgroups).
#[derive(Debug)]
pub struct NamespaceRuntime {
    options: NsOptions,
    host: HostCgroups,
    pool: pool::Pool,
    /// Where the daemon-side kernel calls go (the kernel; a recording
    /// double in tests).
    calls: Arc<dyn Host>,
}

impl NamespaceRuntime {
    /// Detect the host's cgroups and check the options.
    pub fn new(options: NsOptions) -> Result<NamespaceRuntime> {
        NamespaceRuntime::with_host(options, Arc::new(Kernel))
    }

    /// [`NamespaceRuntime::new`] with the daemon-side host calls (stop's
    /// kills, unmounts and network teardown) going to `calls`.
    pub fn with_host(options: NsOptions, calls: Arc<dyn Host>) -> Result<NamespaceRuntime> {
        let parent = &options.cgroup_parent;
        if parent.is_empty()
            || parent.starts_with('/')
            || parent
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(Error::Other(format!(
                "invalid cgroup parent {parent:?}: use a relative name such as \"dwell\""
            )));
        }
        network::parse_pool(&options.nat_pool)?;
        blocklist::validate(&options.deny_net)?;
        if !options.boot_exe.is_file() {
            return Err(Error::Other(format!(
                "boot executable {} does not exist",
                options.boot_exe.display()
            )));
        }
        let host = HostCgroups::detect()?;
        pool::sweep_stale(&host, &options.cgroup_parent);
        let pool = pool::Pool::new(pool::PoolSpec {
            exe: options.boot_exe.clone(),
            args: options.boot_args.clone(),
            cgroup_parent: options.cgroup_parent.clone(),
            host: host.clone(),
            size: options.pool_size,
        });
        Ok(NamespaceRuntime {
            host,
            options,
            pool,
            calls,
        })
    }

    pub fn options(&self) -> &NsOptions {
        &self.options
    }

    pub fn host_cgroups(&self) -> &HostCgroups {
        &self.host
    }

    /// The cgroups of one sandbox.
    pub fn cgroup(&self, id: &str) -> SandboxCgroup {
        SandboxCgroup::new(&self.host, &self.options.cgroup_parent, id)
    }

    /// The network set up for a NAT sandbox, if any.
    pub fn network(&self, config: &SandboxConfig) -> Option<NetInfo> {
        let bytes = std::fs::read(layout::state_file(config, layout::NETWORK_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// What the warm pool holds.
    pub fn pool_status(&self) -> pool::PoolStatus {
        self.pool.status()
    }

    pub(crate) fn pool(&self) -> &pool::Pool {
        &self.pool
    }

    /// Release the warm pool for good (its boot processes exit and remove
    /// their cgroups); later starts boot fresh. Also done on drop.
    pub fn shutdown_pool(&self) {
        self.pool.shutdown();
    }

    /// Shut the warm pool down and remove the (empty) parent cgroups; best
    /// effort, for uninstalls and tests. Fails quietly while sandboxes
    /// still exist.
    pub fn remove_cgroup_parent(&self) {
        self.pool.shutdown();
        for dir in self.host.parent_dirs(&self.options.cgroup_parent) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Runtime for NamespaceRuntime {
    fn name(&self) -> &'static str {
        "ns"
    }

    fn start(&self, config: &SandboxConfig) -> Result<Started> {
        start::start(self, config)
    }

    fn observe(&self, config: &SandboxConfig) -> Result<Observed> {
        layout::validate_id(&config.id)?;
        observe::observe(config, &self.cgroup(&config.id))
    }

    fn pause(&self, config: &SandboxConfig) -> Result<()> {
        layout::validate_id(&config.id)?;
        pause::freeze(&self.cgroup(&config.id), pause::FREEZE_TIMEOUT)
    }

    fn resume(&self, config: &SandboxConfig) -> Result<()> {
        layout::validate_id(&config.id)?;
        resume::thaw(&self.cgroup(&config.id), pause::FREEZE_TIMEOUT)
    }

    fn stop(&self, config: &SandboxConfig) -> Result<()> {
        layout::validate_id(&config.id)?;
        stop::release(&*self.calls, &self.cgroup(&config.id), config)
    }

    fn stats(&self, config: &SandboxConfig) -> Result<Stats> {
        layout::validate_id(&config.id)?;
        let cg = self.cgroup(&config.id);
        if !cg.exists() {
            return Err(Error::Other(format!(
                "sandbox {} is not running: it has no cgroup on this host",
                config.id
            )));
        }
        cg.stats()
    }

    fn connect_agent(&self, config: &SandboxConfig) -> Result<std::os::unix::net::UnixStream> {
        layout::validate_id(&config.id)?;
        let cgroup = format!("{}/{}", self.options.cgroup_parent, config.id);
        let expected = crate::agent_channel::Expected {
            id: &config.id,
            cgroup: &cgroup,
        };
        let r =
            crate::agent_channel::connect(&config.state_dir, layout::HOST_AGENT_SOCKET, &expected);
        match r {
            // A sandbox started before the socket was passed in (and
            // before agent keys): its agent listens in the run dir. Still
            // no symlink followed, and the peer must be in its cgroup.
            Err(Error::Io { ref source, .. })
                if config.agent_key.is_none() && source.kind() == std::io::ErrorKind::NotFound =>
            {
                crate::agent_channel::connect(
                    &config.state_dir,
                    layout::LEGACY_AGENT_SOCKET,
                    &expected,
                )
                .or(r)
            }
            r => r,
        }
    }

    fn capabilities(&self) -> crate::Capabilities {
        crate::Kind::Namespace.capabilities()
    }

    fn agent_listening(&self, config: &SandboxConfig) -> bool {
        crate::agent_channel::is_socket(&layout::state_file(config, layout::HOST_AGENT_SOCKET))
    }

    /// Mounts left below the rootfs mount point (the root is mounted in
    /// the sandbox's own mount namespace; this is for one that leaked) and
    /// the tables of its private network ports.
    fn release_leftovers(&self, config: &SandboxConfig) {
        release_leftovers(&*self.calls, config);
    }

    fn oom_kills_now(&self, id: &str) -> Option<u64> {
        layout::validate_id(id).ok()?;
        self.cgroup(id).oom_kills()
    }

    fn list_host(&self) -> Result<Vec<String>> {
        // Pool cgroups (`pool.<hex>`) are not valid ids: list_ids skips them.
        observe::list_ids(&self.host.parent_dirs(&self.options.cgroup_parent))
    }
}

/// Mounts a namespace sandbox may have left below its rootfs mount point
/// (the root is mounted in the sandbox's own mount namespace; this is for
/// one that leaked). Needs nothing of the runtime but the host.
pub(crate) fn release_leftovers(host: &dyn Host, config: &SandboxConfig) {
    crate::host::mounts::unmount_tree(host, &layout::state_file(config, layout::ROOTFS_DIR));
    // Private network port tables (the ports went with the namespace).
    host.private_teardown(&config.state_dir);
}
