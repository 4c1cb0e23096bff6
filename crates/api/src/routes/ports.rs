//! `/v1/sandboxes/{id}/ports[/{port}]`: expose ports of a sandbox through
//! the port proxy, list them, get a fresh one-time login link, unexpose.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use dwell_contract::{ErrorBody, PortExpose, PortExposure};
use dwell_control::{Controller, PortSettings};
use dwell_store::Exposure;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::AppState;

/// An exposure as the API shows it, with its URL when the proxy runs.
pub fn exposure_view(
    settings: Option<&PortSettings>,
    e: &Exposure,
    token: Option<String>,
    login: Option<String>,
) -> PortExposure {
    let label = dwell_control::ports::host_label(e.port, &e.sandbox_id);
    // Port 0 (every port) has no single URL.
    let settings = settings.filter(|_| e.port != 0);
    let url = settings.map(|s| s.url(&label));
    PortExposure {
        sandbox: e.sandbox_id.clone(),
        port: e.port,
        public: e.public,
        created_at: e.created_at,
        host: settings.map(|s| format!("{label}.{}", s.domain)),
        login_url: match (&url, login) {
            (Some(u), Some(l)) => Some(format!("{u}?dwell_token={l}")),
            _ => None,
        },
        url,
        token,
    }
}

/// The views of a sandbox's exposures (for `inspect`).
pub fn exposures_of(ctl: &Controller, tenant: &str, id: &str) -> ApiResult<Vec<PortExposure>> {
    let (_, list) = ctl.port_exposures(tenant, id)?;
    let settings = ctl.port_settings();
    Ok(list
        .iter()
        .map(|e| exposure_view(settings.as_ref(), e, None, None))
        .collect())
}

/// A login link for a private exposure, when the proxy runs.
fn login(ctl: &Controller, e: &Exposure) -> ApiResult<Option<String>> {
    if ctl.port_settings().is_none() || e.port == 0 {
        return Ok(None);
    }
    Ok(ctl.port_login_token(e, e.port)?)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/ports", tag = "ports",
    summary = "Expose a port of a sandbox through the port proxy (private unless `public`)",
    description = "Answers 201 with the token (private ports) when the port was not exposed this way, 200 when it already was (no token then; `new_token` makes a new one). `login_url` is a one-time browser link.",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = PortExpose,
    responses((status = 201, body = PortExposure), (status = 200, body = PortExposure), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn expose(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<crate::extract::Json<PortExpose>, crate::extract::BodyRejection>,
) -> ApiResult<(StatusCode, Json<PortExposure>)> {
    let crate::extract::Json(req) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad expose request: {}; send {{\"port\": 8080, \"public\": false}}",
            e.detail
        ))
    })?;
    let x = st
        .ctl
        .expose_port(&p.tenant, &id, req.port, req.public, req.new_token)?;
    let login = login(&st.ctl, &x.exposure)?;
    let status = if x.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let settings = st.ctl.port_settings();
    Ok((
        status,
        Json(exposure_view(
            settings.as_ref(),
            &x.exposure,
            x.token,
            login,
        )),
    ))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/ports", tag = "ports",
    summary = "The exposed ports of a sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Vec<PortExposure>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<PortExposure>>> {
    Ok(Json(exposures_of(&st.ctl, &p.tenant, &id)?))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/ports/{port}", tag = "ports",
    summary = "One exposed port, with a fresh one-time login link (private ports)",
    params(("id" = String, Path, description = "Sandbox id or name"), ("port" = u16, Path, description = "Port inside the sandbox")),
    responses((status = 200, body = PortExposure), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((id, port)): Path<(String, u16)>,
) -> ApiResult<Json<PortExposure>> {
    let (_, e) = st.ctl.port_exposure(&p.tenant, &id, port)?;
    let login = login(&st.ctl, &e)?;
    let settings = st.ctl.port_settings();
    Ok(Json(exposure_view(settings.as_ref(), &e, None, login)))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/ports/{port}", tag = "ports",
    summary = "Stop exposing a port (its token, links and cookies stop working)",
    params(("id" = String, Path, description = "Sandbox id or name"), ("port" = u16, Path, description = "Port inside the sandbox")),
    responses((status = 204, description = "Unexposed"), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn unexpose(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((id, port)): Path<(String, u16)>,
) -> ApiResult<StatusCode> {
    st.ctl.unexpose_port(&p.tenant, &id, port)?;
    Ok(StatusCode::NO_CONTENT)
}
