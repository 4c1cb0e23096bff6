//! envd's plain HTTP endpoints: `GET /health`, `GET /files` (download,
//! streamed from the agent) and `POST /files` (upload as multipart form or
//! as an octet-stream body, optionally gzip-encoded, streamed to the
//! agent). Errors are `{"code": <status>, "message": ..}` as the SDK
//! expects (404 → FileNotFoundException, 507 → NotEnoughSpace).
//!
//! `/files` accepts either `X-Access-Token` or a signed URL
//! (`signature.rs`); a signed URL without a sandbox header is routed to
//! the sandbox whose token produced the signature.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dwell_proto::{ErrorKind, FileKind, WriteOptions};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::sandbox::{self, Reject, Target};
use crate::users::resolve_path;
use crate::{multipart, owner, signature, Ctx, Envd};

/// Largest multipart upload held in memory (octet-stream is streamed).
const MAX_MULTIPART: usize = 1 << 30;
/// Chunk size of writes to the agent.
const CHUNK: usize = 256 << 10;

#[derive(Debug, Default, Deserialize)]
pub struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    signature_expiration: Option<i64>,
}

/// `GET /health`: 204 while the named sandbox runs; 502 "was not found"
/// otherwise (what the SDK's `is_running` reads). Unauthenticated, as
/// envd's is.
pub async fn health(State(envd): State<Arc<Envd>>, h: HeaderMap) -> Response {
    let Some(id) = sandbox::sandbox_id(&h) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let rec = envd.ctl.store().get_sandbox(&id).ok().flatten();
    match rec {
        Some(r) if r.deleted_at.is_none() && r.state == "running" => {
            StatusCode::NO_CONTENT.into_response()
        }
        Some(r) if r.deleted_at.is_none() => {
            Reject::not_running(&id, &format!("it is {}", r.state)).into_response()
        }
        _ => Reject::not_running(&id, "it does not exist").into_response(),
    }
}

/// Any other path.
pub async fn not_found() -> Response {
    Reject::new(
        StatusCode::NOT_FOUND,
        "no such envd endpoint: dwell serves /health, /files and the process.Process and filesystem.Filesystem Connect services",
    )
    .into_response()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Authorizes a `/files` request by token or signature; `op` is `read` or `write`.
fn authorize(envd: &Envd, h: &HeaderMap, q: &FilesQuery, op: &str) -> Result<Target, Reject> {
    let id = sandbox::sandbox_id(h);
    let Some(sig) = q.signature.as_deref() else {
        let id = sandbox::require_id(h)?;
        sandbox::authorize(&envd.ctl, &id, h)?;
        return sandbox::lookup(&envd.ctl, &id);
    };
    if h.contains_key("x-access-token") {
        if let Some(id) = &id {
            if sandbox::authorize(&envd.ctl, id, h).is_ok() {
                return sandbox::lookup(&envd.ctl, id);
            }
        }
    }
    if let Some(exp) = q.signature_expiration {
        if exp < now_secs() {
            return Err(Reject::new(
                StatusCode::UNAUTHORIZED,
                "the signed URL has expired; ask the SDK for a new one",
            ));
        }
    }
    let path = q.path.as_deref().unwrap_or("");
    let user = q.username.as_deref().unwrap_or("");
    let ok = |sid: &str| {
        envd.ctl
            .sandbox_token(sid)
            .is_ok_and(|tok| signature::matches(sig, path, op, user, &tok, q.signature_expiration))
    };
    let candidates: Vec<String> = match id {
        Some(id) => vec![id],
        None => envd
            .ctl
            .store()
            .list_sandboxes(None)
            .map_err(|e| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .into_iter()
            .filter(|r| r.deleted_at.is_none())
            .map(|r| r.id)
            .collect(),
    };
    match candidates.iter().find(|c| ok(c)) {
        Some(id) => sandbox::lookup(&envd.ctl, id),
        None => Err(Reject::new(
            StatusCode::UNAUTHORIZED,
            format!("invalid signature for {op} of {path:?}"),
        )),
    }
}

/// The HTTP status of an agent failure on a file.
fn file_error(e: dwell_proto::Error, what: &str) -> Reject {
    let status = match &e {
        dwell_proto::Error::Remote(r) => match r.kind {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::PermissionDenied | ErrorKind::ReadOnly => StatusCode::FORBIDDEN,
            ErrorKind::InvalidArgument | ErrorKind::IsADirectory | ErrorKind::NotADirectory => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        dwell_proto::Error::Unreachable(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Reject::new(status, format!("{what}: {e}"))
}

async fn open(envd: &Envd, h: &HeaderMap, q: &FilesQuery, op: &str) -> Result<Ctx, Reject> {
    let target = authorize(envd, h, q, op)?;
    envd.ctx_for(target, q.username.clone()).await
}

/// `GET /files?path=`: the file's bytes.
pub async fn download(
    State(envd): State<Arc<Envd>>,
    h: HeaderMap,
    Query(q): Query<FilesQuery>,
) -> Response {
    match download_inner(&envd, &h, &q).await {
        Ok(r) => r,
        Err(r) => r.into_response(),
    }
}

async fn download_inner(
    envd: &Arc<Envd>,
    h: &HeaderMap,
    q: &FilesQuery,
) -> Result<Response, Reject> {
    let ctx = open(envd, h, q, "read").await?;
    let raw = q.path.as_deref().unwrap_or("");
    if raw.is_empty() {
        return Err(Reject::new(
            StatusCode::BAD_REQUEST,
            "missing the path query parameter",
        ));
    }
    let path = resolve_path(raw, &ctx.user);
    let fi = ctx
        .agent
        .stat(&path)
        .await
        .map_err(|e| file_error(e, &format!("cannot read {path}")))?;
    if fi.kind == FileKind::Dir {
        return Err(Reject::new(
            StatusCode::BAD_REQUEST,
            format!("{path} is a directory, not a file"),
        ));
    }
    let mut reader = ctx
        .agent
        .read_file(&path)
        .await
        .map_err(|e| file_error(e, &format!("cannot read {path}")))?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let guard = envd.ctl.stream_opened(&ctx.target.id);
    tokio::spawn(async move {
        let _guard = guard;
        loop {
            let item = match reader.next_chunk().await {
                Ok(Some(b)) => Ok(b),
                Ok(None) => return,
                Err(e) => Err(std::io::Error::other(format!("reading {path} failed: {e}"))),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        fi.name.replace('"', "")
    )) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// `POST /files`: writes one file (octet-stream, `?path=`) or the files of
/// a multipart form (each part's filename is its path unless `?path=`).
pub async fn upload(
    State(envd): State<Arc<Envd>>,
    h: HeaderMap,
    Query(q): Query<FilesQuery>,
    body: Body,
) -> Response {
    match upload_inner(&envd, &h, &q, body).await {
        Ok(list) => axum::Json(list).into_response(),
        Err(r) => r.into_response(),
    }
}

fn written(path: &str) -> serde_json::Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    json!({"name": name, "type": "file", "path": path})
}

async fn upload_inner(
    envd: &Arc<Envd>,
    h: &HeaderMap,
    q: &FilesQuery,
    body: Body,
) -> Result<Vec<serde_json::Value>, Reject> {
    if h.keys().any(|k| k.as_str().starts_with("x-metadata-")) {
        return Err(Reject::new(
            StatusCode::BAD_REQUEST,
            "file metadata (X-Metadata-* headers) is not supported by dwell; write the file without metadata",
        ));
    }
    let ctx = open(envd, h, q, "write").await?;
    let _guard = envd.ctl.stream_opened(&ctx.target.id);
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(b) = multipart::boundary(ct) {
        let all = axum::body::to_bytes(body, MAX_MULTIPART).await.map_err(|e| {
            Reject::new(
                StatusCode::BAD_REQUEST,
                format!("reading the upload failed (multipart bodies are limited to 1 GiB; send large files as application/octet-stream): {e}"),
            )
        })?;
        let parts =
            multipart::parse(&all, &b).map_err(|e| Reject::new(StatusCode::BAD_REQUEST, e))?;
        let files: Vec<_> = parts.into_iter().filter(|p| p.name == "file").collect();
        if files.is_empty() {
            return Err(Reject::new(
                StatusCode::BAD_REQUEST,
                "the form has no \"file\" part",
            ));
        }
        let single = files.len() == 1;
        let mut out = Vec::new();
        for p in files {
            let raw = match (&q.path, single) {
                (Some(path), true) if !path.is_empty() => path.clone(),
                _ => p
                    .filename
                    .clone()
                    .filter(|f| !f.is_empty())
                    .ok_or_else(|| {
                        Reject::new(
                            StatusCode::BAD_REQUEST,
                            "a file part has no filename and no ?path= was given",
                        )
                    })?,
            };
            let path = resolve_path(&raw, &ctx.user);
            let mut made = owner::missing_parents(&ctx.agent, &ctx.user, &path).await;
            let mut w = open_writer(&ctx, &path).await?;
            for c in p.data.chunks(CHUNK) {
                w.write(p.data.slice_ref(c))
                    .await
                    .map_err(|e| file_error(e, &format!("writing {path} failed")))?;
            }
            w.finish()
                .await
                .map_err(|e| file_error(e, &format!("writing {path} failed")))?;
            made.push(path.clone());
            owner::give(&ctx.agent, &ctx.user, &made)
                .await
                .map_err(|e| file_error(e, &format!("giving {path} to {}", ctx.user.name)))?;
            out.push(written(&path));
        }
        return Ok(out);
    }
    let raw =
        q.path.clone().filter(|p| !p.is_empty()).ok_or_else(|| {
            Reject::new(StatusCode::BAD_REQUEST, "missing the path query parameter")
        })?;
    let path = resolve_path(&raw, &ctx.user);
    let gzip = match h
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        None => false,
        Some(e) if e.eq_ignore_ascii_case("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") => true,
        Some(e) => {
            return Err(Reject::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {e:?} is not supported; use gzip or none"),
            ))
        }
    };
    let mut made = owner::missing_parents(&ctx.agent, &ctx.user, &path).await;
    let mut w = open_writer(&ctx, &path).await?;
    let mut gz = gzip.then(|| flate2::write::GzDecoder::new(Vec::new()));
    let mut stream = body.into_data_stream();
    let fail = |e: dwell_proto::Error| file_error(e, &format!("writing {path} failed"));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Reject::new(
                StatusCode::BAD_REQUEST,
                format!("reading the upload failed: {e}"),
            )
        })?;
        let data = match gz.as_mut() {
            None => chunk,
            Some(d) => {
                d.write_all(&chunk).map_err(|e| {
                    Reject::new(
                        StatusCode::BAD_REQUEST,
                        format!("the gzip body is corrupt: {e}"),
                    )
                })?;
                Bytes::from(std::mem::take(d.get_mut()))
            }
        };
        if !data.is_empty() {
            w.write(data).await.map_err(fail)?;
        }
    }
    if let Some(d) = gz {
        let rest = d.finish().map_err(|e| {
            Reject::new(
                StatusCode::BAD_REQUEST,
                format!("the gzip body is truncated: {e}"),
            )
        })?;
        if !rest.is_empty() {
            w.write(Bytes::from(rest)).await.map_err(fail)?;
        }
    }
    w.finish().await.map_err(fail)?;
    made.push(path.clone());
    owner::give(&ctx.agent, &ctx.user, &made)
        .await
        .map_err(fail)?;
    Ok(vec![written(&path)])
}

async fn open_writer(ctx: &Ctx, path: &str) -> Result<dwell_proto::FileWriter, Reject> {
    let opts = WriteOptions {
        append: false,
        mode: Some(0o644),
        create_parents: true,
    };
    ctx.agent
        .write_file(path, opts)
        .await
        .map_err(|e| file_error(e, &format!("cannot write {path}")))
}
