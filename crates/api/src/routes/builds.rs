//! `POST /v1/builds`: build an image from a Dockerfile. The body is the
//! build context as a tar (plain or gzip), written to the daemon's staging
//! area (at most [`MAX_CONTEXT`] bytes) and unpacked there with the image
//! extractor's rules (no absolute paths, no `..`, nothing through a
//! symlink, no device nodes). The answer streams the build's events as
//! NDJSON ([`dwell_contract::builds::BuildEvent`]); the last line is `done`
//! or `error`. The staged context is removed when the build ends.

use std::io::Write;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use dwell_contract::builds::{parse_build_args, BuildEvent, BuildQuery};
use dwell_contract::ErrorBody;
use dwell_control::build::BuildRequest;
use futures_util::StreamExt;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::AppState;

/// The largest build context accepted (compressed bytes as sent).
pub const MAX_CONTEXT: u64 = 2 << 30;
/// Where `dwell build` puts a Dockerfile from outside the context (removed
/// from the context once read).
pub const OUTSIDE_DOCKERFILE: &str = ".dwell-build.Dockerfile";
/// The most bytes a build context unpacks to.
pub const MAX_UNPACKED: u64 = 8 << 30;
/// The largest Dockerfile read from the context.
const MAX_DOCKERFILE: u64 = 1 << 20;

/// Removes the staged context when dropped.
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn list(s: &Option<String>) -> Option<Vec<String>> {
    s.as_ref().map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    })
}

#[utoipa::path(post, path = "/v1/builds", tag = "images",
    summary = "Build an image from a Dockerfile (context as a tar body; NDJSON progress)",
    description = "RUN steps run in sandboxes of the caller's tenant (counted in its quota), without network unless `net` is set. The answer is one JSON event per line; the last is `done` (the image's digest) or `error` (code, message, failing step, exit code).",
    params(BuildQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The build context: a tar archive, gzip-compressed or not"),
    responses((status = 200, description = "NDJSON stream of build events", content_type = "application/x-ndjson", body = BuildEvent),
        (status = "default", description = "Error", body = ErrorBody)))]
pub async fn build(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<BuildQuery>,
    body: Body,
) -> ApiResult<Response> {
    let tags: Vec<String> = list(&Some(q.t.clone())).unwrap_or_default();
    if tags.is_empty() {
        return Err(ApiError::bad_request(
            "name the image: t=NAME:TAG (several comma-separated)",
        ));
    }
    let build_args = match &q.build_args {
        Some(s) => parse_build_args(s).map_err(ApiError::bad_request)?,
        None => Default::default(),
    };
    let dockerfile_rel = q.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into());
    // Refuse a build over the tenant's concurrent-build cap before its
    // context is staged (the build itself holds the slot it takes).
    drop(st.ctl.build_permit(&p.tenant)?);
    // Stage the context.
    let root = st.ctl.images().root().join("tmp");
    let staged = Staged(root.join(format!("build-context-{}", nonce())));
    std::fs::create_dir_all(&staged.0)
        .map_err(|e| ApiError::internal(format!("staging the build context: {e}")))?;
    let tar_path = staged.0.join("context.tar");
    let dir = staged.0.join("context");
    std::fs::create_dir(&dir)
        .map_err(|e| ApiError::internal(format!("staging the build context: {e}")))?;
    {
        let mut f = std::fs::File::create(&tar_path)
            .map_err(|e| ApiError::internal(format!("staging the build context: {e}")))?;
        let mut n: u64 = 0;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk: Bytes = chunk
                .map_err(|e| ApiError::bad_request(format!("the context upload broke: {e}")))?;
            n += chunk.len() as u64;
            if n > MAX_CONTEXT {
                return Err(ApiError::new(
                    413,
                    dwell_contract::error::code::PAYLOAD_TOO_LARGE,
                    format!(
                        "the build context is larger than {MAX_CONTEXT} bytes; exclude files \
                         with .dockerignore"
                    ),
                ));
            }
            f.write_all(&chunk)
                .map_err(|e| ApiError::internal(format!("staging the build context: {e}")))?;
        }
    }
    let (tp, d) = (tar_path.clone(), dir.clone());
    tokio::task::spawn_blocking(move || unpack(&tp, &d))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let _ = std::fs::remove_file(&tar_path);
    // The Dockerfile, read without following a symlink.
    let clean = dockerfile_rel.trim_start_matches('/').to_string();
    let (d, c) = (dir.clone(), clean.clone());
    let dockerfile = tokio::task::spawn_blocking(move || {
        dwell_hostfs::Beneath::open(&d).and_then(|b| b.read_string_capped(&c, MAX_DOCKERFILE))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| {
        ApiError::bad_request(format!(
            "cannot read the Dockerfile {dockerfile_rel:?} from the context: {e}"
        ))
    })?;
    // A Dockerfile the CLI sent from outside the context is not part of it.
    if clean == OUTSIDE_DOCKERFILE {
        let _ = std::fs::remove_file(dir.join(OUTSIDE_DOCKERFILE));
    }
    let disk = q.disk.clone().map(dwell_control::model::SizeArg::Text);
    let memory = q.memory.clone().map(dwell_control::model::SizeArg::Text);
    let req = BuildRequest {
        dockerfile,
        context_dir: dir,
        tags: tags.clone(),
        build_args,
        target: q.target.clone(),
        isolation: q.isolation.clone(),
        no_cache: q.no_cache,
        // Egress rules ask for network: --allow-out implies --net.
        network: (q.net || q.allow_out.is_some()).then_some(dwell_runtime::NetworkMode::Nat),
        allow_out: list(&q.allow_out),
        deny_out: list(&q.deny_out),
        disk,
        memory,
        timeout_secs: q.timeout,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<dwell_control::build::BuildEvent>(256);
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let ctl = st.ctl.clone();
    let tenant = p.tenant.clone();
    // The build task cleans up whatever happens; a client that leaves
    // cancels it.
    tokio::spawn(async move {
        let _staged = staged;
        let fwd_tx = out_tx.clone();
        // A client that goes away drops `rx`, which cancels the build.
        let forward = tokio::spawn(async move {
            loop {
                let e = tokio::select! {
                    e = rx.recv() => e,
                    _ = fwd_tx.closed() => break,
                };
                let Some(e) = e else { break };
                if fwd_tx.send(Ok(line(&e))).await.is_err() {
                    break;
                }
            }
        });
        let r = ctl.build(&tenant, req, tx).await;
        let _ = forward.await;
        let last = match r {
            Ok(o) => dwell_control::build::BuildEvent::Done {
                digest: o.digest,
                tags,
                steps: o.steps,
                cached: o.cached,
            },
            Err(e) => {
                let api: ApiError = e.into();
                dwell_control::build::BuildEvent::Error {
                    code: api.code.to_string(),
                    message: api.message,
                    step: api.facts.get("step").and_then(|s| s.parse().ok()),
                    exit_code: api.facts.get("exit_code").and_then(|s| s.parse().ok()),
                }
            }
        };
        let _ = out_tx.send(Ok(line(&last))).await;
    });
    let stream =
        futures_util::stream::unfold(
            out_rx,
            |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
        );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn line(e: &dwell_control::build::BuildEvent) -> Bytes {
    let mut v = serde_json::to_vec(e).expect("events serialize");
    v.push(b'\n');
    Bytes::from(v)
}

fn nonce() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS has randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unpack(tar: &Path, dir: &Path) -> ApiResult<()> {
    dwell_storage::unpack_untrusted(tar, dir, "the build context", MAX_UNPACKED).map_err(|e| {
        ApiError::bad_request(format!("the build context is not a usable tar: {e}"))
    })?;
    Ok(())
}
