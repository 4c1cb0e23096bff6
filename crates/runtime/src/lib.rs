//! The runtime layer: the one place where a sandbox's processes are started,
//! frozen, thawed and killed.
//!
//! [`Runtime`] is the seam between the control plane and an isolation
//! technology. The namespace runtime ([`ns::NamespaceRuntime`]) implements it
//! with Linux namespaces, cgroups, seccomp and capabilities; the gVisor
//! runtime ([`gvisor::GvisorRuntime`]) with runsc. Both are built on the
//! shared [`host`] plumbing, whose calls that change the host go through
//! the [`host::Host`] trait (a recording double stands in for the kernel
//! in unit tests). Every runtime starts the same
//! `dwell-agent` as PID 1 and hands back a byte stream to it (here: the path
//! of a unix socket), so the daemon never enters a sandbox by other means.
//!
//! What differs between runtimes beyond the common operations is data, not
//! names: [`Kind`] lists the runtimes and their [`Capabilities`] (which can
//! hibernate, in which [`ImageFormat`]; which map a sandbox's root to a
//! host id range), and the trait's methods say what a runtime leaves on the
//! host ([`Runtime::release_leftovers`]). [`RootfsSpec::overlays`] names
//! the host directories of a sandbox's root filesystem.
//!
//! The trait is synchronous on purpose: its operations are short sequences of
//! syscalls. The control plane calls it from a blocking thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod agent_channel;
pub mod core_pattern;
pub mod doctor;
pub mod error;
pub mod gvisor;
pub mod host;
pub mod kind;
pub mod ns;
pub mod overlays;

pub use error::{Error, Result};
pub use kind::{Capabilities, ImageFormat, Kind, UnknownRuntime};
pub use overlays::Overlay;

/// Environment variable that hands the agent its key (`dwell_proto::auth::KEY_ENV`):
/// the agent removes it from its environment before it starts anything.
pub const AGENT_KEY_ENV: &str = "DWELL_AGENT_KEY";

/// The variable that hands a NAT sandbox's agent the address of its DNS
/// resolver (the gateway); the agent writes it into `/etc/resolv.conf`
/// and removes the variable.
pub const DNS_ENV: &str = "DWELL_DNS";

/// Everything a runtime needs to start one sandbox. Written to the
/// sandbox's state directory so that a restarted daemon can adopt it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SandboxConfig {
    /// The sandbox id (unguessable, `[a-z0-9]`, also used in host names of
    /// cgroups and interfaces).
    pub id: String,
    /// Host name inside the sandbox.
    pub hostname: String,
    /// The root filesystem: image layers plus the sandbox's writable volume.
    pub rootfs: RootfsSpec,
    /// Kernel-enforced limits.
    pub resources: Resources,
    /// Environment given to the agent (and so to every process it starts).
    pub env: BTreeMap<String, String>,
    /// Network mode.
    pub network: NetworkMode,
    /// A directory owned by the daemon for this sandbox: the runtime keeps
    /// its own state here (pid file, rootfs mount point, the agent socket
    /// directory). It lives under the daemon's data dir, not /run.
    pub state_dir: PathBuf,
    /// The static `dwell-agent` binary on the host; bind-mounted read-only
    /// into the sandbox and executed as PID 1.
    pub agent_binary: PathBuf,
    /// The sandbox's agent key (64 hex digits, see `dwell_proto::auth`):
    /// handed to the agent at start (and to a restored agent), proven by
    /// both ends of every connection. None for configs written before keys
    /// existed: their agents run, and are reached, unauthenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_key: Option<String>,
    /// What the sandbox was granted beyond the defaults at create.
    #[serde(default)]
    pub grants: Grants,
    /// The host uid/gid range the sandbox's root maps to (namespace
    /// runtime with user namespaces on). `None` (configs written before
    /// user namespaces, or runtimes without them): root is host root.
    #[serde(default)]
    pub id_map: Option<IdMap>,
    /// The tenant private networks the sandbox is on, in the order of
    /// their interfaces inside (`eth1`, `eth2`, ...); see
    /// [`host::private_net`]. Independent of [`NetworkMode`]: a network
    /// gives no way out of the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_nets: Vec<PrivateNet>,
    /// The egress policy of a NAT sandbox, installed in its nftables table
    /// before it runs (see [`host::egress`]); later changes are applied
    /// live by the daemon.
    #[serde(default, skip_serializing_if = "host::egress::EgressRules::is_open")]
    pub egress: host::egress::EgressRules,
    /// Named volumes bound into the sandbox: each a host directory (the
    /// volume's mount point, kept mounted by the daemon while the sandbox
    /// runs) bound at `target` inside.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<Bind>,
}

/// A host directory bound into a sandbox (a named volume). The namespace
/// runtime binds an idmapped copy of the mount at `target`, whose
/// directories it creates inside the sandbox's root without following a
/// symlink (see [`host::mounts::in_root`]); gVisor gets it as an OCI bind
/// mount served by its gofer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bind {
    /// The host directory (a mount point owned by the daemon).
    pub source: PathBuf,
    /// The absolute path inside the sandbox.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

/// One private network a sandbox is on: the host bridge that carries it
/// and the sandbox's address there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrivateNet {
    /// The network's name (for messages).
    pub name: String,
    /// The bridge's interface name ([`host::private_net::bridge_name`]).
    pub bridge: String,
    pub address: std::net::Ipv4Addr,
    pub prefix_len: u8,
}

/// Privileges a sandbox only has when its creator asked for them. Both
/// runtimes deny them by default (see SECURITY.md).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grants {
    /// Keep CAP_NET_RAW: raw and packet sockets (ping through a raw
    /// socket, traceroute, tcpdump), which can also forge packets.
    #[serde(default)]
    pub raw_sockets: bool,
    /// Leave RLIMIT_CORE as the daemon has it instead of 0 (soft and
    /// hard). Refused while the host's `kernel.core_pattern` is a pipe
    /// (see [`core_pattern::check`]).
    #[serde(default)]
    pub core_dumps: bool,
    /// A restriction rather than a grant: set no_new_privs on the agent,
    /// so that no process of the sandbox gains privileges through exec
    /// (set-user-id binaries such as `sudo` stop working). Off by default:
    /// namespace sandboxes in a user namespace get set-user-id root only
    /// as their own root, within the capability bounding set already
    /// reduced; one without a user namespace always has it (its root would
    /// be host root), and so does every gVisor sandbox (runsc always sets
    /// it).
    #[serde(default)]
    pub no_new_privs: bool,
}

/// A sandbox's user namespace mapping: ids `0..count` inside are host ids
/// `host_base..host_base + count`, for both uids and gids. Files on disk
/// stay 0-based (the sandbox's layers and volume are idmapped mounts).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMap {
    pub host_base: u32,
    pub count: u32,
}

impl IdMap {
    /// How many sandboxes can have a range of their own: slots are
    /// `0..SLOTS`.
    pub const SLOTS: u32 = ns::userns::MAX_SLOTS;

    /// The range of slot `slot` (the control plane keeps one slot per
    /// sandbox, from its first start until it is deleted).
    pub fn of_slot(slot: u32) -> Result<IdMap> {
        ns::userns::range_of_slot(slot)
    }
}

/// How the root filesystem of a sandbox is assembled.
///
/// The root is an overlay whose lower layers are `layers` (topmost first)
/// and whose upper and work dirs live in `upper_root` (the mounted volume):
/// `upper_root/root/{upper,work}`. Each entry of `host_dirs` (for example
/// `/usr`) is overlaid separately at the same path inside the sandbox, with
/// the host directory as its read-only lower layer and
/// `upper_root/host/<name>/{upper,work}` as its writable layer, so that
/// package installs land in the sandbox's volume and never on the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RootfsSpec {
    pub layers: Vec<PathBuf>,
    pub host_dirs: Vec<PathBuf>,
    pub upper_root: PathBuf,
}

/// Kernel-enforced resource limits.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Resources {
    /// CPU bandwidth in cores (1.5 = 150 ms every 100 ms).
    pub vcpus: f64,
    /// Memory limit in bytes (swap is not granted beyond it).
    pub memory_bytes: u64,
    /// Maximum number of tasks (processes and threads).
    pub pids: u64,
}

/// Network of a sandbox.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Own network namespace with loopback only.
    #[default]
    None,
    /// Own network namespace with a veth pair and NAT for outbound traffic.
    Nat,
}

/// What the runtime observes of a sandbox on the host.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Observed {
    /// PID 1 is alive and not frozen.
    Running,
    /// PID 1 is alive and its cgroup is frozen.
    Paused,
    /// Nothing of the sandbox runs on the host.
    Stopped,
}

/// A started sandbox, as the runtime reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Started {
    /// Host pid of the sandbox's PID 1 (the agent).
    pub pid: i32,
    /// The unix socket on the host where the agent listens.
    pub agent_socket: PathBuf,
}

/// Usage read from the kernel (cgroups).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub cpu_usage_ns: u64,
    pub pids: u64,
    /// How many times the kernel's OOM killer fired in this sandbox.
    pub oom_kills: u64,
}

/// An isolation technology that runs sandboxes.
///
/// Implementations must be idempotent where noted, because the reconciler
/// retries after crashes: `stop` of a stopped sandbox and `cleanup` of a
/// cleaned one succeed.
pub trait Runtime: Send + Sync {
    /// Short name shown to users (`ns`, `gvisor`, `vm`).
    fn name(&self) -> &'static str;

    /// Start the sandbox and return once its agent accepts connections on
    /// the returned socket. On error, nothing of the sandbox is left running.
    fn start(&self, config: &SandboxConfig) -> Result<Started>;

    /// What runs of this sandbox right now. Used to adopt sandboxes after a
    /// daemon restart.
    fn observe(&self, config: &SandboxConfig) -> Result<Observed>;

    /// Freeze every process of the sandbox.
    fn pause(&self, config: &SandboxConfig) -> Result<()>;

    /// Thaw every process of the sandbox.
    fn resume(&self, config: &SandboxConfig) -> Result<()>;

    /// Kill every process of the sandbox and release what the runtime holds
    /// for it (cgroups, network interfaces, mounts). Idempotent.
    fn stop(&self, config: &SandboxConfig) -> Result<()>;

    /// Current usage from the kernel.
    fn stats(&self, config: &SandboxConfig) -> Result<Stats>;

    /// [`Stats::oom_kills`] of sandbox `id` when this runtime reads it
    /// without blocking (one small kernel file, for every exec); `None`:
    /// ask [`Runtime::stats`] instead (off the async threads).
    fn oom_kills_now(&self, id: &str) -> Option<u64> {
        let _ = id;
        None
    }

    /// Ids of sandboxes that have something alive on this host (cgroups,
    /// processes), whether or not a record explains them.
    fn list_host(&self) -> Result<Vec<String>>;

    /// The counters of the runtime's warm pool of pre-started sandboxes
    /// (None: it has none, or it is off).
    fn warm_pool(&self) -> Option<gvisor::pool::PoolStatus> {
        None
    }

    /// Save the whole running sandbox (processes, memory, open files) to
    /// `image_dir` and stop it: afterwards nothing of it runs on the host.
    /// Runtimes that cannot save memory to disk refuse.
    fn hibernate(&self, config: &SandboxConfig, image_dir: &Path) -> Result<()> {
        let _ = (config, image_dir);
        Err(not_hibernatable(self.name()))
    }

    /// Start the sandbox again from what `hibernate` saved in `image_dir`
    /// and return once its agent accepts connections.
    fn restore(&self, config: &SandboxConfig, image_dir: &Path) -> Result<Started> {
        let _ = (config, image_dir);
        Err(not_hibernatable(self.name()))
    }

    /// What this runtime can do beyond the operations above. By default
    /// what [`Kind::capabilities`] says of the runtime [`Self::name`]
    /// names (nothing, for a name this crate does not know).
    fn capabilities(&self) -> Capabilities {
        Kind::parse(self.name()).map_or_else(|_| Capabilities::default(), Kind::capabilities)
    }

    /// Whether the agent's socket is on the host, not following a symlink
    /// (the sandbox may write where it lies). After asking the agent to
    /// stop listening (the protocol's `unlisten`, before `hibernate`), the
    /// control plane waits until this is false.
    fn agent_listening(&self, config: &SandboxConfig) -> bool {
        let _ = config;
        false
    }

    /// Before the control plane asks the agent to stop listening: remove
    /// what would make it listen again at once (a marker an unfinished
    /// `restore` left). Best effort.
    fn before_unlisten(&self, config: &SandboxConfig) {
        let _ = config;
    }

    /// Remove what the host may still hold of a sandbox that has neither
    /// processes nor a record left (a start or a daemon that died
    /// halfway): its mounts under the state dir, its network. `config` may
    /// name only the id and the state dir. Best effort, idempotent, cheap
    /// when there is nothing; the caller removes the state dir afterwards.
    fn release_leftovers(&self, config: &SandboxConfig) {
        let _ = config;
    }

    /// Freeze a running sandbox that has nothing to do, so that it costs
    /// no CPU while idle (see [`Capabilities::doze`]); the sandbox stays
    /// `Running`. Every operation of the runtime on the sandbox, and
    /// [`Runtime::connect_agent`], thaws it first. Runtimes whose idle
    /// sandboxes cost nothing refuse.
    fn doze(&self, config: &SandboxConfig) -> Result<()> {
        let _ = config;
        Err(Error::Other(format!(
            "the {} runtime does not doze idle sandboxes (they cost no CPU)",
            self.name()
        )))
    }

    /// Thaw a sandbox [`Runtime::doze`] froze; nothing when it is not
    /// frozen, and a paused sandbox stays paused (and frozen). Idempotent.
    fn wake(&self, config: &SandboxConfig) -> Result<()> {
        let _ = config;
        Ok(())
    }

    /// Whether the sandbox is frozen right now (dozing, or paused on a
    /// runtime that also freezes paused sandboxes).
    fn dozing(&self, config: &SandboxConfig) -> bool {
        let _ = config;
        false
    }

    /// Connect to the running sandbox's agent socket the safe way (see
    /// [`agent_channel`]: no symlink followed, a socket, served from the
    /// sandbox's own cgroup). The handshake with the agent key follows.
    fn connect_agent(&self, config: &SandboxConfig) -> Result<std::os::unix::net::UnixStream> {
        let _ = config;
        Err(Error::Other(format!(
            "the {} runtime has no agent socket to connect to",
            self.name()
        )))
    }
}

/// The error of `hibernate`/`restore` on a runtime that cannot save memory.
pub fn not_hibernatable(runtime: &str) -> Error {
    Error::Unsupported {
        what: format!("hibernating a sandbox of the {runtime} runtime"),
        why: "saving processes and memory to disk needs gVisor (runsc checkpoint); the namespace \
              runtime would need CRIU 4, which this host does not provide"
            .into(),
        fix: "pause it instead (frozen in memory), stop it (files are kept), or create the \
              sandbox with --isolation gvisor"
            .into(),
    }
}
