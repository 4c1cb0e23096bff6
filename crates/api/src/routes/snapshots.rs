//! `/v1/snapshots` and `/v1/sandboxes/{id}/snapshots|restore|archive|progress`:
//! capture, list, inspect, delete and restore snapshots of sandbox volumes,
//! archive sandboxes, follow the progress of those operations, and
//! `/v1/gc/snapshots` (admin) to collect the store.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use dwell_contract::query::ListSnapshots;
use dwell_contract::sandbox::OpProgress;
use dwell_contract::snapshots::{
    GcSummary, RestoreBody, Snapshot, SnapshotCreate, SnapshotDeleted,
};
use dwell_contract::{ErrorBody, Sandbox};
use dwell_snapshot::Manifest;

use super::sandboxes::view;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Path, Query};
use crate::wire;
use crate::AppState;

/// A snapshot as the API shows it (the chunk list stays in the store).
pub fn snapshot_view(m: &Manifest) -> Snapshot {
    Snapshot {
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

#[utoipa::path(post, path = "/v1/sandboxes/{id}/snapshots", tag = "snapshots",
    summary = "Snapshot a sandbox's volume (the body is optional)",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body(content = Option<SnapshotCreate>, content_type = "application/json"),
    responses((status = 201, body = Snapshot), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Snapshot>)> {
    let b: SnapshotCreate = if body.iter().all(u8::is_ascii_whitespace) {
        SnapshotCreate::default()
    } else {
        let bad = |why: String| {
            ApiError::bad_request(format!(
                "bad snapshot request: {why}; send {{\"name\": \"NAME\"}} or nothing"
            ))
        };
        // An object, as every body: serde alone would read `["x"]` too.
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) if v.is_object() => serde_json::from_value(v).map_err(|e| bad(e.to_string()))?,
            Ok(_) => return Err(bad("the body is not a JSON object".into())),
            Err(e) => return Err(bad(e.to_string())),
        }
    };
    let m = st.ctl.snapshot_create(&p.tenant, &id, b.name).await?;
    Ok((StatusCode::CREATED, Json(snapshot_view(&m))))
}

#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots",
    summary = "List the tenant's snapshots",
    params(ListSnapshots),
    responses((status = 200, body = Vec<Snapshot>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ListSnapshots>,
) -> ApiResult<Json<Vec<Snapshot>>> {
    let all = st.ctl.snapshots(&p.tenant, q.sandbox.as_deref()).await?;
    Ok(Json(all.iter().map(snapshot_view).collect()))
}

#[utoipa::path(get, path = "/v1/snapshots/{id}", tag = "snapshots",
    summary = "Inspect a snapshot",
    params(("id" = String, Path, description = "Snapshot id or name")),
    responses((status = 200, body = Snapshot), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn inspect(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Snapshot>> {
    Ok(Json(snapshot_view(&st.ctl.snapshot(&p.tenant, &id).await?)))
}

#[utoipa::path(delete, path = "/v1/snapshots/{id}", tag = "snapshots",
    summary = "Delete a snapshot and the chunks only it used",
    params(("id" = String, Path, description = "Snapshot id or name")),
    responses((status = 200, body = SnapshotDeleted), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn delete(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<SnapshotDeleted>> {
    let r = st.ctl.snapshot_delete(&p.tenant, &id).await?;
    Ok(Json(SnapshotDeleted {
        chunks_deleted: r.chunks_deleted,
        bytes_freed: r.bytes_freed,
    }))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/restore", tag = "snapshots",
    summary = "Replace a stopped sandbox's volume with a snapshot",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = RestoreBody,
    responses((status = 200, body = Sandbox), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn restore(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<crate::extract::Json<RestoreBody>, crate::extract::BodyRejection>,
) -> ApiResult<Json<Sandbox>> {
    let crate::extract::Json(b) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad restore request: {}; send {{\"snapshot\": \"NAME\"}}",
            e.detail
        ))
    })?;
    view(&st.ctl.restore(&p.tenant, &id, &b.snapshot).await?)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/archive", tag = "snapshots",
    summary = "Move a stopped sandbox's volume into the snapshot store",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn archive(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    view(&st.ctl.archive(&p.tenant, &id).await?)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/progress", tag = "snapshots",
    summary = "Progress of the operation running on a sandbox (`null` when none)",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Option<OpProgress>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn progress(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Option<OpProgress>>> {
    match st.ctl.progress(&p.tenant, &id)? {
        Some(op) => Ok(Json(Some(wire::map(&op)?))),
        None => Ok(Json(None)),
    }
}

#[utoipa::path(post, path = "/v1/gc/snapshots", tag = "snapshots",
    summary = "Collect the snapshot store (admin)",
    responses((status = 200, body = GcSummary), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn gc(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<GcSummary>> {
    // It spans every tenant.
    crate::auth::require_admin(&p, "collecting the snapshot store")?;
    wire::map(&st.ctl.snapshot_gc().await?).map(Json)
}
