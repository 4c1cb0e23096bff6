//! `/v1/sandboxes/{id}/processes`: processes started through the agent,
//! signals by pid, and re-attaching to a running (or finished) process.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use dwell_proto::ProcessInfo;

use super::exec::{oom_count, pump, send_error};
use super::with_agent;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::types::SignalBody;
use crate::AppState;

pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ProcessInfo>>> {
    let (_, list) = with_agent(&st, &p, &id, |c| async move { c.processes().await }).await?;
    Ok(Json(list))
}

pub async fn signal(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((id, pid)): Path<(String, u32)>,
    body: Result<Json<SignalBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(b) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad signal request: {}; send {{\"signal\": 15}}",
            e.body_text()
        ))
    })?;
    if !(1..=64).contains(&b.signal) {
        return Err(ApiError::bad_request(format!(
            "{} is not a signal number; use 1-64 (15 = TERM, 9 = KILL)",
            b.signal
        )));
    }
    with_agent(
        &st,
        &p,
        &id,
        |c| async move { c.signal(pid, b.signal).await },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn attach(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((id, pid)): Path<(String, u32)>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let (sb, _) = st.ctl.agent(&p.tenant, &id).await?;
    Ok(ws.on_upgrade(move |mut socket| async move {
        let oom0 = oom_count(&st, &sb).await;
        match with_agent(&st, &p, &sb.id, |c| async move { c.attach(pid).await }).await {
            Ok((sb, stream)) => pump(&st, &sb, socket, stream, oom0).await,
            Err(e) => {
                let _ = send_error(&mut socket, &e).await;
            }
        }
    }))
}
