//! `/v1/sandboxes/{id}/files` and `/fs/*`: file operations carried out by
//! the agent inside the sandbox, so a path (even `../../etc/shadow` or a
//! symlink pointing out) can only name the sandbox's own files. Contents
//! stream in both directions; large files never sit in memory. A refused
//! upload has the rest of its body read (bounded, see
//! [`crate::drain`]) behind the answer.

use axum::body::{Body, BodyDataStream};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Extension, Json};
use dwell_contract::files::{MkdirBody, RenameBody, Written};
use dwell_contract::query::{FilePath, ListDir, Remove, Upload};
use dwell_contract::{ErrorBody, FileInfo};
use dwell_proto::WriteOptions;
use futures_util::StreamExt;

use super::with_agent;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json as JsonBody, Path, Query};
use crate::wire;
use crate::AppState;

fn need_path(path: &Option<String>) -> ApiResult<String> {
    match path {
        Some(p) if p.starts_with('/') => Ok(p.clone()),
        Some(p) => Err(ApiError::bad_request(format!(
            "path {p:?} is relative; give an absolute path inside the sandbox, like /root/{p}"
        ))),
        None => Err(ApiError::bad_request(
            "the `path` query parameter is missing; add ?path=/absolute/path",
        )),
    }
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", tag = "files",
    summary = "Download a file (streamed)",
    params(("id" = String, Path, description = "Sandbox id or name"), FilePath),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = "default", description = "Error", body = ErrorBody)))]
pub async fn download(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<FilePath>,
) -> ApiResult<Response> {
    let path = need_path(&q.path)?;
    let (_, reader) = with_agent(&st, &p, &id, "file read", |c| {
        let path = path.clone();
        async move { c.read_file(&path).await }
    })
    .await?;
    let size = reader.size();
    let body = futures_util::stream::unfold(reader, |mut r| async move {
        match r.next_chunk().await {
            Ok(Some(b)) => Some((Ok::<_, dwell_proto::Error>(b), r)),
            Ok(None) => None,
            Err(e) => Some((Err(e), r)),
        }
    });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", size)
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", tag = "files",
    summary = "Upload a file (streamed)",
    params(("id" = String, Path, description = "Sandbox id or name"), Upload),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"),
    responses((status = 201, body = Written), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn upload(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<Upload>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Written>)> {
    let mut stream = body.into_data_stream();
    let mut started = false;
    let r = upload_inner(&st, &p, &id, &q, &mut stream, &mut started).await;
    if r.is_err() && (started || !crate::drain::expects_continue(&headers)) {
        // The caller is authenticated (the middleware let it through), so
        // the drain may read the authorized amount; it shares the
        // process-wide drain slots and limits with the E2B envd uploads.
        crate::drain::spawn(stream, crate::drain::DRAIN_MAX);
    }
    r
}

async fn upload_inner(
    st: &AppState,
    p: &Principal,
    id: &str,
    q: &Upload,
    stream: &mut BodyDataStream,
    started: &mut bool,
) -> ApiResult<(StatusCode, Json<Written>)> {
    let path = need_path(&q.path)?;
    let mode = match &q.mode {
        Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| {
            ApiError::bad_request(format!(
                "mode {m:?} is not octal; write it like 644 or 0755"
            ))
        })?),
        None => None,
    };
    let opts = WriteOptions {
        append: q.append,
        mode,
        create_parents: q.parents,
    };
    let (_, mut writer) = with_agent(st, p, id, "file write", |c| {
        let (path, opts) = (path.clone(), opts.clone());
        async move { c.write_file(&path, opts).await }
    })
    .await?;
    *started = true;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("upload interrupted: {e}")))?;
        writer.write(chunk).await?;
    }
    let bytes = writer.finish().await?;
    Ok((StatusCode::CREATED, Json(Written { path, bytes })))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", tag = "files",
    summary = "Remove a file or directory",
    params(("id" = String, Path, description = "Sandbox id or name"), Remove),
    responses((status = 204, description = "Removed"), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn remove(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<Remove>,
) -> ApiResult<StatusCode> {
    let path = need_path(&q.path)?;
    let recursive = q.recursive;
    with_agent(&st, &p, &id, "file removal", |c| {
        let path = path.clone();
        async move { c.remove(&path, recursive).await }
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/fs/list", tag = "files",
    summary = "List a directory",
    params(("id" = String, Path, description = "Sandbox id or name"), ListDir),
    responses((status = 200, body = Vec<FileInfo>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<ListDir>,
) -> ApiResult<Json<Vec<FileInfo>>> {
    let path = need_path(&q.path)?;
    let depth = q.depth.unwrap_or(1);
    let (_, entries) = with_agent(&st, &p, &id, "directory listing", |c| {
        let path = path.clone();
        async move { c.list_dir(&path, depth).await }
    })
    .await?;
    wire::map_all(&entries).map(Json)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/fs/stat", tag = "files",
    summary = "Metadata of a file (not following symlinks)",
    params(("id" = String, Path, description = "Sandbox id or name"), FilePath),
    responses((status = 200, body = FileInfo), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn stat(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<FilePath>,
) -> ApiResult<Json<FileInfo>> {
    let path = need_path(&q.path)?;
    let (_, info) = with_agent(&st, &p, &id, "file stat", |c| {
        let path = path.clone();
        async move { c.stat(&path).await }
    })
    .await?;
    wire::map(&info).map(Json)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/fs/mkdir", tag = "files",
    summary = "Make a directory",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = MkdirBody,
    responses((status = 201, description = "Created"), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn mkdir(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<MkdirBody>,
) -> ApiResult<StatusCode> {
    with_agent(&st, &p, &id, "mkdir", |c| {
        let path = b.path.clone();
        async move { c.mkdir(&path, b.parents).await }
    })
    .await?;
    Ok(StatusCode::CREATED)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/fs/rename", tag = "files",
    summary = "Rename (move) a file or directory",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = RenameBody,
    responses((status = 204, description = "Renamed"), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn rename(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<RenameBody>,
) -> ApiResult<StatusCode> {
    with_agent(&st, &p, &id, "rename", |c| {
        let (from, to) = (b.from.clone(), b.to.clone());
        async move { c.rename(&from, &to).await }
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
