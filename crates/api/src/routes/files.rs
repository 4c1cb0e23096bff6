//! `/v1/sandboxes/{id}/files` and `/fs/*`: file operations carried out by
//! the agent inside the sandbox, so a path (even `../../etc/shadow` or a
//! symlink pointing out) can only name the sandbox's own files. Contents
//! stream in both directions; large files never sit in memory.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use dwell_proto::{FileInfo, WriteOptions};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::with_agent;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::types::{MkdirBody, RenameBody};
use crate::AppState;

#[derive(Deserialize)]
pub struct PathQuery {
    path: Option<String>,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    depth: Option<u32>,
}

fn need_path(q: &PathQuery) -> ApiResult<String> {
    match &q.path {
        Some(p) if p.starts_with('/') => Ok(p.clone()),
        Some(p) => Err(ApiError::bad_request(format!(
            "path {p:?} is relative; give an absolute path inside the sandbox, like /root/{p}"
        ))),
        None => Err(ApiError::bad_request(
            "the `path` query parameter is missing; add ?path=/absolute/path",
        )),
    }
}

pub async fn download(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let path = need_path(&q)?;
    let (_, reader) = with_agent(&st, &p, &id, |c| {
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

#[derive(Deserialize)]
pub struct UploadQuery {
    path: Option<String>,
    #[serde(default)]
    append: bool,
    mode: Option<String>,
    #[serde(default)]
    parents: bool,
}

#[derive(Serialize)]
pub struct Written {
    pub path: String,
    pub bytes: u64,
}

pub async fn upload(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> ApiResult<(StatusCode, Json<Written>)> {
    let path = need_path(&PathQuery {
        path: q.path.clone(),
        recursive: false,
        depth: None,
    })?;
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
    let (_, mut writer) = with_agent(&st, &p, &id, |c| {
        let (path, opts) = (path.clone(), opts.clone());
        async move { c.write_file(&path, opts).await }
    })
    .await?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("upload interrupted: {e}")))?;
        writer.write(chunk).await?;
    }
    let bytes = writer.finish().await?;
    Ok((StatusCode::CREATED, Json(Written { path, bytes })))
}

pub async fn remove(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<StatusCode> {
    let path = need_path(&q)?;
    let recursive = q.recursive;
    with_agent(&st, &p, &id, |c| {
        let path = path.clone();
        async move { c.remove(&path, recursive).await }
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Json<Vec<FileInfo>>> {
    let path = need_path(&q)?;
    let depth = q.depth.unwrap_or(1);
    let (_, entries) = with_agent(&st, &p, &id, |c| {
        let path = path.clone();
        async move { c.list_dir(&path, depth).await }
    })
    .await?;
    Ok(Json(entries))
}

pub async fn stat(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Json<FileInfo>> {
    let path = need_path(&q)?;
    let (_, info) = with_agent(&st, &p, &id, |c| {
        let path = path.clone();
        async move { c.stat(&path).await }
    })
    .await?;
    Ok(Json(info))
}

pub async fn mkdir(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Json(b): Json<MkdirBody>,
) -> ApiResult<StatusCode> {
    with_agent(&st, &p, &id, |c| {
        let path = b.path.clone();
        async move { c.mkdir(&path, b.parents).await }
    })
    .await?;
    Ok(StatusCode::CREATED)
}

pub async fn rename(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Json(b): Json<RenameBody>,
) -> ApiResult<StatusCode> {
    with_agent(&st, &p, &id, |c| {
        let (from, to) = (b.from.clone(), b.to.clone());
        async move { c.rename(&from, &to).await }
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
