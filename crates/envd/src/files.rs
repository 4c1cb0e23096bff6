//! envd's plain HTTP endpoints: `GET /health`, `GET /files` (download,
//! streamed from the agent) and `POST /files` (upload as multipart form or
//! as an octet-stream body, optionally gzip-encoded, streamed to the
//! agent). Errors are `{"code": <status>, "message": ..}` as the SDK
//! expects (404 → FileNotFoundException, 507 → NotEnoughSpace).
//! Downloads are gzip-encoded when the client accepts it (`gzip.rs`).
//! Uploads carry file metadata as `X-Metadata-<key>` headers, kept as the
//! file's `user.e2b.<key>` extended attributes (set by the agent inside
//! the sandbox); an upload without them clears the file's old ones.
//!
//! Uploads are streamed: multipart forms are parsed as they arrive
//! (`multipart.rs`) and gzip bodies inflated in bounded pieces
//! (`gunzip.rs`); at most [`crate::MAX_UPLOADS`] run at once.
//!
//! `/files` accepts either `X-Access-Token` or a signed URL
//! (`signature.rs`); a signed URL without a sandbox id (the SDK's URLs
//! with `E2B_SANDBOX_URL` carry none) is routed to the running sandbox
//! whose token produced the signature. A signed upload writes exactly one
//! file, at the signed `?path=`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::BTreeMap;

use dwell_proto::{
    ErrorKind, FileKind, WriteOptions, XattrSet, FEATURE_XATTRS, MAX_XATTRS, MAX_XATTR_NAME,
    MAX_XATTR_VALUE,
};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::filesystem::META_PREFIX;
use crate::sandbox::{self, Reject, Target};
use crate::users::resolve_path;
use crate::{gunzip, gzip, multipart, signature, Ctx, Envd};
use dwell_api::drain;

#[derive(Debug, Default, Deserialize)]
pub struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    signature_expiration: Option<i64>,
}

/// `GET /health`: 204 while the named sandbox runs; 502 "was not found"
/// otherwise (what the SDK's `is_running` reads). Without a valid
/// `X-Access-Token` every named sandbox answers the same 502, so that the
/// endpoint does not tell strangers which sandboxes exist.
pub async fn health(State(envd): State<Arc<Envd>>, h: HeaderMap) -> Response {
    let Some(id) = sandbox::sandbox_id(&h) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    if sandbox::authorize(&envd.ctl, &id, &h).is_err() {
        return Reject::not_running(&id, "it does not exist or the access token is not its")
            .into_response();
    }
    match envd.ctl.live_sandbox(&id).ok().flatten() {
        Some(sb) if sb.state == dwell_control::State::Running => {
            StatusCode::NO_CONTENT.into_response()
        }
        Some(sb) => Reject::not_running(&id, &format!("it is {}", sb.state)).into_response(),
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

/// How a `/files` request proved access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    Token,
    /// A signed URL: it covers only `path`, `username` and the operation.
    Signature,
}

/// Most sandboxes a signed URL without a sandbox id is tried against.
const MAX_SCAN: usize = 10_000;

/// Authorizes a `/files` request by token or signature; `op` is `read` or `write`.
async fn authorize(
    envd: &Envd,
    h: &HeaderMap,
    q: &FilesQuery,
    op: &str,
) -> Result<(Target, Proof), Reject> {
    let id = sandbox::sandbox_id(h);
    let Some(sig) = q.signature.clone() else {
        let id = sandbox::require_id(h)?;
        sandbox::authorize(&envd.ctl, &id, h)?;
        return Ok((sandbox::lookup(&envd.ctl, &id)?, Proof::Token));
    };
    if h.contains_key("x-access-token") {
        if let Some(id) = &id {
            if sandbox::authorize(&envd.ctl, id, h).is_ok() {
                return Ok((sandbox::lookup(&envd.ctl, id)?, Proof::Token));
            }
        }
    }
    if let Some(exp) = q.signature_expiration {
        if exp < now_secs() {
            // The wording is E2B's (its SDK tests compare it).
            return Err(Reject::new(
                StatusCode::UNAUTHORIZED,
                "signature is already expired",
            ));
        }
    }
    let sig_seen = sig.clone();
    let path = q.path.clone().unwrap_or_default();
    let user = q.username.clone().unwrap_or_default();
    let exp = q.signature_expiration;
    let op_s = op.to_string();
    let ctl = envd.ctl.clone();
    let ok = move |sid: &str| {
        ctl.sandbox_token(sid)
            .is_ok_and(|tok| signature::matches(&sig, &path, &op_s, &user, &tok, exp))
    };
    let found = match id {
        Some(id) => ok(&id).then_some(id),
        // The SDK's signed URLs name no sandbox when E2B_SANDBOX_URL points
        // every sandbox at one address (or with the shared `sandbox.{domain}`
        // host), and a plain client (curl, a browser) sends no header: the
        // signature itself has to say whose it is. Only running sandboxes
        // can serve a file, so only they are tried, at most MAX_SCAN of
        // them, off the async threads and one scan at a time per permit.
        None => {
            let _permit = envd.scans.acquire().await.map_err(|_| {
                Reject::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the daemon is shutting down",
                )
            })?;
            let ctl = envd.ctl.clone();
            tokio::task::spawn_blocking(move || -> Result<Option<String>, Reject> {
                let all = ctl
                    .all_sandboxes()
                    .map_err(|e| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
                Ok(all
                    .into_iter()
                    .filter(|sb| sb.state == dwell_control::State::Running)
                    .take(MAX_SCAN)
                    .map(|r| r.id)
                    .find(|c| ok(c)))
            })
            .await
            .map_err(|e| {
                Reject::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("checking the signature failed: {e}"),
                )
            })??
        }
    };
    match found {
        Some(id) => {
            if q.signature_expiration.is_none() {
                envd.unexpiring
                    .admit(&id, &sig_seen, std::time::Instant::now())
                    .map_err(|why| Reject::new(StatusCode::UNAUTHORIZED, why))?;
            }
            Ok((sandbox::lookup(&envd.ctl, &id)?, Proof::Signature))
        }
        None => Err(Reject::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "invalid signature for {op} of {:?} (or its sandbox is not running)",
                q.path.as_deref().unwrap_or("")
            ),
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

async fn open(
    envd: &Envd,
    h: &HeaderMap,
    q: &FilesQuery,
    op: &str,
) -> Result<(Ctx, Proof), Reject> {
    let (target, proof) = authorize(envd, h, q, op).await?;
    Ok((envd.ctx_for(target, q.username.clone()).await?, proof))
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
    let (ctx, _) = open(envd, h, q, "read").await?;
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
    let gzip = accepts_gzip(h);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let guard = envd.ctl.stream_opened(&ctx.target.id);
    tokio::spawn(async move {
        let _guard = guard;
        let mut enc = gzip.then(gzip::Encoder::new);
        loop {
            let item = match reader.next_chunk().await {
                Ok(Some(b)) => match enc.as_mut() {
                    Some(z) => z.push(&b),
                    None => Ok(b),
                },
                Ok(None) => match enc.take() {
                    Some(z) => z.finish(),
                    None => return,
                },
                Err(e) => Err(std::io::Error::other(format!("reading {path} failed: {e}"))),
            };
            let last = item.is_err() || (gzip && enc.is_none());
            let empty = item.as_ref().is_ok_and(|b| b.is_empty());
            if (!empty && tx.send(item).await.is_err()) || last {
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
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzip {
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        fi.name.replace('"', "")
    )) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// Whether the client takes a gzip-encoded answer (`Accept-Encoding:
/// gzip`, not with `q=0`).
fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            (coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip"))
                && !q_zero
        })
}

/// `POST /files`: writes one file (octet-stream, `?path=`) or the files of
/// a multipart form (each part's filename is its path unless `?path=`).
/// A refused upload has the rest of its body read and dropped behind the
/// answer (see [`drain`]), so that a client still sending it reads the
/// refusal instead of a connection closed under it; only a little of it
/// when the request was not authorized.
pub async fn upload(
    State(envd): State<Arc<Envd>>,
    h: HeaderMap,
    Query(q): Query<FilesQuery>,
    body: Body,
) -> Response {
    let body = drain::Shared::new(body);
    let mut authorized = false;
    match upload_inner(&envd, &h, &q, body.stream(), &mut authorized).await {
        Ok(list) => axum::Json(list).into_response(),
        Err(r) => {
            body.drain(&h, authorized);
            r.into_response()
        }
    }
}

/// The answer's entry for a written file (`metadata` when it has some).
fn written(path: &str, meta: &BTreeMap<String, String>) -> serde_json::Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut v = json!({"name": name, "type": "file", "path": path});
    if !meta.is_empty() {
        v["metadata"] = json!(meta);
    }
    v
}

/// The `X-Metadata-<key>: <value>` headers of an upload: keys (lower-case,
/// HTTP token characters), values (printable ASCII), in bounds.
fn metadata_headers(h: &HeaderMap) -> Result<BTreeMap<String, String>, Reject> {
    let bad = |m: String| Reject::new(StatusCode::BAD_REQUEST, m);
    let mut out = BTreeMap::new();
    for (name, value) in h {
        let Some(key) = name.as_str().strip_prefix("x-metadata-") else {
            continue;
        };
        if key.is_empty() {
            return Err(bad(
                "a metadata header names no key (X-Metadata- alone)".into()
            ));
        }
        if META_PREFIX.len() + key.len() > MAX_XATTR_NAME {
            return Err(bad(format!(
                "metadata key {key:?} is too long: at most {} bytes",
                MAX_XATTR_NAME - META_PREFIX.len()
            )));
        }
        let v = value
            .to_str()
            .ok()
            .filter(|v| v.bytes().all(|b| (0x20..=0x7e).contains(&b)))
            .ok_or_else(|| {
                bad(format!(
                    "the value of metadata key {key:?} is not printable US-ASCII"
                ))
            })?;
        if v.len() > MAX_XATTR_VALUE {
            return Err(bad(format!(
                "the value of metadata key {key:?} is {} bytes; at most {MAX_XATTR_VALUE} are allowed",
                v.len()
            )));
        }
        if out.insert(key.to_string(), v.to_string()).is_some() {
            return Err(bad(format!("metadata key {key:?} is given twice")));
        }
    }
    if out.len() > MAX_XATTRS {
        return Err(bad(format!(
            "{} metadata keys given; a file carries at most {MAX_XATTRS}",
            out.len()
        )));
    }
    Ok(out)
}

/// The upload's metadata as the extended attributes that replace the
/// file's (an empty set clears what an earlier upload left).
fn xattr_set(meta: &BTreeMap<String, String>) -> XattrSet {
    XattrSet {
        prefix: META_PREFIX.to_string(),
        set: meta
            .iter()
            .map(|(k, v)| (format!("{META_PREFIX}{k}"), v.clone()))
            .collect(),
    }
}

async fn upload_inner(
    envd: &Arc<Envd>,
    h: &HeaderMap,
    q: &FilesQuery,
    body: drain::BodyStream,
    authorized: &mut bool,
) -> Result<Vec<serde_json::Value>, Reject> {
    let meta = metadata_headers(h)?;
    let (target, proof) = authorize(envd, h, q, "write").await?;
    *authorized = true;
    let ctx = envd.ctx_for(target, q.username.clone()).await?;
    if !meta.is_empty() {
        let health = ctx
            .agent
            .health()
            .await
            .map_err(|e| file_error(e, "asking the sandbox's agent what it supports failed"))?;
        if !health.features.iter().any(|f| f == FEATURE_XATTRS) {
            return Err(Reject::new(
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "sandbox {}'s agent predates file metadata; restart the sandbox so it runs the current agent, or write without metadata",
                    ctx.target.id
                ),
            ));
        }
    }
    let xattrs = xattr_set(&meta);
    let _slot = envd.upload_slot().await?;
    let _guard = envd.ctl.stream_opened(&ctx.target.id);
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let query_path = q.path.clone().filter(|p| !p.is_empty());
    if proof == Proof::Signature && query_path.is_none() {
        return Err(Reject::new(
            StatusCode::BAD_REQUEST,
            "a signed upload URL must name its file with ?path=",
        ));
    }
    if let Some(b) = multipart::boundary(ct) {
        return upload_form(&ctx, query_path, &b, body, &meta).await;
    }
    let raw = query_path
        .ok_or_else(|| Reject::new(StatusCode::BAD_REQUEST, "missing the path query parameter"))?;
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
    let mut w = open_writer(&ctx, &path, &xattrs).await?;
    let fail = |e: dwell_proto::Error| file_error(e, &format!("writing {path} failed"));
    let mut stream = body;
    if gzip {
        let mut rx = gunzip::decode(stream);
        while let Some(piece) = rx.recv().await {
            let data = piece.map_err(|e| {
                Reject::new(
                    StatusCode::BAD_REQUEST,
                    format!("the gzip body is corrupt or truncated: {e}"),
                )
            })?;
            w.write(data).await.map_err(fail)?;
        }
    } else {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Reject::new(
                    StatusCode::BAD_REQUEST,
                    format!("reading the upload failed: {e}"),
                )
            })?;
            if !chunk.is_empty() {
                w.write(chunk).await.map_err(fail)?;
            }
        }
    }
    w.finish().await.map_err(fail)?;
    Ok(vec![written(&path, &meta)])
}

/// A file being written from a form part.
struct Open {
    path: String,
    w: dwell_proto::FileWriter,
}

/// Writes the `file` parts of a multipart form as they arrive. With
/// `query_path` (the SDK's single-file write, and every signed URL) the
/// form must carry exactly one file, written there; otherwise each part's
/// filename is its path.
async fn upload_form(
    ctx: &Ctx,
    query_path: Option<String>,
    boundary: &str,
    body: drain::BodyStream,
    meta: &BTreeMap<String, String>,
) -> Result<Vec<serde_json::Value>, Reject> {
    let bad = |m: String| Reject::new(StatusCode::BAD_REQUEST, m);
    let mut parser = multipart::Parser::new(boundary).map_err(bad)?;
    let mut stream = body;
    let xattrs = xattr_set(meta);
    let mut out = Vec::new();
    let mut files = 0usize;
    // `None` while outside a part or inside a part that is not a file.
    let mut cur: Option<Open> = None;
    loop {
        while let Some(ev) = parser.next().map_err(bad)? {
            match ev {
                multipart::Event::Part { name, filename } => {
                    if name != "file" {
                        continue;
                    }
                    files += 1;
                    let raw = match &query_path {
                        Some(p) if files == 1 => p.clone(),
                        Some(_) => {
                            return Err(bad(
                                "?path= names one file but the form carries several; send one file, or drop ?path= and name each part by its filename".into(),
                            ))
                        }
                        None => filename.filter(|f| !f.is_empty()).ok_or_else(|| {
                            bad("a file part has no filename and no ?path= was given".into())
                        })?,
                    };
                    let path = resolve_path(&raw, &ctx.user);
                    let w = open_writer(ctx, &path, &xattrs).await?;
                    cur = Some(Open { path, w });
                }
                multipart::Event::Data(b) => {
                    if let Some(o) = cur.as_mut() {
                        o.w.write(b)
                            .await
                            .map_err(|e| file_error(e, &format!("writing {} failed", o.path)))?;
                    }
                }
                multipart::Event::End => {
                    if let Some(o) = cur.take() {
                        o.w.finish()
                            .await
                            .map_err(|e| file_error(e, &format!("writing {} failed", o.path)))?;
                        out.push(written(&o.path, meta));
                    }
                }
            }
        }
        if parser.is_done() {
            break;
        }
        match stream.next().await {
            Some(Ok(chunk)) => parser.push(&chunk),
            Some(Err(e)) => return Err(bad(format!("reading the upload failed: {e}"))),
            None => {
                parser.finish().map_err(bad)?;
                break;
            }
        }
    }
    if files == 0 {
        return Err(bad("the form has no \"file\" part".into()));
    }
    Ok(out)
}

/// Opens `path` for writing as the request's user, its metadata replaced
/// by `xattrs` first (on an agent that predates metadata, only an empty
/// set reaches here, which it ignores).
async fn open_writer(
    ctx: &Ctx,
    path: &str,
    xattrs: &XattrSet,
) -> Result<dwell_proto::FileWriter, Reject> {
    let opts = WriteOptions {
        append: false,
        mode: Some(0o644),
        create_parents: true,
    };
    ctx.agent
        .write_file_with(path, opts, ctx.user.agent_user(), Some(xattrs.clone()))
        .await
        .map_err(|e| file_error(e, &format!("cannot write {path}")))
}
