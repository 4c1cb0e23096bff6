//! `/v1/snapshots` and `/v1/sandboxes/{id}/snapshots|restore`: snapshots
//! of sandbox volumes, and collecting the store.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A snapshot (its chunk list stays in the store).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Snapshot {
    pub id: String,
    pub name: Option<String>,
    pub tenant: String,
    pub sandbox: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    pub volume_size: u64,
    /// Bytes of data in the volume (holes excluded).
    pub data_bytes: u64,
    /// Stored bytes of the chunks it references (compressed, shared).
    pub stored_bytes: u64,
    /// Stored bytes this snapshot added to the store.
    pub uploaded_bytes: u64,
    /// How long the sandbox was frozen for the capture.
    pub freeze_us: Option<u64>,
    pub chunks: usize,
    /// Bytes of saved memory and processes it holds (a snapshot of a
    /// hibernated gVisor sandbox: `create --from` starts it warm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// `POST /v1/sandboxes/{id}/snapshots` (the body is optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct SnapshotCreate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /v1/sandboxes/{id}/restore`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct RestoreBody {
    /// Snapshot id or name.
    pub snapshot: String,
}

/// `DELETE /v1/snapshots/{id}`: what deleting it freed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct SnapshotDeleted {
    pub chunks_deleted: usize,
    pub bytes_freed: u64,
}

/// `POST /v1/gc/snapshots`: what one collection did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct GcSummary {
    /// Archive snapshots deleted because no sandbox points at them.
    pub orphan_archives_deleted: usize,
    pub manifests: usize,
    pub chunks_examined: usize,
    pub chunks_deleted: usize,
    pub bytes_freed: u64,
    /// Unreferenced chunks kept because a snapshot being written uses them.
    pub kept_leased: usize,
    /// Unreferenced chunks kept because they are younger than the grace period.
    pub kept_young: usize,
}
