//! `/v1/sandboxes`: the sandbox as clients see it, what creates and
//! changes one, and what it reports (events, stats, diff, progress).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Lifecycle states. `creating -> running <-> paused -> stopped -> deleted`,
/// plus `error` (the reason says why), `archived` (volume moved into the
/// snapshot store; `start` brings it back) and `hibernated` (gVisor
/// sandboxes saved to disk, memory and processes included; `resume`
/// restores them).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Creating,
    Running,
    Paused,
    Stopped,
    Deleted,
    Error,
    Archived,
    Hibernated,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Creating => "creating",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::Deleted => "deleted",
            State::Error => "error",
            State::Archived => "archived",
            State::Hibernated => "hibernated",
        }
    }
}

/// Whether a sandbox outlives a stop.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Files, packages and working dirs survive stop/start and restarts.
    #[default]
    Persistent,
    /// Any stop deletes the sandbox and wipes its data.
    Ephemeral,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Persistent => "persistent",
            Mode::Ephemeral => "ephemeral",
        }
    }
}

/// Network of a sandbox.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Own network namespace with loopback only.
    #[default]
    None,
    /// Own network namespace with a veth pair and NAT for outbound traffic.
    Nat,
}

/// What a fired policy does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pause,
    Stop,
    Archive,
    Delete,
}

/// Policies of one sandbox (all optional), durations in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Policies {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime_ms: Option<u64>,
    /// What `ttl` does when it fires; by default delete (ephemeral) or stop
    /// (persistent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_after_ms: Option<u64>,
    /// Wake on use: an exec, file operation, SSH login or proxied request
    /// resumes the sandbox when it is paused or hibernated. Unset: on when
    /// a policy paused or hibernated it, off when a user did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_resume: Option<bool>,
}

/// A policy and when it fires next.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Scheduled {
    /// The policy's name (`ttl`, `idle_timeout`, ...).
    pub policy: String,
    pub action: Action,
    /// Unix milliseconds.
    pub at: i64,
}

/// The part of a sandbox fixed at creation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct SandboxSpec {
    pub vcpus: f64,
    pub memory_bytes: u64,
    pub pids: u64,
    pub disk_bytes: u64,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub network: NetworkMode,
    #[serde(default)]
    pub policies: Policies,
    /// Names of secret variables (values are sealed, never shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env_names: Vec<String>,
    /// Keeps CAP_NET_RAW (raw and packet sockets).
    #[serde(default)]
    pub allow_raw_sockets: bool,
    /// Core dumps allowed.
    #[serde(default)]
    pub allow_core_dumps: bool,
    /// Egress rules of a NAT sandbox; absent: it may connect anywhere but
    /// the host and the always-blocked networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressRules>,
    /// Named volumes bound in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::volumes::VolumeMount>,
    /// The command the agent runs and supervises as the sandbox's service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<crate::service::ServiceSpec>,
    /// Labels its node must carry (a cluster's placement and moves).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// How often it is backed up into the object store, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_every_ms: Option<u64>,
}

/// Which list wins when an address or name is on both.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Precedence {
    /// A deny entry beats an allow entry (dwell's API); `0.0.0.0/0` in the
    /// deny list only makes "not allowed" the default.
    #[default]
    DenyWins,
    /// An allow entry beats every deny entry (sandboxes made through the
    /// E2B API, as E2B documents it).
    AllowWins,
}

/// Egress rules: address blocks (IPv4, IPv6) and domain names
/// (`pypi.org`, `*.example.com`: names below it). `0.0.0.0/0` in `deny`
/// denies everything not allowed. Domain rules follow DNS: the sandbox's
/// resolver answers denied names with NXDOMAIN and lets the sandbox reach
/// the addresses it returns for allowed ones. The host, cloud metadata and
/// link-local networks stay blocked whatever the rules say.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct EgressRules {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub precedence: Precedence,
}

/// Volume details, filled by `inspect`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct VolumeView {
    /// `loop` (ext4 image, hard limit) or `directory` (usage only).
    pub kind: String,
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub mounted: bool,
    /// Whether writes past `size_bytes` fail with ENOSPC.
    pub limit_enforced: bool,
}

/// Live usage of a running sandbox, from the kernel.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Stats {
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub cpu_usage_ns: u64,
    pub pids: u64,
    /// How many times the kernel's OOM killer fired in this sandbox.
    pub oom_kills: u64,
}

/// Where the volume of an archived sandbox is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ArchiveRef {
    /// The snapshot holding the volume.
    pub snapshot: String,
    pub volume_size: u64,
    /// Bytes of data in it (holes excluded).
    pub data_bytes: u64,
    /// Stored (compressed, shared) bytes of the archive's chunks.
    pub stored_bytes: u64,
    /// When the archive was taken (RFC 3339).
    pub archived_at: String,
    /// Its saved memory and processes are archived too: it resumes warm.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hibernated: bool,
}

/// A sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Sandbox {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub image: String,
    pub mode: Mode,
    /// Isolation runtime (`ns` or `gvisor`).
    pub runtime: String,
    pub state: State,
    pub desired_state: State,
    /// Why the last transition happened.
    pub reason: String,
    pub spec: SandboxSpec,
    /// Unix milliseconds, like every `*_at` number here.
    pub created_at: i64,
    pub updated_at: i64,
    pub state_changed_at: i64,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    /// Filled by `inspect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeView>,
    /// Last exec, file operation, connection or keepalive.
    pub last_activity_at: Option<i64>,
    /// Idle and TTL policies are held off until then by a keepalive.
    pub hold_until: Option<i64>,
    /// The policies that apply now, soonest first.
    #[serde(default)]
    pub schedule: Vec<Scheduled>,
    /// Filled by `inspect` of a running sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    /// Where the volume of an archived sandbox is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveRef>,
    /// Bytes of saved memory and process state of a hibernated sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_state_bytes: Option<u64>,
    /// Of a paused or hibernated sandbox: whether an exec, file operation,
    /// SSH login or proxied request resumes it first (its `auto_resume`
    /// policy, else whether a policy rather than a user put it to sleep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wakes_on_use: Option<bool>,
    /// In a cluster: the node that owns and runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When its last backup was taken (Unix ms), if it is backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_at: Option<i64>,
    /// Filled by `inspect`: the ports exposed through the port proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::ports::PortExposure>,
    /// The private networks it is on, with its address on each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<crate::networks::NetworkAttachment>,
    /// Filled by `inspect` of a running sandbox with a service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<crate::service::ServiceStatus>,
    /// Filled by `inspect`: what the image's config says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_config: Option<crate::service::ImageConfigView>,
}

/// The longest duration a request may give: 100 years, in seconds. Longer
/// ones are refused (400) before they reach arithmetic in milliseconds.
pub const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;

/// The largest count or size a request may give: what the metadata
/// store's signed 64-bit integers hold. Larger ones are refused (400).
pub const MAX_QUANTITY: u64 = i64::MAX as u64;

/// A size: a number of bytes or a string like `512M`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(untagged)]
pub enum SizeArg {
    Bytes(u64),
    Text(String),
}

/// A duration: a string like `10m`, `1h30m`, `7d`, or `off` to clear; or a
/// number of seconds (0 clears).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(untagged)]
pub enum DurationArg {
    Seconds(u64),
    Text(String),
}

/// Policy settings in a request. Absent fields keep their current value;
/// `off` clears one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyArgs {
    #[serde(default)]
    pub ttl: Option<DurationArg>,
    #[serde(default)]
    pub idle_timeout: Option<DurationArg>,
    #[serde(default)]
    pub pause_after: Option<DurationArg>,
    #[serde(default)]
    pub archive_after: Option<DurationArg>,
    #[serde(default)]
    pub delete_after: Option<DurationArg>,
    #[serde(default)]
    pub max_lifetime: Option<DurationArg>,
    /// What `ttl` does when it fires.
    #[serde(default)]
    pub ttl_action: Option<Action>,
    /// Wake on use when paused or hibernated (`true`), or never (`false`);
    /// see [`Policies::auto_resume`].
    #[serde(default)]
    pub auto_resume: Option<bool>,
}

impl PolicyArgs {
    pub fn is_empty(&self) -> bool {
        self == &PolicyArgs::default()
    }
}

/// `POST /v1/sandboxes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<SizeArg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<SizeArg>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkMode>,
    /// Isolation runtime: `ns` or `gvisor` (default: the daemon's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<PolicyArgs>,
    /// Secret environment variables: sealed at rest, never shown.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Start from this snapshot (id or name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_raw_sockets: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_core_dumps: Option<bool>,
    /// Egress allow list of a NAT sandbox: CIDR blocks and domain names.
    /// With neither list given, the tenant's default rules apply, else the
    /// daemon's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    /// Egress deny list; `0.0.0.0/0` denies everything not allowed. A deny
    /// entry wins over an allow entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    /// Private networks (names or ids) to put the sandbox on; its peers
    /// there reach it by its name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Named volumes of the tenant to bind in (they must exist: `POST
    /// /v1/volumes`). Several sandboxes may bind one read-write at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::volumes::VolumeMount>,
    /// The service: overrides of the image's start command, restart
    /// policy and health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<crate::service::ServiceArgs>,
    /// In a cluster: place the sandbox only on a node with all these
    /// labels (`dwell serve --node-label`); moves keep to them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Back it up into the object store this often (`15m`, or seconds;
    /// `off`: never). In a cluster it runs again on another node from its
    /// newest backup when its node is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_every: Option<DurationArg>,
}

/// `PATCH /v1/sandboxes/{id}`: what can change on a live sandbox (its
/// policies and egress rules).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<PolicyArgs>,
    /// Replaces the egress allow list (`[]` clears it); applied to the
    /// running sandbox at once, without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    /// Replaces the egress deny list (`[]` clears it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
}

/// `POST /v1/sandboxes/{id}/keepalive`: hold idle and TTL policies off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct KeepaliveBody {
    pub duration: DurationArg,
}

/// One entry of a sandbox's event log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Event {
    pub seq: i64,
    pub sandbox_id: String,
    /// Unix milliseconds.
    pub at: i64,
    /// `state`, `request`, `step` or `error`.
    pub kind: String,
    pub message: String,
}

/// How a path differs from the image.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Changed,
    Deleted,
}

/// A file that differs from the image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct FileChange {
    pub path: String,
    pub change: Change,
    /// Bytes of the new content (0 for deletions and directories).
    pub size: u64,
    pub dir: bool,
}

/// A Debian package.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// For changed packages: the image's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was: Option<String>,
}

/// Packages that differ from the image.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Packages {
    pub installed: Vec<Package>,
    pub removed: Vec<Package>,
    pub changed: Vec<Package>,
}

/// `GET /v1/sandboxes/{id}/diff`: how a sandbox differs from its image.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Drift {
    pub packages: Packages,
    pub files: Vec<FileChange>,
    /// Bytes added or changed in all.
    pub bytes: u64,
}

/// `GET /v1/sandboxes/{id}/progress`: the operation running on a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct OpProgress {
    /// `snapshot`, `restore`, `archive` or `unarchive`.
    pub op: String,
    /// Bytes of the volume handled so far.
    pub done: u64,
    /// Bytes of the volume in total.
    pub total: u64,
}
