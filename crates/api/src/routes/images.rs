//! `/v1/images`: list, import, remove, prune and export images. Images are
//! shared by all tenants (except those pulled with a tenant's registry
//! credentials, which only that tenant sees); importing, removing and
//! pruning need an admin. Images are named by reference in the `ref`
//! query parameter (`python:3.12`, `registry.local:5000/team/app@sha256:...`).

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use dwell_contract::images::{ExportQuery, Image, ImageRef, ImportBody};
use dwell_contract::ErrorBody;
use dwell_storage::ExportFormat;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json as JsonBody, Query};
use crate::wire;
use crate::AppState;

#[utoipa::path(get, path = "/v1/images", tag = "images",
    summary = "List images",
    responses((status = 200, body = Vec<Image>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Vec<Image>>> {
    let ctl = st.ctl.clone();
    let tenant = p.tenant.clone();
    let images = tokio::task::spawn_blocking(move || ctl.images_for(&tenant))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    wire::map_all(&images).map(Json)
}

#[utoipa::path(post, path = "/v1/images", tag = "images",
    summary = "Import an OCI layout dir or `docker save` tarball on the daemon's host (admin)",
    request_body = ImportBody,
    responses((status = 201, body = Image), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn import(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    JsonBody(b): JsonBody<ImportBody>,
) -> ApiResult<(StatusCode, Json<Image>)> {
    crate::auth::require_admin(&p, "importing images")?;
    let ctl = st.ctl.clone();
    let image = tokio::task::spawn_blocking(move || {
        ctl.images().import(&b.name, std::path::Path::new(&b.path))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| match e {
        dwell_storage::StorageError::InvalidReference { .. }
        | dwell_storage::StorageError::InvalidName { .. }
        | dwell_storage::StorageError::ImageExists(_) => dwell_control::Error::from(e).into(),
        e => ApiError::new(400, "image_import_failed", e.to_string()),
    })?;
    Ok((StatusCode::CREATED, Json(wire::map(&image)?)))
}

#[utoipa::path(delete, path = "/v1/images", tag = "images",
    summary = "Remove an image no sandbox uses (admin)",
    params(ImageRef),
    responses((status = 200, body = Image), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn remove(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ImageRef>,
) -> ApiResult<Json<Image>> {
    crate::auth::require_admin(&p, "removing images")?;
    let img = st.ctl.remove_image(&q.r#ref).await?;
    Ok(Json(wire::map(&img)?))
}

#[utoipa::path(post, path = "/v1/images/prune", tag = "images",
    summary = "Remove every image no sandbox uses, and unused blobs and layers (admin)",
    responses((status = 200, body = Vec<Image>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn prune(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Vec<Image>>> {
    crate::auth::require_admin(&p, "pruning images")?;
    let removed = st.ctl.prune_images().await?;
    wire::map_all(&removed).map(Json)
}

#[utoipa::path(get, path = "/v1/images/export", tag = "images",
    summary = "Export an image as a tar archive: an OCI image layout, plus docker-save's manifest.json with format=docker",
    params(ExportQuery),
    responses(
        (status = 200, description = "The archive", content_type = "application/x-tar", body = Vec<u8>),
        (status = "default", description = "Error", body = ErrorBody)))]
pub async fn export(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    let format: ExportFormat = q
        .format
        .as_deref()
        .unwrap_or("oci")
        .parse()
        .map_err(ApiError::bad_request)?;
    // Resolve (and check access) before streaming, so errors get a status.
    let reference = st.ctl.image_for_tenant(&p.tenant, &q.r#ref).await?;
    let ctl = st.ctl.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter { tx: tx.clone() };
        if let Err(e) = ctl.images().export_archive(&reference, format, &mut w) {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .header("content-type", "application/x-tar")
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A blocking writer feeding an async response body.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[utoipa::path(post, path = "/v1/images/pull", tag = "images",
    summary = "Pull an image from its registry; streams progress events (NDJSON), ending with `done` or `error`",
    request_body = dwell_contract::images::PullBody,
    responses(
        (status = 200, description = "One PullEvent a line", content_type = "application/x-ndjson", body = dwell_contract::images::PullEvent),
        (status = "default", description = "Error", body = ErrorBody)))]
pub async fn pull(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    JsonBody(b): JsonBody<dwell_contract::images::PullBody>,
) -> ApiResult<Response> {
    use dwell_contract::images::PullEvent;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    let line = |e: &PullEvent| {
        let mut v = serde_json::to_vec(e).unwrap_or_default();
        v.push(b'\n');
        bytes::Bytes::from(v)
    };
    if b.if_missing {
        if let Ok(reference) = st.ctl.image_for_tenant(&p.tenant, &b.reference).await {
            let ctl = st.ctl.clone();
            let img = tokio::task::spawn_blocking(move || ctl.images().get(&reference))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(dwell_control::Error::from)?;
            let done = PullEvent::Done {
                image: Box::new(wire::map(&img)?),
                fetched_bytes: 0,
                reused_layers: img.layers.len(),
                shared_layers: 0,
            };
            return ndjson(futures_util::stream::iter([Ok::<_, std::io::Error>(line(
                &done,
            ))]));
        }
    }
    // A malformed reference fails before anything streams.
    if dwell_storage::is_builtin(&b.reference) {
        return Err(ApiError::bad_request(format!(
            "{:?} is a built-in image; it is never pulled",
            b.reference
        )));
    }
    dwell_storage::Reference::parse(&b.reference).map_err(dwell_control::Error::from)?;
    let ctl = st.ctl.clone();
    let tenant = p.tenant.clone();
    tokio::spawn(async move {
        let (etx, mut erx) = tokio::sync::mpsc::channel(256);
        let fwd_tx = tx.clone();
        let forward = tokio::spawn(async move {
            while let Some(ev) = erx.recv().await {
                let Ok(ev) = wire::map::<_, PullEvent>(&ev) else {
                    continue;
                };
                if fwd_tx.send(line(&ev)).await.is_err() {
                    break;
                }
            }
        });
        let res = ctl.pull_image(&tenant, &b.reference, Some(etx)).await;
        let _ = forward.await;
        if let Err(e) = res {
            let err = ApiError::from(e);
            let ev = PullEvent::Error {
                code: err.code.to_string(),
                message: err.message.clone(),
                status: err.status.as_u16(),
            };
            let _ = tx.send(line(&ev)).await;
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    ndjson(body)
}

fn ndjson<S>(body: S) -> ApiResult<Response>
where
    S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
{
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::internal(e.to_string()))
}
