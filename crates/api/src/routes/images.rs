//! `/v1/images`: list images and import OCI images (an OCI layout dir or a
//! `docker save` tarball on the daemon's host). Images are shared by all
//! tenants; importing needs an admin.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use dwell_contract::images::{Image, ImportBody};
use dwell_contract::ErrorBody;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json as JsonBody;
use crate::wire;
use crate::AppState;

#[utoipa::path(get, path = "/v1/images", tag = "images",
    summary = "List images",
    responses((status = 200, body = Vec<Image>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list(State(st): State<AppState>) -> ApiResult<Json<Vec<Image>>> {
    let ctl = st.ctl.clone();
    let images = tokio::task::spawn_blocking(move || ctl.images().list())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(dwell_control::Error::from)?;
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
    if !p.admin {
        return Err(ApiError::new(
            403,
            "permission_denied",
            "importing images needs an admin API key",
        ));
    }
    let ctl = st.ctl.clone();
    let image = tokio::task::spawn_blocking(move || {
        ctl.images().import(&b.name, std::path::Path::new(&b.path))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::new(400, "image_import_failed", e.to_string()))?;
    Ok((StatusCode::CREATED, Json(wire::map(&image)?)))
}
