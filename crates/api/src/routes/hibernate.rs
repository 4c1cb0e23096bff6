//! `POST /v1/sandboxes/{id}/hibernate`: save a gVisor sandbox whole to
//! disk; `POST .../resume` restores it.

use axum::extract::State;
use axum::{Extension, Json};
use dwell_contract::{ErrorBody, Sandbox};

use super::sandboxes::view;
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::Path;
use crate::AppState;

#[utoipa::path(post, path = "/v1/sandboxes/{id}/hibernate", tag = "sandboxes",
    summary = "Save a gVisor sandbox (memory and processes) to disk",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn hibernate(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    view(&st.ctl.hibernate(&p.tenant, &id).await?)
}
