//! `/v1/networks`: a tenant's private networks, and
//! `/v1/sandboxes/{id}/networks/{network}`: putting a stopped sandbox on
//! one or taking it off. Tenant-scoped: another tenant's network is 404.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use dwell_contract::{CreateNetwork, ErrorBody, Network, Sandbox};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::wire;
use crate::AppState;

use super::sandboxes::view;

#[utoipa::path(post, path = "/v1/networks", tag = "networks",
    summary = "Create a private network",
    request_body = CreateNetwork,
    responses((status = 201, body = Network), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<crate::extract::Json<CreateNetwork>, crate::extract::BodyRejection>,
) -> ApiResult<(StatusCode, Json<Network>)> {
    let crate::extract::Json(req) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad network request: {}; send {{\"name\": \"team\", \"subnet\": \"10.211.5.0/24\"}} \
             (subnet optional)",
            e.detail
        ))
    })?;
    let n = st
        .ctl
        .create_network(&p.tenant, &req.name, req.subnet.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(wire::map(&n)?)))
}

#[utoipa::path(get, path = "/v1/networks", tag = "networks",
    summary = "List the tenant's private networks with their members",
    responses((status = 200, body = Vec<Network>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Vec<Network>>> {
    wire::map_all(&st.ctl.networks(&p.tenant)?).map(Json)
}

#[utoipa::path(get, path = "/v1/networks/{name}", tag = "networks",
    summary = "Inspect a private network (members and their addresses)",
    params(("name" = String, Path, description = "Network name or id")),
    responses((status = 200, body = Network), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn inspect(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<Json<Network>> {
    wire::map(&st.ctl.network(&p.tenant, &name)?).map(Json)
}

#[utoipa::path(delete, path = "/v1/networks/{name}", tag = "networks",
    summary = "Remove a private network (409 while sandboxes are on it)",
    params(("name" = String, Path, description = "Network name or id")),
    responses((status = 204, description = "Removed"), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn delete(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    st.ctl.delete_network(&p.tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/networks/{network}", tag = "networks",
    summary = "Put a stopped sandbox on a private network (its interface comes up at its next start)",
    params(("id" = String, Path, description = "Sandbox id or name"),
           ("network" = String, Path, description = "Network name or id")),
    responses((status = 200, body = Sandbox), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn connect(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((id, network)): Path<(String, String)>,
) -> ApiResult<Json<Sandbox>> {
    view(&st.ctl.connect_network(&p.tenant, &id, &network).await?)
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/networks/{network}", tag = "networks",
    summary = "Take a stopped sandbox off a private network",
    params(("id" = String, Path, description = "Sandbox id or name"),
           ("network" = String, Path, description = "Network name or id")),
    responses((status = 200, body = Sandbox), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn disconnect(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((id, network)): Path<(String, String)>,
) -> ApiResult<Json<Sandbox>> {
    view(&st.ctl.disconnect_network(&p.tenant, &id, &network).await?)
}
