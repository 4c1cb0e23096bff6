//! `/v1/sandboxes/{id}/exec`: `POST` runs a command to completion and
//! returns its output; `GET` upgrades to a WebSocket that streams it (stdin,
//! stdout, stderr, PTY resize, signals; see [`dwell_contract::exec`]).

use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use axum::extract::State;
use axum::response::Response;
use axum::{Extension, Json};
use bytes::Bytes;
use dwell_contract::exec::{
    ClientMsg, ExecCall, ExecResult, ExitReport, ServerMsg, CH_STDERR, CH_STDIN, CH_STDOUT,
};
use dwell_contract::ErrorBody;
use dwell_control::Sandbox;
use dwell_proto::{ExecRequest, ExitStatus, ProcessEvent, ProcessStream};
use futures_util::{SinkExt, StreamExt};

use super::{with_agent, with_agent_of};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Path, Upgrade};
use crate::wire;
use crate::AppState;

/// OOM kills so far in the sandbox (0 when unknown).
pub(crate) async fn oom_count(st: &AppState, sb: &Sandbox) -> u64 {
    // Read before every exec: one cgroup file where the runtime can.
    if let Some(n) = st.ctl.oom_kills_now(sb) {
        return n;
    }
    st.ctl.stats(sb).await.map(|s| s.oom_kills).unwrap_or(0)
}

/// Turn the agent's exit status into the API's, noticing OOM kills.
pub(crate) async fn report(
    st: &AppState,
    sb: &Sandbox,
    status: ExitStatus,
    oom_before: u64,
) -> ExitReport {
    let oom_killed =
        status.signal == Some(9) && !status.timed_out && oom_count(st, sb).await > oom_before;
    ExitReport {
        code: status.code,
        signal: status.signal,
        timed_out: status.timed_out,
        oom_killed,
    }
}

/// Add the sandbox's secret variables to an exec request (the request's own
/// variables win). They travel only over the agent's socket.
fn with_secrets(st: &AppState, id: &str, req: &mut ExecRequest) -> ApiResult<()> {
    for (k, v) in st.ctl.secret_env(id)? {
        req.env.entry(k).or_insert(v);
    }
    Ok(())
}

fn check(req: &ExecRequest) -> ApiResult<()> {
    req.command_line().map(|_| ()).map_err(|m| {
        ApiError::bad_request(format!("bad exec request: {m}; send {{\"argv\": [\"ls\", \"-l\"]}} or {{\"shell\": \"ls -l | wc -l\"}}"))
    })
}

/// The stdout and stderr together that a synchronous exec collects in the
/// daemon's memory for its JSON answer; a command that prints more fails
/// with 413 `payload_too_large` (the streaming exec has no such limit).
pub const MAX_RUN_OUTPUT: u64 = 16 << 20;

#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", tag = "exec",
    summary = "Run a command to completion and return its output",
    description = "Stdout and stderr together are limited to 16 MiB (413 payload_too_large above); use the streaming exec (GET, WebSocket) for more.",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = ExecCall,
    responses((status = 200, body = ExecResult), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn run(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<crate::extract::Json<ExecCall>, crate::extract::BodyRejection>,
) -> ApiResult<Json<ExecResult>> {
    let crate::extract::Json(call) =
        body.map_err(|e| ApiError::bad_request(format!("bad exec request: {}", e.detail)))?;
    let mut req: ExecRequest = wire::map(&call.request)?;
    check(&req)?;
    let t0 = Instant::now();
    // One read of the record: the sandbox and its secret variables.
    let (sb, secrets) = st.ctl.sandbox_with_secrets(&p.tenant, &id)?;
    let oom0 = oom_count(&st, &sb).await;
    req.stdin = call.stdin_data.is_some() || req.stdin;
    for (k, v) in secrets {
        req.env.entry(k).or_insert(v);
    }
    let (sb, stream) = with_agent_of(&st, &p, sb, "exec", |c| {
        let r = req.clone();
        async move { c.exec(r).await }
    })
    .await?;
    let pid = stream.pid();
    if let Some(data) = call.stdin_data {
        let input = stream.input();
        input.write_stdin(Bytes::from(data)).await?;
        input.close_stdin().await?;
    } else if req.stdin {
        stream.input().close_stdin().await?;
    }
    let out = stream.output(MAX_RUN_OUTPUT).await?;
    let exit = report(&st, &sb, out.status, oom0).await;
    Ok(Json(ExecResult {
        pid,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        exit,
        duration_ms: t0.elapsed().as_millis() as u64,
    }))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/exec", tag = "exec",
    summary = "Streaming exec over WebSocket",
    description = "Upgrades to a WebSocket. Send the ExecRequest as the first text message; binary messages carry stdin (0), stdout (1), stderr (2) after a channel byte; text messages carry ClientMsg / ServerMsg JSON.",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 101, description = "Switching Protocols to WebSocket"), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn stream(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    cred: Option<Extension<crate::credential::Credential>>,
    Path(id): Path<String>,
    Upgrade(ws): Upgrade,
) -> ApiResult<Response> {
    // Fail before the upgrade when the sandbox cannot run anything.
    let (sb, _) = st.ctl.agent_for(&p.tenant, &id, "exec").await?;
    let cred = cred.map(|Extension(c)| c);
    Ok(ws.on_upgrade(move |socket| {
        crate::credential::guard(st.clone(), cred, exec_ws(st, p, sb, socket))
    }))
}

async fn exec_ws(st: AppState, p: Principal, sb: Sandbox, mut socket: WebSocket) {
    let req: ExecRequest = match socket.recv().await {
        Some(Ok(Message::Text(t))) => {
            match serde_json::from_str::<dwell_contract::ExecRequest>(t.as_str())
                .map_err(|e| e.to_string())
                .and_then(|r| wire::map(&r).map_err(|e| e.message))
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = send_error(
                        &mut socket,
                        &ApiError::bad_request(format!("bad exec request: {e}")),
                    )
                    .await;
                    return;
                }
            }
        }
        _ => return,
    };
    let mut req = req;
    if let Err(e) = check(&req).and_then(|_| with_secrets(&st, &sb.id, &mut req)) {
        let _ = send_error(&mut socket, &e).await;
        return;
    }
    let oom0 = oom_count(&st, &sb).await;
    let opened = with_agent(&st, &p, &sb.id, "exec", |c| {
        let r = req.clone();
        async move { c.exec(r).await }
    })
    .await;
    match opened {
        Ok((sb, stream)) => pump(&st, &sb, socket, stream, oom0).await,
        Err(e) => {
            let _ = send_error(&mut socket, &e).await;
        }
    }
}

pub(crate) async fn send_error(socket: &mut WebSocket, e: &ApiError) -> Result<(), axum::Error> {
    let msg = ServerMsg::Error {
        code: e.code.into(),
        message: e.message.clone(),
    };
    socket
        .send(Message::Text(
            serde_json::to_string(&msg).unwrap_or_default().into(),
        ))
        .await?;
    socket.send(Message::Close(None)).await
}

fn channel(ch: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(ch);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

fn text(msg: &ServerMsg) -> Message {
    Message::Text(serde_json::to_string(msg).unwrap_or_default().into())
}

/// Shuttle a process stream over a WebSocket until the process exits or the
/// client goes away (which kills a foreground process).
pub(crate) async fn pump(
    st: &AppState,
    sb: &Sandbox,
    socket: WebSocket,
    mut stream: ProcessStream,
    oom0: u64,
) {
    let input = stream.input();
    let (mut tx, mut rx) = socket.split();
    loop {
        tokio::select! {
            ev = stream.try_next() => {
                let msg = match ev {
                    Ok(Some(ProcessEvent::Started { pid })) => text(&ServerMsg::Started { pid }),
                    Ok(Some(ProcessEvent::Stdout(b))) => channel(CH_STDOUT, &b),
                    Ok(Some(ProcessEvent::Stderr(b))) => channel(CH_STDERR, &b),
                    Ok(Some(ProcessEvent::Exit(status))) => {
                        let exit = report(st, sb, status, oom0).await;
                        let _ = tx.send(text(&ServerMsg::Exit(exit))).await;
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let e = ApiError::from(e);
                        let _ = tx.send(text(&ServerMsg::Error { code: e.code.into(), message: e.message })).await;
                        break;
                    }
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            msg = rx.next() => {
                let r = match msg {
                    Some(Ok(Message::Binary(b))) if b.first() == Some(&CH_STDIN) => {
                        input.write_stdin(Bytes::copy_from_slice(&b[1..])).await
                    }
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<ClientMsg>(t.as_str()) {
                        Ok(ClientMsg::StdinClose) => input.close_stdin().await,
                        Ok(ClientMsg::Resize { rows, cols }) => input.resize(rows, cols).await,
                        Ok(ClientMsg::Signal { signal }) => input.signal(signal).await,
                        Err(_) => Ok(()),
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => Ok(()),
                };
                if let Err(e) = r {
                    tracing::debug!("exec input: {e}");
                }
            }
        }
    }
    let _ = tx.send(Message::Close(None)).await;
}
