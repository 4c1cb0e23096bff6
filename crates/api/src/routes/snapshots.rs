//! `/v1/snapshots` and `/v1/sandboxes/{id}/snapshots|restore|archive|progress`:
//! capture, list, inspect, delete and restore snapshots of sandbox volumes,
//! archive sandboxes, follow the progress of those operations, and
//! `/v1/gc/snapshots` (admin) to collect the store.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use dwell_control::Sandbox;
use dwell_snapshot::Manifest;
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// A snapshot as the API shows it (the chunk list stays in the store).
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotView {
    pub id: String,
    pub name: Option<String>,
    pub tenant: String,
    pub sandbox: Option<String>,
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

impl From<&Manifest> for SnapshotView {
    fn from(m: &Manifest) -> Self {
        SnapshotView {
            id: m.id.clone(),
            name: m.labels.get("name").cloned(),
            tenant: m.tenant.clone(),
            sandbox: m.source.sandbox.clone(),
            created_at: m.created_at.clone(),
            volume_size: m.source.volume_size,
            data_bytes: m.sizes.data,
            stored_bytes: m.sizes.stored,
            uploaded_bytes: m.sizes.uploaded,
            freeze_us: m.freeze_us,
            chunks: m.chunk_ids().len(),
            memory_bytes: dwell_control::memory::memory_bytes(m),
        }
    }
}

#[derive(Deserialize, Default)]
pub struct CreateBody {
    pub name: Option<String>,
}

pub async fn create(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Option<Json<CreateBody>>,
) -> ApiResult<(StatusCode, Json<SnapshotView>)> {
    let name = body.and_then(|Json(b)| b.name);
    let m = st.ctl.snapshot_create(&p.tenant, &id, name).await?;
    Ok((StatusCode::CREATED, Json(SnapshotView::from(&m))))
}

#[derive(Deserialize)]
pub struct ListQuery {
    sandbox: Option<String>,
}

pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<SnapshotView>>> {
    let all = st.ctl.snapshots(&p.tenant, q.sandbox.as_deref()).await?;
    Ok(Json(all.iter().map(SnapshotView::from).collect()))
}

pub async fn inspect(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<SnapshotView>> {
    Ok(Json(SnapshotView::from(
        &st.ctl.snapshot(&p.tenant, &id).await?,
    )))
}

pub async fn delete(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let r = st.ctl.snapshot_delete(&p.tenant, &id).await?;
    Ok(Json(
        serde_json::json!({"chunks_deleted": r.chunks_deleted, "bytes_freed": r.bytes_freed}),
    ))
}

#[derive(Deserialize)]
pub struct RestoreBody {
    pub snapshot: String,
}

pub async fn restore(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<RestoreBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Sandbox>> {
    let Json(b) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad restore request: {}; send {{\"snapshot\": \"NAME\"}}",
            e.body_text()
        ))
    })?;
    Ok(Json(st.ctl.restore(&p.tenant, &id, &b.snapshot).await?))
}

pub async fn archive(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(st.ctl.archive(&p.tenant, &id).await?))
}

/// Progress of the operation running on a sandbox (`null` when none).
pub async fn progress(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Option<dwell_control::progress::OpProgress>>> {
    Ok(Json(st.ctl.progress(&p.tenant, &id)?))
}

pub async fn gc(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<dwell_control::snapshot_gc::GcSummary>> {
    if !p.admin {
        return Err(ApiError::new(
            403,
            "permission_denied",
            "collecting the snapshot store spans every tenant: it needs an admin API key",
        ));
    }
    Ok(Json(st.ctl.snapshot_gc().await?))
}
