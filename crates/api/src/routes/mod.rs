//! The router: every route of the API, one file per resource.

pub(crate) mod builds;
pub(crate) mod console;
pub(crate) mod drain_node;
pub(crate) mod exec;
pub(crate) mod files;
pub(crate) mod hibernate;
pub(crate) mod images;
pub(crate) mod moves;
pub(crate) mod networks;
pub(crate) mod nodes;
pub(crate) mod ports;
pub(crate) mod processes;
pub(crate) mod registries;
pub(crate) mod sandboxes;
pub(crate) mod service;
pub mod snapshots;
pub(crate) mod ssh_keys;
pub(crate) mod tenants;
pub(crate) mod volumes;

use std::future::Future;

use axum::routing::{delete, get, post};
use axum::{Json, Router};
use dwell_contract::{ErrorBody, Info};
use dwell_control::Sandbox;
use dwell_proto::AgentClient;

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::AppState;

/// Every route. Each handler carries its `#[utoipa::path]` and is listed in
/// [`crate::openapi`]; a test checks the two agree.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .route("/v1/info", get(info))
        .route(
            "/v1/sandboxes",
            post(sandboxes::create).get(sandboxes::list),
        )
        .route(
            "/v1/sandboxes/{id}",
            get(sandboxes::inspect)
                .patch(sandboxes::update)
                .delete(sandboxes::delete),
        )
        .route("/v1/sandboxes/{id}/keepalive", post(sandboxes::keepalive))
        .route("/v1/sandboxes/{id}/start", post(sandboxes::start))
        .route("/v1/sandboxes/{id}/stop", post(sandboxes::stop))
        .route("/v1/sandboxes/{id}/pause", post(sandboxes::pause))
        .route("/v1/sandboxes/{id}/resume", post(sandboxes::resume))
        .route("/v1/sandboxes/{id}/hibernate", post(hibernate::hibernate))
        .route("/v1/sandboxes/{id}/move", post(moves::move_sandbox))
        .route("/v1/sandboxes/{id}/events", get(sandboxes::events))
        .route("/v1/sandboxes/{id}/stats", get(sandboxes::stats))
        .route("/v1/sandboxes/{id}/diff", get(sandboxes::diff))
        .route("/v1/sandboxes/{id}/snapshots", post(snapshots::create))
        .route("/v1/sandboxes/{id}/restore", post(snapshots::restore))
        .route("/v1/sandboxes/{id}/archive", post(snapshots::archive))
        .route("/v1/sandboxes/{id}/progress", get(snapshots::progress))
        .route("/v1/gc/snapshots", post(snapshots::gc))
        .route("/v1/snapshots", get(snapshots::list))
        .route(
            "/v1/snapshots/{id}",
            get(snapshots::inspect).delete(snapshots::delete),
        )
        .route("/v1/sandboxes/{id}/exec", post(exec::run).get(exec::stream))
        .route(
            "/v1/sandboxes/{id}/ports",
            post(ports::expose).get(ports::list),
        )
        .route(
            "/v1/sandboxes/{id}/ports/{port}",
            get(ports::get).delete(ports::unexpose),
        )
        .route(
            "/v1/sandboxes/{id}/service",
            get(service::status).post(service::control),
        )
        .route("/v1/sandboxes/{id}/service/logs", get(service::logs))
        .route("/v1/sandboxes/{id}/processes", get(processes::list))
        .route(
            "/v1/sandboxes/{id}/processes/{pid}/signal",
            post(processes::signal),
        )
        .route(
            "/v1/sandboxes/{id}/processes/{pid}/attach",
            get(processes::attach),
        )
        .route(
            "/v1/sandboxes/{id}/files",
            get(files::download)
                .put(files::upload)
                .delete(files::remove),
        )
        .route("/v1/sandboxes/{id}/fs/list", get(files::list))
        .route("/v1/sandboxes/{id}/fs/stat", get(files::stat))
        .route("/v1/sandboxes/{id}/fs/mkdir", post(files::mkdir))
        .route("/v1/sandboxes/{id}/fs/rename", post(files::rename))
        .route(
            "/v1/images",
            get(images::list)
                .post(images::import)
                .delete(images::remove),
        )
        .route("/v1/images/prune", post(images::prune))
        .route("/v1/images/pull", post(images::pull))
        .route(
            "/v1/registries/logins",
            get(registries::list)
                .post(registries::login)
                .delete(registries::logout),
        )
        .route("/v1/images/export", get(images::export))
        .route("/v1/builds", post(builds::build))
        .route("/v1/networks", get(networks::list).post(networks::create))
        .route(
            "/v1/networks/{name}",
            get(networks::inspect).delete(networks::delete),
        )
        .route(
            "/v1/sandboxes/{id}/networks/{network}",
            post(networks::connect).delete(networks::disconnect),
        )
        .route("/v1/volumes", get(volumes::list).post(volumes::create))
        .route(
            "/v1/volumes/{name}",
            get(volumes::inspect).delete(volumes::delete),
        )
        .route("/v1/volumes/{name}/resize", post(volumes::resize))
        .route("/v1/volumes/{name}/snapshots", post(volumes::snapshot))
        .route("/v1/volumes/{name}/restore", post(volumes::restore))
        .route("/v1/tenants", get(tenants::list).post(tenants::create))
        .route(
            "/v1/tenants/{name}",
            get(tenants::inspect).patch(tenants::update),
        )
        .route(
            "/v1/tenants/{name}/keys",
            post(tenants::new_api_key).get(tenants::list_keys),
        )
        .route(
            "/v1/tenants/{name}/keys/{key}",
            axum::routing::delete(tenants::revoke_key),
        )
        .route("/v1/ssh-keys", post(ssh_keys::add).get(ssh_keys::list))
        .route(
            "/v1/ssh-keys/{key}",
            axum::routing::delete(ssh_keys::remove),
        )
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/nodes/{name}/drain", post(nodes::drain))
        .route("/v1/nodes/{name}/undrain", post(nodes::undrain))
        .route("/v1/console/logins", post(console::login_link))
        .route(
            "/v1/console/sessions",
            post(console::login)
                .get(console::list)
                .delete(console::revoke_all),
        )
        .route(
            "/v1/console/session",
            get(console::current).delete(console::logout),
        )
        .route("/v1/console/sessions/{session}", delete(console::revoke))
        .route("/v1/usage", get(tenants::usage))
        .route("/v1/usage/series", get(tenants::usage_series))
        .route("/v1/audit", get(tenants::audit))
        .route("/metrics", get(tenants::metrics))
        .fallback(crate::error::no_route)
        .method_not_allowed_fallback(crate::error::no_method)
        .with_state(state)
}

#[utoipa::path(get, path = "/healthz", tag = "meta",
    summary = "Liveness of the daemon (no API key needed)",
    security(()),
    responses(
        (status = 200, description = "`ok`", content_type = "text/plain", body = String),
        (status = "default", description = "Error", body = ErrorBody)))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    summary = "This document (no API key needed)",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object),
        (status = "default", description = "Error", body = ErrorBody)))]
pub(crate) async fn openapi() -> ([(&'static str, &'static str); 1], &'static str) {
    (
        [("content-type", "application/json")],
        crate::openapi::json(),
    )
}

#[utoipa::path(get, path = "/v1/info", tag = "meta",
    summary = "The daemon's version and runtime, and the caller's tenant",
    responses((status = 200, body = Info), (status = "default", description = "Error", body = ErrorBody)))]
pub(crate) async fn info(
    axum::extract::State(st): axum::extract::State<AppState>,
    axum::Extension(p): axum::Extension<Principal>,
) -> Json<Info> {
    Json(Info {
        version: env!("CARGO_PKG_VERSION").into(),
        runtime: st.ctl.runtime_name().into(),
        tenant: p.tenant,
    })
}

/// Call the agent of a running sandbox for the operation `op` (`exec`,
/// `file read`, ...: named in the sandbox's events when it wakes the
/// sandbox, see [`dwell_control::Controller::agent_for`]); if the cached
/// connection is dead (the agent restarted with its sandbox), reconnect
/// once and retry.
///
/// An agent that cannot be reached because the sandbox is being stopped,
/// paused or deleted meanwhile is a conflict about the sandbox's state
/// (409), not a failure of the daemon.
pub(crate) async fn with_agent<T, F, Fut>(
    st: &AppState,
    p: &Principal,
    id: &str,
    op: &str,
    f: F,
) -> ApiResult<(Sandbox, T)>
where
    F: Fn(AgentClient) -> Fut,
    Fut: Future<Output = dwell_proto::Result<T>>,
{
    let sb = st.ctl.get(&p.tenant, id)?;
    with_agent_of(st, p, sb, op, f).await
}

/// [`with_agent`] for a sandbox the handler just read: the first attempt
/// does not read its record again.
pub(crate) async fn with_agent_of<T, F, Fut>(
    st: &AppState,
    p: &Principal,
    sb: Sandbox,
    op: &str,
    f: F,
) -> ApiResult<(Sandbox, T)>
where
    F: Fn(AgentClient) -> Fut,
    Fut: Future<Output = dwell_proto::Result<T>>,
{
    let id = sb.id.clone();
    let (sb, client) = match st.ctl.agent_for_sandbox(&p.tenant, sb, op).await {
        Err(dwell_control::Error::Agent(dwell_proto::Error::Unreachable(why))) => {
            changing_state(st, p, &id)?;
            return Err(dwell_control::Error::Agent(dwell_proto::Error::Unreachable(why)).into());
        }
        r => r?,
    };
    st.ctl.touch(&sb.id);
    match f(client).await {
        Err(dwell_proto::Error::Unreachable(_)) => {
            st.ctl.agent_failed(&sb.id).await;
            changing_state(st, p, &id)?;
            let (sb, client) = st.ctl.agent_for(&p.tenant, &id, op).await?;
            Ok((sb, f(client).await?))
        }
        r => Ok((sb, r?)),
    }
}

/// The conflict of a sandbox no longer running, or asked to leave that
/// state, whose agent just could not be reached.
fn changing_state(st: &AppState, p: &Principal, id: &str) -> ApiResult<()> {
    let sb = st.ctl.get(&p.tenant, id)?;
    if sb.state == dwell_control::State::Running
        && sb.desired_state == dwell_control::State::Running
    {
        return Ok(());
    }
    Err(crate::ApiError::new(
        409,
        dwell_contract::error::code::CONFLICT,
        format!(
            "sandbox {} is {} (asked to be {}) and its agent is gone; send the request again once it runs",
            sb.name,
            sb.state.as_str(),
            sb.desired_state.as_str()
        ),
    )
    .with_fact(dwell_contract::error::fact::SANDBOX, &sb.name)
    .with_fact(dwell_contract::error::fact::STATE, sb.state.as_str()))
}
