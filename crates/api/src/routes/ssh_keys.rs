//! `/v1/ssh-keys`: the caller's tenant's SSH public keys for the SSH
//! gateway (an admin acts for a tenant with `X-Dwell-Tenant`). Keys are
//! public: listing shows them whole.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use dwell_contract::ssh_keys::{SshKey, SshKeyBody};
use dwell_contract::ErrorBody;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::wire;
use crate::AppState;

#[utoipa::path(post, path = "/v1/ssh-keys", tag = "ssh",
    summary = "Register an SSH public key of the tenant (logins through the SSH gateway)",
    request_body = SshKeyBody,
    responses((status = 201, body = SshKey), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn add(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<crate::extract::Json<SshKeyBody>, crate::extract::BodyRejection>,
) -> ApiResult<(StatusCode, Json<SshKey>)> {
    let crate::extract::Json(b) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad SSH key request: {}; send {{\"public_key\": \"ssh-ed25519 AAAA...\", \"name\": \"laptop\"}}",
            e.detail
        ))
    })?;
    let key = st
        .ctl
        .add_ssh_key(&p.tenant, b.name.as_deref(), &b.public_key)?;
    Ok((StatusCode::CREATED, Json(wire::map(&key)?)))
}

#[utoipa::path(get, path = "/v1/ssh-keys", tag = "ssh",
    summary = "The tenant's SSH public keys, oldest first",
    responses((status = 200, body = Vec<SshKey>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Vec<SshKey>>> {
    let keys = st.ctl.ssh_keys(&p.tenant)?;
    wire::map_all(&keys).map(Json)
}

#[utoipa::path(delete, path = "/v1/ssh-keys/{key}", tag = "ssh",
    summary = "Remove an SSH public key of the tenant (by id or name); its logins are refused and its open connections closed",
    params(("key" = String, Path, description = "The key's id or name")),
    responses((status = 200, body = SshKey), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn remove(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(key): Path<String>,
) -> ApiResult<Json<SshKey>> {
    match st.ctl.remove_ssh_key(&p.tenant, &key)? {
        Some(k) => Ok(Json(wire::map(&k)?)),
        None => Err(ApiError::not_found(format!(
            "no SSH key {key:?} (id or name) in tenant {}; list them with `dwell ssh-key ls`",
            p.tenant
        ))),
    }
}
