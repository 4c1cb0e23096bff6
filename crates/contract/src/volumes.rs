//! Named volumes: `POST/GET /v1/volumes`, `GET/DELETE /v1/volumes/{name}`,
//! `POST /v1/volumes/{name}/resize`, `POST /v1/volumes/{name}/snapshots`
//! (body as a sandbox snapshot's) and `POST /v1/volumes/{name}/restore`
//! (body `{"snapshot": ...}`). A tenant's volume lives on its own
//! (32 MiB to 64 TiB, counted in the tenant's storage quota), is bound into
//! sandboxes at create (`volumes` of the create request) and outlives them;
//! another tenant's is not found (404).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::sandbox::SizeArg;

/// `POST /v1/volumes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// 1-63 lowercase letters, digits, '-', '_' or '.', starting with a
    /// letter or digit; unique among the tenant's volumes.
    pub name: String,
    /// 32 MiB to 64 TiB: bytes, or a string like `20G`. Required unless
    /// `from` is given (the new volume then has the snapshot's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeArg>,
    /// A snapshot of a named volume (id or name) to fill it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// `POST /v1/volumes/{name}/resize`: the new size, not smaller than the
/// current one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeVolume {
    pub size: SizeArg,
}

/// A named volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct NamedVolume {
    pub id: String,
    pub name: String,
    /// The size limit in bytes (writes past it fail with ENOSPC).
    pub size_bytes: u64,
    /// Bytes in use.
    pub used_bytes: u64,
    /// Mounted on the host now: a sandbox that uses it runs.
    pub mounted: bool,
    /// The tenant's sandboxes (running or not) that use it, by name.
    pub used_by: Vec<String>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A named volume bound into a sandbox (`NAME:/path[:ro]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// The tenant's volume.
    pub name: String,
    /// Absolute, normalized path inside the sandbox; not `/`, nor at,
    /// under or above /proc, /sys, /dev, /run/dwell or /.dwell.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}
