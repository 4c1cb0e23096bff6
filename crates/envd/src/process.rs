//! The `process.Process` Connect service, mapped onto the agent's process
//! requests: Start (exec, in the background so the process outlives the
//! stream, as envd's do), Connect (attach), List, SendInput, StreamInput,
//! SendSignal, CloseStdin and Update (PTY resize).
//!
//! `Connect` re-attaches through the agent, which replays the process's
//! recent output (up to 64 KiB) before the live output.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use dwell_proto::{AgentClient, ExecRequest, ExitStatus, ProcessEvent, ProcessStream, TtySize};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::connect::{self, Code, ConnectError};
use crate::pbjson::{self, b64};
use crate::users::{basic_user, resolve_path};
use crate::Envd;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ProcessConfig {
    cmd: String,
    args: Vec<String>,
    envs: BTreeMap<String, String>,
    cwd: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PtySize {
    #[serde(deserialize_with = "pbjson::uint")]
    cols: u32,
    #[serde(deserialize_with = "pbjson::uint")]
    rows: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Pty {
    size: Option<PtySize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StartRequest {
    process: ProcessConfig,
    pty: Option<Pty>,
    tag: Option<String>,
    stdin: Option<bool>,
}

/// `ProcessSelector`: a pid or a tag.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Selector {
    #[serde(deserialize_with = "pbjson::opt_uint")]
    pid: Option<u32>,
    tag: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProcessOnly {
    process: Selector,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Input {
    #[serde(deserialize_with = "pbjson::bytes")]
    stdin: Option<Vec<u8>>,
    #[serde(deserialize_with = "pbjson::bytes")]
    pty: Option<Vec<u8>>,
}

impl Input {
    fn into_bytes(self) -> Vec<u8> {
        self.stdin.or(self.pty).unwrap_or_default()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SendInputRequest {
    process: Selector,
    input: Input,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SendSignalRequest {
    process: Selector,
    signal: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UpdateRequest {
    process: Selector,
    pty: Option<Pty>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StreamInputData {
    input: Input,
}

/// One `StreamInputRequest` (a oneof of start, data, keepalive).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StreamInputRequest {
    start: Option<ProcessOnly>,
    data: Option<StreamInputData>,
}

/// The pid a selector names.
async fn select(agent: &AgentClient, sel: &Selector) -> Result<u32, ConnectError> {
    if let Some(pid) = sel.pid {
        return Ok(pid);
    }
    let Some(tag) = &sel.tag else {
        return Err(ConnectError::invalid(
            "process selector is empty: set process.pid or process.tag",
        ));
    };
    let procs = agent.processes().await?;
    procs
        .iter()
        .filter(|p| p.running && p.tag.as_deref() == Some(tag))
        .map(|p| p.pid)
        .next_back()
        .ok_or_else(|| {
            ConnectError::new(
                Code::NotFound,
                format!("no running process with tag {tag:?}"),
            )
        })
}

/// The signal number of an E2B `Signal` enum name (or number).
fn signal_number(s: &str) -> Result<i32, ConnectError> {
    match s {
        "SIGNAL_SIGKILL" | "9" => Ok(9),
        "SIGNAL_SIGTERM" | "15" => Ok(15),
        other => Err(ConnectError::invalid(format!(
            "unsupported signal {other:?}: use SIGNAL_SIGKILL or SIGNAL_SIGTERM"
        ))),
    }
}

/// Go's name of a signal, as in `ProcessState.String()`.
fn signal_name(sig: i32) -> String {
    match sig {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        3 => "quit".into(),
        6 => "aborted".into(),
        9 => "killed".into(),
        11 => "segmentation fault".into(),
        13 => "broken pipe".into(),
        15 => "terminated".into(),
        n => format!("signal {n}"),
    }
}

/// The `EndEvent` of an exit status.
pub fn end_event(s: &ExitStatus) -> Value {
    let mut end = match (s.code, s.signal) {
        (Some(c), _) => {
            json!({"exitCode": c, "exited": true, "status": format!("exit status {c}")})
        }
        (None, Some(sig)) => json!({
            "exitCode": -1,
            "exited": false,
            "status": format!("signal: {}", signal_name(sig)),
        }),
        (None, None) => json!({"exitCode": -1, "exited": false, "status": "unknown"}),
    };
    if s.timed_out {
        end["error"] = json!("the process was killed because its timeout expired");
    }
    json!({"event": {"end": end}})
}

/// Streams a process's events as `StartResponse`/`ConnectResponse` frames,
/// with keepalives, until it ends or the client goes away.
fn pump(
    envd: &Arc<Envd>,
    id: &str,
    mut stream: ProcessStream,
    tty: bool,
    keepalive: Duration,
    deadline: Option<tokio::time::Instant>,
    conn: Option<crate::ConnectionReset>,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    // Set when the sandbox went away under the stream: the response is
    // then cut off (see `going_away`) rather than ended.
    let (cut_tx, cut_rx) = tokio::sync::oneshot::channel::<()>();
    let guard = envd.ctl.stream_opened(id);
    let (ctl, sid) = (envd.ctl.clone(), id.to_string());
    tokio::spawn(async move {
        let _guard = guard;
        let start = tokio::time::Instant::now() + keepalive;
        let mut tick = tokio::time::interval_at(start, keepalive);
        loop {
            let frame = tokio::select! {
                ev = stream.try_next() => match ev {
                    Ok(Some(ProcessEvent::Started { pid })) => {
                        connect::message_frame(&json!({"event": {"start": {"pid": pid}}}))
                    }
                    Ok(Some(ProcessEvent::Stdout(b))) => {
                        let k = if tty { "pty" } else { "stdout" };
                        connect::message_frame(&json!({"event": {"data": {k: b64(&b)}}}))
                    }
                    Ok(Some(ProcessEvent::Stderr(b))) => {
                        connect::message_frame(&json!({"event": {"data": {"stderr": b64(&b)}}}))
                    }
                    Ok(Some(ProcessEvent::Exit(s))) => {
                        if tx.send(connect::message_frame(&end_event(&s))).await.is_ok() {
                            let _ = tx.send(connect::end_ok_frame()).await;
                        }
                        return;
                    }
                    Ok(None) => {
                        let _ = tx.send(connect::end_ok_frame()).await;
                        return;
                    }
                    Err(e) => {
                        if going_away(&ctl, &sid, &e) {
                            // Cut off once it is gone: a client that asks
                            // `/health` then learns that it is.
                            settled(&ctl, &sid).await;
                            if let Some(c) = &conn {
                                c.arm();
                            }
                            let _ = cut_tx.send(());
                        } else {
                            let _ = tx.send(ConnectError::from(e).end_frame()).await;
                        }
                        return;
                    }
                },
                _ = tick.tick() => connect::message_frame(&json!({"event": {"keepalive": {}}})),
                // The call's deadline: its stream ends; the process goes on.
                _ = connect::until(deadline) => {
                    let _ = tx.send(connect::deadline_frame()).await;
                    return;
                }
                _ = tx.closed() => return,
            };
            if tx.send(frame).await.is_err() {
                return; // the client went away; the process keeps running
            }
        }
    });
    cut_off_response(rx, cut_rx)
}

/// Whether a process stream failed because its sandbox is going away (it
/// is being killed, stopped or hibernated, or is gone): the agent's
/// connection was lost and the sandbox is no longer meant to run.
fn going_away(ctl: &dwell_control::Controller, id: &str, e: &dwell_proto::Error) -> bool {
    if !matches!(e, dwell_proto::Error::Unreachable(_)) {
        return false;
    }
    match ctl.live_sandbox(id) {
        Ok(Some(sb)) => {
            sb.state != dwell_control::State::Running
                || sb.desired_state != dwell_control::State::Running
        }
        Ok(None) => true,
        Err(_) => false,
    }
}

/// How long a stream of a sandbox going away waits for it to be gone.
const SETTLE: Duration = Duration::from_secs(10);

/// Wait (at most [`SETTLE`]) until sandbox `id` no longer runs.
async fn settled(ctl: &dwell_control::Controller, id: &str) {
    let t0 = tokio::time::Instant::now();
    while t0.elapsed() < SETTLE {
        match ctl.live_sandbox(id) {
            Ok(Some(sb)) if sb.state == dwell_control::State::Running => {}
            _ => return,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A streaming response of the frames from `rx`; when `cut` fires, the
/// body fails instead of ending, so the connection drops mid-stream (reset,
/// when the listener gave a [`crate::ConnectionReset`]), as it does when a
/// sandbox is killed under a running command on E2B. The SDKs then ask
/// `/health`, and its 502 makes them report the sandbox as killed or at
/// its end of life (a `TimeoutException`), not as an error of the command.
fn cut_off_response(
    rx: mpsc::Receiver<Bytes>,
    cut: tokio::sync::oneshot::Receiver<()>,
) -> Response {
    let s = futures_util::stream::unfold((rx, Some(cut)), |(mut rx, cut)| async move {
        match rx.recv().await {
            Some(b) => Some((Ok::<Bytes, std::io::Error>(b), (rx, cut))),
            None => {
                // The producer ended: cut off if it asked for that.
                let mut cut = cut?;
                match cut.try_recv() {
                    Ok(()) => Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the sandbox went away under the stream",
                        )),
                        (rx, None),
                    )),
                    Err(_) => None,
                }
            }
        }
    });
    let mut r = Response::new(Body::from_stream(s));
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(connect::STREAM_JSON),
    );
    r
}

/// `Start`: runs a process and streams its events.
pub async fn start(
    State(envd): State<Arc<Envd>>,
    conn: Option<Extension<crate::ConnectionReset>>,
    h: HeaderMap,
    body: Body,
) -> Response {
    // The call's deadline counts from its arrival.
    let deadline = connect::deadline(&h);
    if let Err(why) = connect::check_codec(&h, true) {
        return connect::unsupported_codec(why);
    }
    let ctx = match envd.ctx(&h, basic_user(&h)).await {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let req: StartRequest = match connect::read_stream_request(body).await {
        Ok(r) => r,
        Err(e) => return connect::stream_error(&e),
    };
    if req.process.cmd.is_empty() {
        return connect::stream_error(&ConnectError::invalid("process.cmd is empty"));
    }
    let tty = req.pty.as_ref().map(|p| {
        let s = p.size.as_ref();
        TtySize {
            rows: s.map_or(24, |s| s.rows.clamp(1, u16::MAX as u32) as u16),
            cols: s.map_or(80, |s| s.cols.clamp(1, u16::MAX as u32) as u16),
        }
    });
    let mut argv = vec![req.process.cmd];
    argv.extend(req.process.args);
    let exec = ExecRequest {
        argv,
        env: req.process.envs,
        cwd: Some(resolve_path(
            req.process.cwd.as_deref().unwrap_or(""),
            &ctx.user,
        )),
        user: Some(ctx.user.name.clone()),
        stdin: req.stdin.unwrap_or(true),
        tty,
        background: true,
        tag: req.tag,
        ..Default::default()
    };
    match ctx.agent.exec(exec).await {
        Ok(s) => pump(
            &envd,
            &ctx.target.id,
            s,
            tty.is_some(),
            connect::keepalive_interval(&h),
            deadline,
            conn.map(|Extension(c)| c),
        ),
        Err(e) => connect::stream_error(&e.into()),
    }
}

/// `Connect`: re-attaches to a running process.
pub async fn connect_process(
    State(envd): State<Arc<Envd>>,
    conn: Option<Extension<crate::ConnectionReset>>,
    h: HeaderMap,
    body: Body,
) -> Response {
    // The call's deadline counts from its arrival.
    let deadline = connect::deadline(&h);
    if let Err(why) = connect::check_codec(&h, true) {
        return connect::unsupported_codec(why);
    }
    let ctx = match envd.ctx(&h, None).await {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let req: ProcessOnly = match connect::read_stream_request(body).await {
        Ok(r) => r,
        Err(e) => return connect::stream_error(&e),
    };
    let pid = match select(&ctx.agent, &req.process).await {
        Ok(p) => p,
        Err(e) => return connect::stream_error(&e),
    };
    match ctx.agent.attach(pid).await {
        Ok(s) => {
            let tty = s.info().is_some_and(|i| i.tty);
            pump(
                &envd,
                &ctx.target.id,
                s,
                tty,
                connect::keepalive_interval(&h),
                deadline,
                conn.map(|Extension(c)| c),
            )
        }
        Err(e) => connect::stream_error(&e.into()),
    }
}

/// `List`: running processes started through envd (or the agent).
pub async fn list(State(envd): State<Arc<Envd>>, h: HeaderMap, body: Body) -> Response {
    connect::unary(
        async {
            let (target, _): (_, Value) = crate::unary_request(&envd.ctl, &h, body).await?;
            let ctx = envd.ctx_for(target, None).await?;
            let procs = ctx.agent.processes().await?;
            let list: Vec<Value> = procs
                .into_iter()
                .filter(|p| p.running)
                .map(|p| {
                    let mut it = p.argv.into_iter();
                    let cmd = it.next().unwrap_or_default();
                    let args: Vec<String> = it.collect();
                    let mut v =
                        json!({"config": {"cmd": cmd, "args": args, "envs": {}}, "pid": p.pid});
                    if let Some(t) = p.tag {
                        v["tag"] = json!(t);
                    }
                    v
                })
                .collect();
            Ok(json!({ "processes": list }))
        }
        .await,
    )
}

/// `SendInput`: writes to a process's stdin or PTY.
pub async fn send_input(State(envd): State<Arc<Envd>>, h: HeaderMap, body: Body) -> Response {
    connect::unary(
        async {
            let (target, req): (_, SendInputRequest) =
                crate::unary_request(&envd.ctl, &h, body).await?;
            let ctx = envd.ctx_for(target, None).await?;
            let pid = select(&ctx.agent, &req.process).await?;
            let data = req.input.into_bytes();
            if !data.is_empty() {
                ctx.agent.write_stdin(pid, Bytes::from(data)).await?;
            }
            Ok(json!({}))
        }
        .await,
    )
}

/// `StreamInput`: a client stream of stdin chunks for one process.
pub async fn stream_input(State(envd): State<Arc<Envd>>, h: HeaderMap, body: Body) -> Response {
    if let Err(why) = connect::check_codec(&h, true) {
        return connect::unsupported_codec(why);
    }
    let ctx = match envd.ctx(&h, None).await {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let _guard = envd.ctl.stream_opened(&ctx.target.id);
    let r: Result<(), ConnectError> = async {
        let mut reader = connect::EnvelopeReader::new(body);
        let mut pid = None;
        while let Some(m) = reader.next::<StreamInputRequest>().await? {
            if let Some(s) = m.start {
                pid = Some(select(&ctx.agent, &s.process).await?);
            }
            if let Some(d) = m.data {
                let Some(pid) = pid else {
                    return Err(ConnectError::invalid(
                        "StreamInput sent data before its start message",
                    ));
                };
                let b = d.input.into_bytes();
                if !b.is_empty() {
                    ctx.agent.write_stdin(pid, Bytes::from(b)).await?;
                }
            }
        }
        Ok(())
    }
    .await;
    let (tx, rx) = mpsc::channel(2);
    match r {
        Ok(()) => {
            let _ = tx.try_send(connect::message_frame(&json!({})));
            let _ = tx.try_send(connect::end_ok_frame());
        }
        Err(e) => {
            let _ = tx.try_send(e.end_frame());
        }
    }
    connect::stream_response(rx)
}

/// `SendSignal`: SIGKILL or SIGTERM to a process (its group).
pub async fn send_signal(State(envd): State<Arc<Envd>>, h: HeaderMap, body: Body) -> Response {
    connect::unary(
        async {
            let (target, req): (_, SendSignalRequest) =
                crate::unary_request(&envd.ctl, &h, body).await?;
            let sig = signal_number(&req.signal)?;
            let ctx = envd.ctx_for(target, None).await?;
            let pid = select(&ctx.agent, &req.process).await?;
            ctx.agent.signal(pid, sig).await?;
            Ok(json!({}))
        }
        .await,
    )
}

/// `CloseStdin`: ends a process's stdin.
pub async fn close_stdin(State(envd): State<Arc<Envd>>, h: HeaderMap, body: Body) -> Response {
    connect::unary(
        async {
            let (target, req): (_, ProcessOnly) = crate::unary_request(&envd.ctl, &h, body).await?;
            let ctx = envd.ctx_for(target, None).await?;
            let pid = select(&ctx.agent, &req.process).await?;
            ctx.agent.close_stdin(pid).await?;
            Ok(json!({}))
        }
        .await,
    )
}

/// `Update`: resizes a process's PTY.
pub async fn update(State(envd): State<Arc<Envd>>, h: HeaderMap, body: Body) -> Response {
    connect::unary(
        async {
            let (target, req): (_, UpdateRequest) =
                crate::unary_request(&envd.ctl, &h, body).await?;
            let ctx = envd.ctx_for(target, None).await?;
            let pid = select(&ctx.agent, &req.process).await?;
            if let Some(size) = req.pty.and_then(|p| p.size) {
                if size.rows == 0 || size.cols == 0 || size.rows > 65535 || size.cols > 65535 {
                    return Err(ConnectError::invalid(format!(
                        "pty size {}x{} is out of range (1-65535)",
                        size.cols, size.rows
                    )));
                }
                ctx.agent
                    .resize(pid, size.rows as u16, size.cols as u16)
                    .await?;
            }
            Ok(json!({}))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_request_decodes_the_sdk_shape() {
        let r: StartRequest = serde_json::from_str(
            r#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"],"envs":{"A":"1"},"cwd":"/tmp"},"pty":{"size":{"cols":80,"rows":"24"}},"stdin":false,"tag":"t"}"#,
        )
        .unwrap();
        assert_eq!(r.process.args.len(), 3);
        assert_eq!(r.process.cwd.as_deref(), Some("/tmp"));
        let s = r.pty.unwrap().size.unwrap();
        assert_eq!((s.cols, s.rows), (80, 24));
        assert_eq!(r.stdin, Some(false));
    }

    #[test]
    fn input_and_selector_decode() {
        let r: SendInputRequest =
            serde_json::from_str(r#"{"process":{"pid":42},"input":{"stdin":"YQo="}}"#).unwrap();
        assert_eq!(r.process.pid, Some(42));
        assert_eq!(r.input.into_bytes(), b"a\n");
        let r: StreamInputRequest =
            serde_json::from_str(r#"{"start":{"process":{"tag":"x"}}}"#).unwrap();
        assert_eq!(r.start.unwrap().process.tag.as_deref(), Some("x"));
    }

    #[test]
    fn end_events() {
        let ok = end_event(&ExitStatus {
            code: Some(3),
            signal: None,
            timed_out: false,
        });
        assert_eq!(
            ok,
            json!({"event":{"end":{"exitCode":3,"exited":true,"status":"exit status 3"}}})
        );
        let killed = end_event(&ExitStatus {
            code: None,
            signal: Some(9),
            timed_out: false,
        });
        assert_eq!(killed["event"]["end"]["status"], "signal: killed");
        assert_eq!(killed["event"]["end"]["exitCode"], -1);
        assert_eq!(signal_number("SIGNAL_SIGTERM").unwrap(), 15);
        assert!(signal_number("SIGNAL_UNSPECIFIED").is_err());
    }
}
