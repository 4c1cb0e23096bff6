//! `/v1/sandboxes/{id}/processes`: processes started through the agent,
//! signals by pid, and re-attaching to a running (or finished) process.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use dwell_contract::exec::SignalBody;
use dwell_contract::{ErrorBody, ProcessInfo};

use super::exec::{oom_count, pump, send_error};
use super::with_agent;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Path, Upgrade};
use crate::wire;
use crate::AppState;

#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes", tag = "exec",
    summary = "Processes started through the API, running or finished",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Vec<ProcessInfo>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ProcessInfo>>> {
    let (_, list) = with_agent(&st, &p, &id, "process list", |c| async move {
        c.processes().await
    })
    .await?;
    wire::map_all(&list).map(Json)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/signal", tag = "exec",
    summary = "Send a signal to a process",
    params(("id" = String, Path, description = "Sandbox id or name"), ("pid" = u32, Path, description = "Process id")),
    request_body = SignalBody,
    responses((status = 204, description = "Sent"), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn signal(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((id, pid)): Path<(String, u32)>,
    body: Result<crate::extract::Json<SignalBody>, crate::extract::BodyRejection>,
) -> ApiResult<StatusCode> {
    let crate::extract::Json(b) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad signal request: {}; send {{\"signal\": 15}}",
            e.detail
        ))
    })?;
    if !(1..=64).contains(&b.signal) {
        return Err(ApiError::bad_request(format!(
            "{} is not a signal number; use 1-64 (15 = TERM, 9 = KILL)",
            b.signal
        )));
    }
    with_agent(&st, &p, &id, "signal", |c| async move {
        c.signal(pid, b.signal).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}/attach", tag = "exec",
    summary = "Re-attach to a process over WebSocket (the exec protocol without the first message)",
    params(("id" = String, Path, description = "Sandbox id or name"), ("pid" = u32, Path, description = "Process id")),
    responses((status = 101, description = "Switching Protocols to WebSocket"), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn attach(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    cred: Option<Extension<crate::credential::Credential>>,
    Path((id, pid)): Path<(String, u32)>,
    Upgrade(ws): Upgrade,
) -> ApiResult<Response> {
    let (sb, _) = st.ctl.agent_for(&p.tenant, &id, "attach").await?;
    let cred = cred.map(|Extension(c)| c);
    let guarded = st.clone();
    Ok(ws.on_upgrade(move |mut socket| {
        crate::credential::guard(guarded, cred, async move {
            let oom0 = oom_count(&st, &sb).await;
            match with_agent(
                &st,
                &p,
                &sb.id,
                "attach",
                |c| async move { c.attach(pid).await },
            )
            .await
            {
                Ok((sb, stream)) => pump(&st, &sb, socket, stream, oom0).await,
                Err(e) => {
                    let _ = send_error(&mut socket, &e).await;
                }
            }
        })
    }))
}
