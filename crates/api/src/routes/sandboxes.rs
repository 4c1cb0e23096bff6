//! `/v1/sandboxes`: create, list, inspect, lifecycle, events, stats, delete.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use dwell_contract::error::{code, fact};
use dwell_contract::query::{DeleteSandbox, Events, ListSandboxes};
use dwell_contract::sandbox::{Drift, Event, KeepaliveBody, Stats, UpdateBody};
use dwell_contract::{CreateRequest, ErrorBody, Sandbox};
use dwell_control::State as SbState;

use crate::auth::Principal;
use crate::bounds;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Path, Query};
use crate::wire;
use crate::AppState;

/// The contract's view of a control-plane sandbox.
pub(crate) fn view(sb: &dwell_control::Sandbox) -> ApiResult<Json<Sandbox>> {
    wire::map(sb).map(Json)
}

#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes",
    summary = "Create a sandbox (and start it)",
    request_body = CreateRequest,
    responses((status = 201, body = Sandbox), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<crate::extract::Json<CreateRequest>, crate::extract::BodyRejection>,
) -> ApiResult<(StatusCode, Json<Sandbox>)> {
    let crate::extract::Json(req) =
        body.map_err(|e| ApiError::bad_request(format!("bad create request: {}", e.detail)))?;
    bounds::vcpus("vcpus", req.vcpus)?;
    bounds::size("memory", &req.memory)?;
    bounds::size("disk", &req.disk)?;
    bounds::quantity("pids", req.pids)?;
    if let Some(policies) = &req.policies {
        bounds::policies("policies", policies)?;
    }
    let sb = st.ctl.create(&p.tenant, wire::map(&req)?).await?;
    Ok((StatusCode::CREATED, view(&sb)?))
}

#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes",
    summary = "List the tenant's sandboxes",
    params(ListSandboxes),
    responses((status = 200, body = Vec<Sandbox>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ListSandboxes>,
) -> ApiResult<Json<Vec<Sandbox>>> {
    let filter = q
        .state
        .as_deref()
        .map(dwell_control::model::parse_state)
        .transpose()?;
    let mut all = if q.stats {
        st.ctl.list_with_stats(&p.tenant).await?
    } else {
        st.ctl.list(&p.tenant)?
    };
    if let Some(f) = filter {
        all.retain(|s| s.state == f);
    }
    wire::map_all(&all).map(Json)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    summary = "Inspect a sandbox (with volume and live stats)",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn inspect(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    let Json(mut sb) = view(&st.ctl.inspect(&p.tenant, &id).await?)?;
    sb.ports = super::ports::exposures_of(&st.ctl, &p.tenant, &sb.id)?;
    Ok(Json(sb))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    summary = "Delete a sandbox and its data",
    params(("id" = String, Path, description = "Sandbox id or name"), DeleteSandbox),
    responses((status = 204, description = "Deleted"), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn delete(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<DeleteSandbox>,
) -> ApiResult<StatusCode> {
    st.ctl.delete(&p.tenant, &id, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/start", tag = "sandboxes",
    summary = "Start a stopped (or archived) sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn start(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    view(&st.ctl.start(&p.tenant, &id).await?)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/stop", tag = "sandboxes",
    summary = "Stop a sandbox (an ephemeral one is deleted)",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn stop(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    view(&st.ctl.stop(&p.tenant, &id).await?)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/pause", tag = "sandboxes",
    summary = "Freeze every process of a sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn pause(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    view(&st.ctl.pause(&p.tenant, &id).await?)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume", tag = "sandboxes",
    summary = "Thaw a paused sandbox or restore a hibernated one",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn resume(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    view(&st.ctl.resume(&p.tenant, &id).await?)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/events", tag = "sandboxes",
    summary = "The sandbox's event log",
    params(("id" = String, Path, description = "Sandbox id or name"), Events),
    responses((status = 200, body = Vec<Event>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn events(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<Events>,
) -> ApiResult<Json<Vec<Event>>> {
    wire::map_all(&st.ctl.events(&p.tenant, &id, q.after)?).map(Json)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/stats", tag = "sandboxes",
    summary = "Live usage of a running or paused sandbox",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Stats), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn stats(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Stats>> {
    let sb = st.ctl.get(&p.tenant, &id)?;
    if !matches!(sb.state, SbState::Running | SbState::Paused) {
        return Err(ApiError::new(
            409,
            code::CONFLICT,
            format!(
                "sandbox {} is {}; stats exist only while it runs",
                sb.name,
                sb.state.as_str()
            ),
        )
        .with_fact(fact::SANDBOX, &sb.name)
        .with_fact(fact::STATE, sb.state.as_str())
        .with_fact(fact::ACTION, "stats"));
    }
    wire::map(&st.ctl.stats(&sb).await?).map(Json)
}

#[utoipa::path(patch, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    summary = "Change a live sandbox's policies and egress rules",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = UpdateBody,
    responses((status = 200, body = Sandbox), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn update(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<crate::extract::Json<UpdateBody>, crate::extract::BodyRejection>,
) -> ApiResult<Json<Sandbox>> {
    let crate::extract::Json(b) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad update request: {}; send {{\"policies\": {{\"idle_timeout\": \"10m\"}}}} or \
             {{\"allow_out\": [\"pypi.org\"], \"deny_out\": [\"0.0.0.0/0\"]}}",
            e.detail
        ))
    })?;
    if let Some(policies) = &b.policies {
        bounds::policies("policies", policies)?;
    }
    if b.allow_out.is_some() || b.deny_out.is_some() {
        let change = dwell_control::controller::EgressChange {
            allow: b.allow_out.clone(),
            deny: b.deny_out.clone(),
            precedence: None,
        };
        st.ctl.update_egress(&p.tenant, &id, &change).await?;
    }
    match b.policies {
        Some(policies) => view(
            &st.ctl
                .update_policies(&p.tenant, &id, &wire::map(&policies)?)?,
        ),
        None => view(&st.ctl.get(&p.tenant, &id)?),
    }
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/keepalive", tag = "sandboxes",
    summary = "Hold idle and TTL policies off for a while",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = KeepaliveBody,
    responses((status = 200, body = Sandbox), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn keepalive(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<crate::extract::Json<KeepaliveBody>, crate::extract::BodyRejection>,
) -> ApiResult<Json<Sandbox>> {
    let crate::extract::Json(b) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad keepalive request: {}; send {{\"duration\": \"30m\"}}",
            e.detail
        ))
    })?;
    bounds::duration("duration", &b.duration)?;
    let duration: dwell_control::policy::DurationArg = wire::map(&b.duration)?;
    let ms = duration.millis("duration")?.ok_or_else(|| {
        ApiError::bad_request("a keepalive needs a duration above zero, like 30m")
    })?;
    view(&st.ctl.keepalive(&p.tenant, &id, ms)?)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/diff", tag = "sandboxes",
    summary = "Packages and files that differ from the image",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Drift), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn diff(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Drift>> {
    let sb = st.ctl.get(&p.tenant, &id)?;
    if sb.state == SbState::Archived {
        return Err(ApiError::new(
            409,
            code::CONFLICT,
            format!(
                "sandbox {} is archived: its volume is in the snapshot store, so there is nothing to compare",
                sb.name
            ),
        )
        .with_fact(fact::SANDBOX, &sb.name)
        .with_fact(fact::STATE, sb.state.as_str())
        .with_fact(fact::ACTION, "diff"));
    }
    wire::map(&st.ctl.diff(&p.tenant, &id).await?).map(Json)
}
