//! `/v1/volumes`: a tenant's named volumes (create, list, inspect, grow,
//! remove). Tenant-scoped: another tenant's volume is 404. Binding one into
//! a sandbox is part of the sandbox's create request (`volumes`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use dwell_contract::sandbox::SizeArg;
use dwell_contract::snapshots::{RestoreBody, Snapshot, SnapshotCreate};
use dwell_contract::{CreateVolume, ErrorBody, NamedVolume, ResizeVolume};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::wire;
use crate::AppState;

fn bytes(size: &SizeArg) -> ApiResult<u64> {
    match size {
        SizeArg::Bytes(b) => Ok(*b),
        SizeArg::Text(t) => dwell_control::size::parse_size(t)
            .map_err(|m| ApiError::bad_request(format!("invalid size: {m}"))),
    }
}

#[utoipa::path(post, path = "/v1/volumes", tag = "volumes",
    summary = "Create a named volume (32 MiB to 64 TiB; counted in the storage quota)",
    request_body = CreateVolume,
    responses((status = 201, body = NamedVolume), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<crate::extract::Json<CreateVolume>, crate::extract::BodyRejection>,
) -> ApiResult<(StatusCode, Json<NamedVolume>)> {
    let crate::extract::Json(req) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad volume request: {}; send {{\"name\": \"pgdata\", \"size\": \"20G\"}} or \
             {{\"name\": \"copy\", \"from\": \"SNAPSHOT\"}}",
            e.detail
        ))
    })?;
    let size = req.size.as_ref().map(bytes).transpose()?;
    let v = st
        .ctl
        .create_volume_from(&p.tenant, &req.name, size, req.from.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(wire::map(&v)?)))
}

#[utoipa::path(get, path = "/v1/volumes", tag = "volumes",
    summary = "List the tenant's named volumes",
    responses((status = 200, body = Vec<NamedVolume>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Vec<NamedVolume>>> {
    wire::map_all(&st.ctl.volumes(&p.tenant)?).map(Json)
}

#[utoipa::path(get, path = "/v1/volumes/{name}", tag = "volumes",
    summary = "Inspect a named volume (size, use, the sandboxes that use it)",
    params(("name" = String, Path, description = "Volume name or id")),
    responses((status = 200, body = NamedVolume), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn inspect(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<Json<NamedVolume>> {
    wire::map(&st.ctl.volume(&p.tenant, &name)?).map(Json)
}

#[utoipa::path(post, path = "/v1/volumes/{name}/resize", tag = "volumes",
    summary = "Grow a named volume (online while in use, where the host allows; never shrinks)",
    params(("name" = String, Path, description = "Volume name or id")),
    request_body = ResizeVolume,
    responses((status = 200, body = NamedVolume), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn resize(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<crate::extract::Json<ResizeVolume>, crate::extract::BodyRejection>,
) -> ApiResult<Json<NamedVolume>> {
    let crate::extract::Json(req) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad resize request: {}; send {{\"size\": \"40G\"}}",
            e.detail
        ))
    })?;
    let size = bytes(&req.size)?;
    let v = st.ctl.resize_volume(&p.tenant, &name, size).await?;
    wire::map(&v).map(Json)
}

#[utoipa::path(delete, path = "/v1/volumes/{name}", tag = "volumes",
    summary = "Remove a named volume and its data (409 while any sandbox uses it)",
    params(("name" = String, Path, description = "Volume name or id")),
    responses((status = 204, description = "Removed"), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn delete(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    st.ctl.delete_volume(&p.tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/volumes/{name}/snapshots", tag = "volumes",
    summary = "Snapshot a named volume into the snapshot store (frozen for the capture while in use)",
    params(("name" = String, Path, description = "Volume name or id")),
    request_body(content = SnapshotCreate, description = "Optional: a name for the snapshot"),
    responses((status = 201, body = Snapshot), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn snapshot(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Snapshot>)> {
    let b: SnapshotCreate = if body.iter().all(u8::is_ascii_whitespace) {
        SnapshotCreate::default()
    } else {
        let bad = |why: String| {
            ApiError::bad_request(format!(
                "bad snapshot request: {why}; send {{\"name\": \"NAME\"}} or nothing"
            ))
        };
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) if v.is_object() => serde_json::from_value(v).map_err(|e| bad(e.to_string()))?,
            Ok(_) => return Err(bad("the body is not a JSON object".into())),
            Err(e) => return Err(bad(e.to_string())),
        }
    };
    let m = st.ctl.snapshot_volume(&p.tenant, &name, b.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(super::snapshots::snapshot_view(&m)),
    ))
}

#[utoipa::path(post, path = "/v1/volumes/{name}/restore", tag = "volumes",
    summary = "Put a named volume back to one of its snapshots (409 while a sandbox using it runs)",
    params(("name" = String, Path, description = "Volume name or id")),
    request_body = RestoreBody,
    responses((status = 200, body = NamedVolume), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn restore(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<crate::extract::Json<RestoreBody>, crate::extract::BodyRejection>,
) -> ApiResult<Json<NamedVolume>> {
    let crate::extract::Json(req) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad restore request: {}; send {{\"snapshot\": \"SNAPSHOT\"}}",
            e.detail
        ))
    })?;
    let v = st
        .ctl
        .restore_volume(&p.tenant, &name, &req.snapshot)
        .await?;
    wire::map(&v).map(Json)
}
