//! `/v1/registries/logins`: a tenant's registry logins (`dwell registry
//! login/logout/ls`). Passwords are stored sealed and never answered back;
//! they serve only that tenant's own pulls.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use dwell_contract::images::{LoginBody, RegistryLogin, RegistryQuery};
use dwell_contract::ErrorBody;

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::{Json as JsonBody, Query};
use crate::wire;
use crate::AppState;

#[utoipa::path(get, path = "/v1/registries/logins", tag = "images",
    summary = "List the tenant's registry logins (no passwords)",
    responses((status = 200, body = Vec<RegistryLogin>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Vec<RegistryLogin>>> {
    let logins = st.ctl.registry_logins(&p.tenant)?;
    wire::map_all(&logins).map(Json)
}

#[utoipa::path(post, path = "/v1/registries/logins", tag = "images",
    summary = "Store (or replace) the tenant's login to a registry; the password is sealed",
    request_body = LoginBody,
    responses((status = 201, body = RegistryLogin), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn login(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    JsonBody(b): JsonBody<LoginBody>,
) -> ApiResult<(StatusCode, Json<RegistryLogin>)> {
    let l = st
        .ctl
        .registry_login(&p.tenant, &b.registry, &b.username, &b.password)?;
    Ok((StatusCode::CREATED, Json(wire::map(&l)?)))
}

#[utoipa::path(delete, path = "/v1/registries/logins", tag = "images",
    summary = "Forget the tenant's login to a registry",
    params(RegistryQuery),
    responses((status = 204), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn logout(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<RegistryQuery>,
) -> ApiResult<StatusCode> {
    st.ctl.registry_logout(&p.tenant, &q.registry)?;
    Ok(StatusCode::NO_CONTENT)
}
