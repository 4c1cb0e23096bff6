//! The sandbox as users see it: spec, mode, state, and the validation of a
//! create request.

use std::collections::BTreeMap;

use dwell_runtime::host::egress::{EgressRules, Precedence};
use dwell_runtime::NetworkMode;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::looks_like_id;
use crate::size::parse_size;

pub use dwell_store::{Mode, State};

/// A sandbox record with its spec, as the store returns it.
pub type Record = dwell_store::SandboxRecord<SandboxSpec>;

/// The state a user's word names, or an error that lists them.
pub fn parse_state(s: &str) -> Result<State> {
    State::parse(s).ok_or_else(|| {
        Error::invalid(
            "state",
            format!("{s:?} is not a state; use creating, running, paused, hibernated, stopped, archived, deleted or error"),
        )
    })
}

/// Defaults of a new sandbox.
pub const DEFAULT_VCPUS: f64 = 1.0;
pub const DEFAULT_MEMORY: u64 = 512 << 20;
pub const DEFAULT_PIDS: u64 = 1024;
pub const DEFAULT_DISK: u64 = 4 << 30;

/// The part of a sandbox fixed at creation, stored as JSON in its record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    pub policies: crate::policy::Policies,
    /// Names of secret variables (values are sealed, never shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env_names: Vec<String>,
    /// The sealed values; only in the database, never in API answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_env: Option<String>,
    /// Keeps CAP_NET_RAW (raw and packet sockets); off unless asked for.
    #[serde(default)]
    pub allow_raw_sockets: bool,
    /// Core dumps allowed (RLIMIT_CORE not forced to 1); off unless asked
    /// for, and refused while the host's core_pattern is a pipe.
    #[serde(default)]
    pub allow_core_dumps: bool,
    /// Egress rules of a NAT sandbox (changed live by `update`).
    #[serde(default, skip_serializing_if = "EgressRules::is_open")]
    pub egress: EgressRules,
    /// Named volumes of the tenant bound into the sandbox (see
    /// [`crate::volumes`]); kept across stop, start, pause, hibernation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// The command the agent runs and supervises as the sandbox's service
    /// (the image's entrypoint + cmd unless the create said otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<dwell_proto::ServiceSpec>,
    /// Labels its node must carry (a cluster's placement and moves).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Take a backup (a snapshot kept in the object store) this often, in
    /// milliseconds; None: no backups (see [`crate::backup`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_every_ms: Option<u64>,
}

pub use crate::volume_spec::VolumeMount;

/// Version 1 is the layout above; records written before specs carried
/// a version have the same layout.
impl dwell_store::Spec for SandboxSpec {
    const VERSION: u32 = 1;
}

impl SandboxSpec {
    /// The runtime's view of the opt-in privileges.
    pub fn grants(&self) -> dwell_runtime::Grants {
        dwell_runtime::Grants {
            raw_sockets: self.allow_raw_sockets,
            core_dumps: self.allow_core_dumps,
            no_new_privs: false,
        }
    }
}

/// A size given as a number of bytes or as a string like `512M`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SizeArg {
    Bytes(u64),
    Text(String),
}

impl SizeArg {
    pub(crate) fn bytes(&self, field: &str) -> Result<u64> {
        match self {
            SizeArg::Bytes(b) => Ok(*b),
            SizeArg::Text(s) => parse_size(s).map_err(|m| Error::invalid(field, m)),
        }
    }
}

/// What a client sends to create a sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: Option<String>,
    pub image: Option<String>,
    pub mode: Option<Mode>,
    pub vcpus: Option<f64>,
    pub memory: Option<SizeArg>,
    pub pids: Option<u64>,
    pub disk: Option<SizeArg>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub network: Option<NetworkMode>,
    /// Isolation runtime: `ns` (namespace, the default unless the daemon
    /// says otherwise) or `gvisor`.
    pub runtime: Option<String>,
    /// Lifecycle policies.
    #[serde(default)]
    pub policies: Option<crate::policy::PolicyArgs>,
    /// Secret environment variables: sealed at rest, never shown.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// Start from this snapshot (id or name): its volume content and size.
    #[serde(default)]
    pub from: Option<String>,
    /// Keep CAP_NET_RAW (raw and packet sockets). Default false.
    #[serde(default)]
    pub allow_raw_sockets: Option<bool>,
    /// Allow core dumps (RLIMIT_CORE not 1). Default false; refused while
    /// the host's kernel.core_pattern is a pipe.
    #[serde(default)]
    pub allow_core_dumps: Option<bool>,
    /// Private networks (names or ids) to put the sandbox on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Egress allow list (CIDRs and domain names) of a NAT sandbox; with
    /// neither list given, the tenant's or the daemon's default rules.
    #[serde(default)]
    pub allow_out: Option<Vec<String>>,
    /// Egress deny list; `0.0.0.0/0` denies everything not allowed.
    #[serde(default)]
    pub deny_out: Option<Vec<String>>,
    /// Which list wins (E2B's API: allow; dwell's: deny). Internal: not
    /// part of dwell's API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_precedence: Option<Precedence>,
    /// Named volumes to bind in (`NAME:/path[:ro]` on the command line).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// The service: overrides of the image's start command, restart
    /// policy, health check (see [`ServiceArgs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceArgs>,
    /// In a cluster: only nodes with all these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Back the sandbox up this often (`15m`, or seconds; `off`: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_every: Option<crate::policy::DurationArg>,
}

/// Check egress rules, naming the bad entry and the field.
pub fn check_egress(rules: &EgressRules) -> Result<()> {
    dwell_runtime::host::egress::Policy::compile(rules)
        .map(|_| ())
        .map_err(|m| {
            let field = if m.starts_with("deny-out") {
                "deny_out"
            } else {
                "allow_out"
            };
            Error::invalid(field, m)
        })
}

/// Limits checked on create, so a typo cannot ask for the impossible.
pub struct HostLimits {
    pub cpus: f64,
    pub memory_bytes: u64,
}

impl HostLimits {
    pub fn detect() -> HostLimits {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map(|kb| kb * 1024)
            .unwrap_or(u64::MAX);
        HostLimits {
            cpus,
            memory_bytes: mem,
        }
    }
}

/// Validate a name: 1-63 of `[a-z0-9_.-]`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if !ok {
        return Err(Error::invalid(
            "name",
            format!("{name:?}: use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"),
        ));
    }
    if looks_like_id(name) {
        return Err(Error::invalid(
            "name",
            format!("{name:?} looks like a sandbox id and could shadow one; pick a name that is not 20 random characters"),
        ));
    }
    Ok(())
}

/// Refuse a new sandbox or tenant name with `--` in it: `--` separates the
/// sandbox name from the tenant in port proxy host names
/// (`PORT-NAME--TENANT.DOMAIN`), so such a name would be ambiguous there.
/// (Older names with `--` still work, and are reached there by id.)
pub fn check_no_separator(field: &str, name: &str) -> Result<()> {
    if name.contains("--") {
        return Err(Error::invalid(
            field,
            format!(
                "{name:?} contains \"--\", which separates sandbox name and tenant in preview \
                 host names (PORT-NAME--TENANT.DOMAIN); use a single '-' instead"
            ),
        ));
    }
    Ok(())
}

impl CreateRequest {
    /// Check every field and fill in defaults.
    pub fn to_spec(&self, host: &HostLimits) -> Result<SandboxSpec> {
        let vcpus = self.vcpus.unwrap_or(DEFAULT_VCPUS);
        if !(vcpus >= 0.01 && vcpus <= host.cpus) {
            return Err(Error::invalid(
                "vcpus",
                format!(
                    "{vcpus} is out of range; this host has {} CPUs: ask for 0.01 to {}",
                    host.cpus, host.cpus
                ),
            ));
        }
        let memory = match &self.memory {
            Some(m) => m.bytes("memory")?,
            None => DEFAULT_MEMORY,
        };
        if memory < (16 << 20) || memory > host.memory_bytes {
            return Err(Error::invalid(
                "memory",
                format!(
                    "{} is out of range; ask for at least 16M and at most the host's {}",
                    crate::size::format_size(memory),
                    crate::size::format_size(host.memory_bytes)
                ),
            ));
        }
        let pids = self.pids.unwrap_or(DEFAULT_PIDS);
        if !(8..=1 << 22).contains(&pids) {
            return Err(Error::invalid(
                "pids",
                format!("{pids} is out of range; ask for 8 to 4194304"),
            ));
        }
        let disk = match &self.disk {
            Some(d) => d.bytes("disk")?,
            None => DEFAULT_DISK,
        };
        if !((32 << 20)..=(16 << 40)).contains(&disk) {
            return Err(Error::invalid(
                "disk",
                format!(
                    "{} is out of range; ask for 32M to 16T",
                    crate::size::format_size(disk)
                ),
            ));
        }
        for k in self.env.keys().chain(self.secret_env.keys()) {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(Error::invalid(
                    "env",
                    format!("{k:?} is not a valid variable name; names cannot be empty or hold '=' or NUL"),
                ));
            }
        }
        if let Some(r) = &self.runtime {
            crate::runtimes::canonical(r)?;
        }
        let mut policies = crate::policy::Policies::default();
        if let Some(p) = &self.policies {
            p.apply(&mut policies)?;
        }
        if let Some(k) = self.secret_env.keys().find(|k| self.env.contains_key(*k)) {
            return Err(Error::invalid(
                "env",
                format!("{k:?} is both a plain and a secret variable; give it once"),
            ));
        }
        let allow_core_dumps = self.allow_core_dumps.unwrap_or(false);
        if allow_core_dumps {
            dwell_runtime::core_pattern::check_host()
                .map_err(|e| Error::invalid("allow_core_dumps", e.to_string()))?;
        }
        let egress = EgressRules {
            allow: self.allow_out.clone().unwrap_or_default(),
            deny: self.deny_out.clone().unwrap_or_default(),
            precedence: self.egress_precedence.unwrap_or_default(),
        };
        check_egress(&egress)?;
        if !egress.is_open() && self.network.unwrap_or_default() != NetworkMode::Nat {
            return Err(Error::invalid(
                "allow_out",
                "egress rules apply to sandboxes with a network; add --net (network: nat) or \
                 drop --allow-out/--deny-out",
            ));
        }
        Ok(SandboxSpec {
            egress,
            allow_raw_sockets: self.allow_raw_sockets.unwrap_or(false),
            allow_core_dumps,
            secret_env_names: self.secret_env.keys().cloned().collect(),
            sealed_env: None,
            policies,
            vcpus,
            memory_bytes: memory,
            pids,
            disk_bytes: disk,
            env: self.env.clone(),
            labels: self.labels.clone(),
            network: self.network.unwrap_or_default(),
            volumes: crate::volume_spec::check_mounts(&self.volumes)?,
            // Resolved against the image by `create`.
            service: None,
            node_selector: self.node_selector.clone(),
            backup_every_ms: match &self.backup_every {
                Some(d) => d.millis("backup_every")?,
                None => None,
            },
        })
    }
}

/// The service part of a create request: overrides of what the image says.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceArgs {
    /// Replaces the image's ENTRYPOINT; the image's CMD is then dropped
    /// unless `cmd` is given too (as Docker does). `[]` clears it.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's CMD.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// No service, whatever the image says.
    #[serde(default)]
    pub disabled: bool,
    /// `no` (default), `on-failure`, `on-failure:N` (at most N restarts) or `always`.
    #[serde(default)]
    pub restart: Option<String>,
    /// Replaces the image's health check.
    #[serde(default)]
    pub healthcheck: Option<dwell_proto::HealthCheckSpec>,
    /// No health check, whatever the image says.
    #[serde(default)]
    pub no_healthcheck: bool,
    /// Signal that stops it: a name (`SIGINT`, `INT`) or number.
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// Grace after the stop signal before SIGKILL, in milliseconds (default 10 s).
    #[serde(default)]
    pub stop_timeout_ms: Option<u64>,
}

/// A sandbox as the API returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sandbox {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub image: String,
    pub mode: Mode,
    pub runtime: String,
    pub state: State,
    pub desired_state: State,
    /// Why the last transition happened.
    pub reason: String,
    pub spec: SandboxSpec,
    pub created_at: i64,
    pub updated_at: i64,
    pub state_changed_at: i64,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    /// Volume details (kind, limit, usage); filled by `inspect`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeView>,
    /// Last exec, file operation, connection or keepalive (Unix ms).
    pub last_activity_at: Option<i64>,
    /// Idle and TTL policies are held off until then by a keepalive.
    pub hold_until: Option<i64>,
    /// The policies that apply now, soonest first.
    #[serde(default)]
    pub schedule: Vec<crate::policy::Scheduled>,
    /// Live usage from the kernel; filled by `inspect` of a running sandbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<dwell_runtime::Stats>,
    /// Where the volume of an archived sandbox is (snapshot and sizes).
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
    /// When its last backup was taken (Unix ms); filled by `inspect` of a
    /// sandbox with `backup_every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_at: Option<i64>,
    /// The private networks it is on, with its address on each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Attachment>,
    /// Filled by `inspect` of a running sandbox with a service: its state
    /// as the agent reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<dwell_proto::ServiceStatus>,
    /// Filled by `inspect`: what the image's config says (its labels are
    /// shown here, apart from the sandbox's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_config: Option<ImageConfigView>,
}

/// The parts of an image's config `inspect` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageConfigView {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Ports the image declares (`5432/tcp`); `dwell port` suggests them.
    /// Nothing is exposed until asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
}

impl ImageConfigView {
    /// The view of `image`'s config.
    pub fn of(image: &dwell_storage::Image) -> ImageConfigView {
        ImageConfigView {
            entrypoint: image.entrypoint.clone(),
            cmd: image.cmd.clone(),
            workdir: image.workdir.clone(),
            user: image.user.clone(),
            labels: image.labels.clone(),
            exposed_ports: image.exposed_ports.clone(),
        }
    }

    /// Whether it says nothing.
    pub fn is_empty(&self) -> bool {
        self == &ImageConfigView::default()
    }
}

/// One private network a sandbox is on (see [`crate::networks`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    pub network: String,
    pub address: String,
    pub subnet: String,
    /// The interface inside the sandbox (`eth1`, `eth2`, ...).
    pub interface: String,
}

/// Where an archived sandbox's volume is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArchiveRef {
    /// The snapshot holding the volume.
    pub snapshot: String,
    /// Size of the volume.
    pub volume_size: u64,
    /// Bytes of data in it (holes excluded).
    pub data_bytes: u64,
    /// Stored (compressed, shared) bytes of the archive's chunks.
    pub stored_bytes: u64,
    /// When the archive was taken (RFC 3339).
    pub archived_at: String,
    /// The sandbox was hibernated: its saved memory and processes are in
    /// the archive too, and it resumes warm.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hibernated: bool,
}

/// Volume details for `inspect`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeView {
    /// `loop` (ext4 image, hard limit) or `directory` (usage only).
    pub kind: String,
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub mounted: bool,
    /// Whether writes past `size_bytes` fail with ENOSPC.
    pub limit_enforced: bool,
}

impl Sandbox {
    pub fn from_record(r: &Record) -> Sandbox {
        let mut spec = r.spec.clone();
        spec.sealed_env = None;
        Sandbox {
            id: r.id.clone(),
            name: r.name.clone(),
            tenant: r.tenant.clone(),
            image: r.image.clone(),
            mode: r.mode,
            runtime: r.runtime.to_string(),
            state: r.state,
            desired_state: r.desired_state,
            reason: r.reason.clone(),
            schedule: crate::policy::schedule(r, &r.spec.policies, false),
            spec,
            created_at: r.created_at,
            updated_at: r.updated_at,
            state_changed_at: r.state_changed_at,
            started_at: r.started_at,
            stopped_at: r.stopped_at,
            last_activity_at: r.last_activity_at,
            hold_until: r.hold_until,
            volume: None,
            stats: None,
            archive: None,
            saved_state_bytes: None,
            wakes_on_use: matches!(r.state, State::Paused | State::Hibernated)
                .then(|| crate::policy::wakes_on_use(&r.spec.policies, &r.reason)),
            networks: Vec::new(),
            service: None,
            image_config: None,
            node: r.node.clone(),
            last_backup_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostLimits {
        HostLimits {
            cpus: 2.0,
            memory_bytes: 8 << 30,
        }
    }

    #[test]
    fn egress_rules_need_a_network_and_valid_entries() {
        let req: CreateRequest =
            serde_json::from_str(r#"{"allow_out":["pypi.org"],"deny_out":["0.0.0.0/0"]}"#).unwrap();
        let e = req.to_spec(&host()).unwrap_err();
        assert!(e.to_string().contains("--net"), "{e}");
        let req: CreateRequest = serde_json::from_str(
            r#"{"network":"nat","allow_out":["pypi.org"],"deny_out":["0.0.0.0/0"]}"#,
        )
        .unwrap();
        let spec = req.to_spec(&host()).unwrap();
        assert_eq!(spec.egress.allow, ["pypi.org"]);
        assert_eq!(spec.egress.precedence, Precedence::DenyWins);
        let req: CreateRequest =
            serde_json::from_str(r#"{"network":"nat","deny_out":["10.0.0.0/40"]}"#).unwrap();
        match req.to_spec(&host()).unwrap_err() {
            Error::Invalid { field, message } => {
                assert_eq!(field, "deny_out");
                assert!(message.contains("not a valid address or CIDR"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_and_sizes() {
        let req: CreateRequest =
            serde_json::from_str(r#"{"memory":"256M","disk":1073741824}"#).unwrap();
        let spec = req.to_spec(&host()).unwrap();
        assert_eq!(spec.memory_bytes, 256 << 20);
        assert_eq!(spec.disk_bytes, 1 << 30);
        assert_eq!(spec.vcpus, DEFAULT_VCPUS);
    }

    #[test]
    fn rejects_out_of_range_with_the_fix() {
        let req = CreateRequest {
            vcpus: Some(64.0),
            ..Default::default()
        };
        let e = req.to_spec(&host()).unwrap_err().to_string();
        assert!(e.contains("vcpus") && e.contains("0.01 to 2"), "{e}");
        let req: CreateRequest = serde_json::from_str(r#"{"memory":"1X"}"#).unwrap();
        assert!(req.to_spec(&host()).is_err());
        assert!(serde_json::from_str::<CreateRequest>(r#"{"memroy":"1G"}"#).is_err());
    }

    #[test]
    fn privileges_are_off_unless_asked_for_and_old_specs_read_as_off() {
        let spec = CreateRequest::default().to_spec(&host()).unwrap();
        assert_eq!(spec.grants(), dwell_runtime::Grants::default());
        let req: CreateRequest = serde_json::from_str(r#"{"allow_raw_sockets":true}"#).unwrap();
        let spec = req.to_spec(&host()).unwrap();
        assert!(spec.grants().raw_sockets && !spec.grants().core_dumps);
        // A record written before these fields existed.
        let mut old =
            serde_json::to_value(CreateRequest::default().to_spec(&host()).unwrap()).unwrap();
        let obj = old.as_object_mut().unwrap();
        obj.remove("allow_raw_sockets");
        obj.remove("allow_core_dumps");
        let read: SandboxSpec = serde_json::from_value(old).unwrap();
        assert_eq!(read.grants(), dwell_runtime::Grants::default());
    }

    #[test]
    fn names() {
        assert!(validate_name("work").is_ok());
        assert!(validate_name("Work").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name(&crate::ids::new_id()).is_err());
        assert!(check_no_separator("name", "my-app").is_ok());
        let e = check_no_separator("name", "my--app")
            .unwrap_err()
            .to_string();
        assert!(e.contains("separates sandbox name and tenant"), "{e}");
    }
}
