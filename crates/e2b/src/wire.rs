//! The JSON bodies of the E2B API (field names as the SDKs send and read
//! them). Unknown request fields are ignored, as E2B's API does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v2/sandboxes`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: Option<String>,
    /// Seconds until the sandbox is killed (or paused, with `autoPause`).
    pub timeout: Option<u64>,
    pub auto_pause: Option<bool>,
    /// False: the timeout's pause keeps the files only (dwell's stop) and
    /// `connect` boots the sandbox again; absent or true: memory too.
    pub auto_pause_memory: Option<bool>,
    /// `{"enabled": true}`: a paused sandbox resumes when a request reaches
    /// it (the SDKs' `lifecycle.autoResume` / `lifecycle.auto_resume`).
    pub auto_resume: Option<AutoResume>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    pub mcp: Option<serde_json::Value>,
    pub volume_mounts: Option<Vec<serde_json::Value>>,
    /// Egress rules (and whether public URLs need the traffic token).
    pub network: Option<Network>,
}

/// `network` of a create: allow and deny lists of outbound traffic (allow
/// wins over deny, as E2B documents; domains only in `allowOut`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    pub allow_out: Option<Vec<String>>,
    pub deny_out: Option<Vec<String>>,
    /// False: the sandbox's public URLs need the traffic access token.
    pub allow_public_traffic: Option<bool>,
    /// The `Host` header the sandbox's servers get through the port proxy
    /// (`${PORT}` stands for the port).
    pub mask_request_host: Option<String>,
    /// Per-host request transforms and an egress proxy: not available.
    pub rules: Option<serde_json::Value>,
    pub egress_proxy: Option<serde_json::Value>,
}

/// `PUT /sandboxes/{id}/network`: the new egress rules of a running
/// sandbox (lists not given are cleared).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkUpdate {
    pub allow_out: Option<Vec<String>>,
    pub deny_out: Option<Vec<String>>,
    /// False: deny everything not in `allowOut` (as `denyOut: ["0.0.0.0/0"]`).
    /// The SDKs send it in snake case, as on create.
    #[serde(rename = "allow_internet_access", alias = "allowInternetAccess")]
    pub allow_internet_access: Option<bool>,
    /// Per-host request transforms: not available.
    pub rules: Option<serde_json::Value>,
}

/// `SandboxAutoResumeConfig` of a create request.
#[derive(Debug, Default, Deserialize)]
pub struct AutoResume {
    #[serde(default)]
    pub enabled: bool,
}

/// `POST /v2/sandboxes/{id}/connect`.
#[derive(Debug, Default, Deserialize)]
pub struct Connect {
    pub timeout: Option<u64>,
}

/// `POST /sandboxes/{id}/timeout`.
#[derive(Debug, Default, Deserialize)]
pub struct Timeout {
    pub timeout: Option<u64>,
}

/// `POST /sandboxes/{id}/pause`: `memory: false` keeps only the files
/// (the sandbox is stopped; `connect` boots it again).
#[derive(Debug, Default, Deserialize)]
pub struct Pause {
    pub memory: Option<bool>,
}

/// `POST /sandboxes/{id}/refreshes`: keep the sandbox alive for
/// `duration` more seconds.
#[derive(Debug, Default, Deserialize)]
pub struct Refresh {
    pub duration: Option<u64>,
}

/// `POST /sandboxes/{id}/fork`.
#[derive(Debug, Default, Deserialize)]
pub struct Fork {
    /// Seconds until each fork times out.
    pub timeout: Option<u64>,
    /// How many forks.
    pub count: Option<u64>,
}

/// One fork of a `POST /sandboxes/{id}/fork` answer: the new sandbox, or
/// why that fork failed.
#[derive(Debug, Serialize)]
pub struct ForkResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// E2B's error object.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub code: u16,
    pub message: String,
}

/// `POST /sandboxes/{id}/snapshots`.
#[derive(Debug, Default, Deserialize)]
pub struct NewSnapshot {
    pub name: Option<String>,
}

/// The answer of create and connect.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub alias: Option<String>,
    pub envd_version: String,
    pub envd_access_token: String,
    pub traffic_access_token: Option<String>,
    pub domain: Option<String>,
}

/// An item of `GET /v2/sandboxes`; with the detail fields, the answer of
/// `GET /sandboxes/{id}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub alias: Option<String>,
    pub started_at: String,
    pub end_at: String,
    pub cpu_count: u64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub metadata: BTreeMap<String, String>,
    pub state: &'static str,
    pub envd_version: String,
    pub volume_mounts: Vec<serde_json::Value>,
    #[serde(flatten)]
    pub detail: Option<Detail>,
}

/// The fields only `GET /sandboxes/{id}` has.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    pub envd_access_token: String,
    pub domain: Option<String>,
    pub allow_internet_access: bool,
    pub lifecycle: Lifecycle,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_mode: Option<&'static str>,
    pub network: NetworkInfo,
}

/// `network` of `GET /sandboxes/{id}`: the egress rules and how the port
/// proxy serves the sandbox.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInfo {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_out: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_out: Vec<String>,
    pub allow_public_traffic: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_request_host: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    pub auto_resume: bool,
    /// `kill` or `pause`.
    pub on_timeout: &'static str,
}

/// An item of `GET /sandboxes/{id}/metrics`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    pub timestamp: String,
    pub timestamp_unix: i64,
    pub cpu_count: u64,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// A snapshot as E2B shows it.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    pub names: Vec<String>,
}
