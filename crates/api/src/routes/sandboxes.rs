//! `/v1/sandboxes`: create, list, inspect, lifecycle, events, stats, delete.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use dwell_control::policy::{DurationArg, PolicyArgs};
use dwell_control::{CreateRequest, Sandbox, State as SbState};
use dwell_store::Event;
use serde::Deserialize;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub async fn create(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<CreateRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Sandbox>)> {
    let Json(req) =
        body.map_err(|e| ApiError::bad_request(format!("bad create request: {}", e.body_text())))?;
    let sb = st.ctl.create(&p.tenant, req).await?;
    Ok((StatusCode::CREATED, Json(sb)))
}

#[derive(Deserialize)]
pub struct ListQuery {
    state: Option<String>,
}

pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<Sandbox>>> {
    let filter = q
        .state
        .as_deref()
        .map(dwell_control::model::parse_state)
        .transpose()?;
    let mut all = st.ctl.list(&p.tenant)?;
    if let Some(f) = filter {
        all.retain(|s| s.state == f);
    }
    Ok(Json(all))
}

pub async fn inspect(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(st.ctl.inspect(&p.tenant, &id).await?))
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

pub async fn delete(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    st.ctl.delete(&p.tenant, &id, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn start(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(st.ctl.start(&p.tenant, &id).await?))
}

pub async fn stop(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(st.ctl.stop(&p.tenant, &id).await?))
}

pub async fn pause(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(st.ctl.pause(&p.tenant, &id).await?))
}

pub async fn resume(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(st.ctl.resume(&p.tenant, &id).await?))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    after: i64,
}

pub async fn events(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Vec<Event>>> {
    Ok(Json(st.ctl.events(&p.tenant, &id, q.after)?))
}

pub async fn stats(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<dwell_runtime::Stats>> {
    let sb = st.ctl.get(&p.tenant, &id)?;
    if !matches!(sb.state, SbState::Running | SbState::Paused) {
        return Err(ApiError::new(
            409,
            "conflict",
            format!(
                "sandbox {} is {}; stats exist only while it runs",
                sb.name,
                sb.state.as_str()
            ),
        ));
    }
    Ok(Json(st.ctl.stats(&sb).await?))
}

/// `PATCH /v1/sandboxes/{id}`: what can change on a live sandbox.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[serde(default)]
    policies: Option<PolicyArgs>,
}

pub async fn update(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<UpdateBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Sandbox>> {
    let Json(b) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad update request: {}; send {{\"policies\": {{\"idle_timeout\": \"10m\"}}}}",
            e.body_text()
        ))
    })?;
    match b.policies {
        Some(policies) => Ok(Json(st.ctl.update_policies(&p.tenant, &id, &policies)?)),
        None => Ok(Json(st.ctl.get(&p.tenant, &id)?)),
    }
}

#[derive(Deserialize)]
pub struct KeepaliveBody {
    duration: DurationArg,
}

pub async fn keepalive(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<KeepaliveBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Sandbox>> {
    let Json(b) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad keepalive request: {}; send {{\"duration\": \"30m\"}}",
            e.body_text()
        ))
    })?;
    let ms = b.duration.millis("duration")?.ok_or_else(|| {
        ApiError::bad_request("a keepalive needs a duration above zero, like 30m")
    })?;
    Ok(Json(st.ctl.keepalive(&p.tenant, &id, ms)?))
}

pub async fn diff(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<dwell_control::diff::Drift>> {
    Ok(Json(st.ctl.diff(&p.tenant, &id).await?))
}
