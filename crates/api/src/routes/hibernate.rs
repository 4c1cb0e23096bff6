//! `POST /v1/sandboxes/{id}/hibernate`: save a gVisor sandbox whole to
//! disk; `POST .../resume` restores it.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use dwell_control::Sandbox;

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::AppState;

pub async fn hibernate(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(st.ctl.hibernate(&p.tenant, &id).await?))
}
