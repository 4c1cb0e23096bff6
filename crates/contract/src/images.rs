//! `/v1/images`: root filesystem images, shared by all tenants.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A root filesystem image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Image {
    /// The image's name (`host` or the name given at import).
    pub name: String,
    /// Content digest, `sha256:<hex>` (the config digest for imports).
    pub id: String,
    /// Overlay lower directories on the daemon's host, topmost first.
    pub layers: Vec<String>,
    /// Host directories overlaid individually at the same path inside
    /// (e.g. `/usr`); empty for imported images.
    pub host_dirs: Vec<String>,
    /// When the image was built or imported, seconds since the Unix epoch.
    pub created_at: u64,
    /// Disk space of the layers (host directories not counted).
    pub size_bytes: u64,
    /// Where it came from, e.g. `oci-layout:/path`.
    pub source: String,
    /// Environment from the image config (`KEY=value`).
    pub env: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// Labels from the image config.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Exposed ports from the image config (`8080/tcp`).
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    /// Health check from the image config.
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
    /// Signal that stops the start command (`SIGTERM` when unset).
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// A health check: `["CMD", arg...]` or `["CMD-SHELL", "command"]`, with
/// its timing in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Healthcheck {
    pub test: Vec<String>,
    #[serde(default)]
    pub interval_ms: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub start_period_ms: Option<u64>,
    #[serde(default)]
    pub retries: Option<u32>,
}

/// `POST /v1/images`: import an OCI layout dir or `docker save` tarball
/// that is on the daemon's host (admin).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ImportBody {
    pub name: String,
    /// A path on the daemon's host.
    pub path: String,
}
