//! `/v1/sandboxes/{id}/service`: the sandbox's service (the command its
//! agent supervises): its state, start/stop/restart, and its output.

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::{Extension, Json};
use dwell_contract::query::ServiceLogs;
use dwell_contract::service::{ServiceControlBody, ServiceStatus};
use dwell_contract::ErrorBody;

use super::with_agent;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json as JsonBody, Path, Query};
use crate::wire;
use crate::AppState;

fn no_service(id: &str) -> ApiError {
    dwell_control::Error::NotFound(format!(
        "sandbox {id} has no service: its image has no start command, or it was created with \
         --no-service; create one with --entrypoint/--cmd"
    ))
    .into()
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/service", tag = "sandboxes",
    summary = "The state of the sandbox's service (a running sandbox's)",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = ServiceStatus), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn status(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<ServiceStatus>> {
    match st.ctl.service_status(&p.tenant, &id).await? {
        Some(s) => wire::map(&s).map(Json),
        None => {
            let sb = st.ctl.get(&p.tenant, &id)?;
            if sb.spec.service.is_none() {
                return Err(no_service(&sb.name));
            }
            Err(ApiError::new(
                409,
                "conflict",
                format!(
                    "sandbox {} is {}; its service runs while it runs (`dwell start`/`resume` it)",
                    sb.name,
                    sb.state.as_str()
                ),
            ))
        }
    }
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/service", tag = "sandboxes",
    summary = "Start, stop or restart the sandbox's service",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = ServiceControlBody,
    responses((status = 200, body = ServiceStatus), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn control(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<JsonBody<ServiceControlBody>, crate::extract::BodyRejection>,
) -> ApiResult<Json<ServiceStatus>> {
    let JsonBody(b) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad service request: {}; send {{\"action\": \"start\"|\"stop\"|\"restart\"}}",
            e.detail
        ))
    })?;
    let action: dwell_proto::ServiceAction = wire::map(&b.action)?;
    let s = st.ctl.service_control(&p.tenant, &id, action).await?;
    wire::map(&s).map(Json)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/service/logs", tag = "sandboxes",
    summary = "The service's output (stdout and stderr as it came; with follow, live)",
    params(("id" = String, Path, description = "Sandbox id or name"), ServiceLogs),
    responses(
        (status = 200, description = "The output's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = "default", description = "Error", body = ErrorBody)))]
pub async fn logs(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<ServiceLogs>,
) -> ApiResult<Response> {
    let sb = st.ctl.get(&p.tenant, &id)?;
    if sb.spec.service.is_none() {
        return Err(no_service(&sb.name));
    }
    let (_, stream) = with_agent(&st, &p, &id, "service logs", |c| async move {
        c.service_logs(q.follow, q.tail, q.since_ms).await
    })
    .await?;
    // An open follow is a stream: the sandbox is not idle meanwhile.
    let guard = q.follow.then(|| st.ctl.stream_opened(&sb.id));
    let body = futures_util::stream::unfold((stream, guard), |(mut s, guard)| async move {
        match s.next().await {
            Ok(Some(dwell_proto::LogChunk::Stdout(b)))
            | Ok(Some(dwell_proto::LogChunk::Stderr(b))) => {
                Some((Ok::<_, dwell_proto::Error>(b), (s, guard)))
            }
            Ok(None) => None,
            Err(e) => Some((Err(e), (s, guard))),
        }
    });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::internal(e.to_string()))
}
