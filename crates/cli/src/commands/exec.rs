//! `exec`, `shell`, `logs`, `ps`, `kill`: processes inside a sandbox.

use std::io::Write;
use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use dwell_contract::exec::{
    ClientMsg, ExecCall, ExecRequest, ExecResult, ExitReport, ProcessInfo, ServerMsg, SignalBody,
    TtySize, CH_STDERR, CH_STDIN, CH_STDOUT,
};
use dwell_contract::sandbox::Event;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

use super::key_values;
use crate::cli::{ExecArgs, KillArgs, LogsArgs, NameJson, ShellArgs};
use crate::client::{enc, Client};
use crate::output;

/// Exit code when dwell itself failed before the command ran (as docker).
const EXIT_DWELL_FAILED: i32 = 125;

fn parse_timeout(s: &str) -> Result<u64> {
    let d = humantime::parse_duration(s)
        .or_else(|_| s.parse::<u64>().map(std::time::Duration::from_secs))
        .with_context(|| {
            format!("--timeout {s:?} is not a duration; write it like 30s, 5m or 1h")
        })?;
    Ok(d.as_millis() as u64)
}

pub async fn exec(c: &Client, a: ExecArgs) -> Result<i32> {
    let req = ExecRequest {
        argv: a.command.clone(),
        shell: None,
        env: key_values(&a.env, "env")?,
        cwd: a.workdir.clone(),
        user: a.user.clone(),
        timeout_ms: a.timeout.as_deref().map(parse_timeout).transpose()?,
        stdin: a.interactive,
        tty: if a.tty { Some(term_size()) } else { None },
        background: a.detach,
        tag: a.tag.clone(),
    };
    if a.json {
        let r: ExecResult = c
            .post(
                &format!("/v1/sandboxes/{}/exec", enc(&a.sandbox)),
                &ExecCall {
                    request: req,
                    stdin_data: None,
                },
            )
            .await?;
        output::json(&r)?;
        return Ok(r.exit.shell_code());
    }
    if a.detach {
        return detach(c, &a.sandbox, req).await;
    }
    stream(
        c,
        &format!("/v1/sandboxes/{}/exec", enc(&a.sandbox)),
        Some(req),
        a.interactive,
        a.tty,
    )
    .await
}

pub async fn shell(c: &Client, a: ShellArgs) -> Result<i32> {
    let argv = if a.shell == "/bin/bash" {
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi".into(),
        ]
    } else {
        vec![a.shell.clone()]
    };
    let req = ExecRequest {
        argv,
        user: a.user,
        cwd: Some("/root".into()),
        stdin: true,
        tty: Some(term_size()),
        ..Default::default()
    };
    stream(
        c,
        &format!("/v1/sandboxes/{}/exec", enc(&a.sandbox)),
        Some(req),
        true,
        true,
    )
    .await
}

async fn detach(c: &Client, sandbox: &str, req: ExecRequest) -> Result<i32> {
    let mut ws = c
        .websocket(&format!("/v1/sandboxes/{}/exec", enc(sandbox)))
        .await?;
    ws.send(Message::Text(serde_json::to_string(&req)?.into()))
        .await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg? {
            match serde_json::from_str::<ServerMsg>(t.as_str())? {
                ServerMsg::Started { pid } => {
                    println!("{pid}");
                    let _ = ws.close(None).await;
                    return Ok(0);
                }
                ServerMsg::Error { message, .. } => {
                    eprintln!("dwell: {message}");
                    return Ok(EXIT_DWELL_FAILED);
                }
                ServerMsg::Exit(_) => return Ok(0),
            }
        }
    }
    bail!("the daemon closed the stream before the process started")
}

/// Puts the terminal in raw mode and restores it when dropped.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        match tcgetattr(stdin.as_fd()) {
            Ok(orig) => {
                let mut raw = orig.clone();
                cfmakeraw(&mut raw);
                let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
                RawMode(Some(orig))
            }
            Err(_) => RawMode(None),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                orig,
            );
        }
    }
}

/// This terminal's size (80x24 when not a terminal).
fn term_size() -> TtySize {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize struct we own.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if r == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
        TtySize {
            rows: ws.ws_row,
            cols: ws.ws_col,
        }
    } else {
        TtySize { rows: 24, cols: 80 }
    }
}

/// Run an exec (or attach, with `req` None) over a WebSocket, wiring this
/// terminal to it. Returns the exit code to exit with.
async fn stream(
    c: &Client,
    path: &str,
    req: Option<ExecRequest>,
    stdin: bool,
    tty: bool,
) -> Result<i32> {
    let ws = c.websocket(path).await?;
    let (mut tx, mut rx) = ws.split();
    if let Some(req) = req {
        tx.send(Message::Text(serde_json::to_string(&req)?.into()))
            .await?;
    }
    let _raw = if tty && unsafe { libc::isatty(0) } == 1 {
        Some(RawMode::enter())
    } else {
        None
    };
    let (ctl_tx, mut ctl_rx) = tokio::sync::mpsc::channel::<Message>(16);
    if stdin {
        let ctl_tx = ctl_tx.clone();
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let m = serde_json::to_string(&ClientMsg::StdinClose).unwrap_or_default();
                        let _ = ctl_tx.send(Message::Text(m.into())).await;
                        break;
                    }
                    Ok(n) => {
                        let mut v = Vec::with_capacity(n + 1);
                        v.push(CH_STDIN);
                        v.extend_from_slice(&buf[..n]);
                        if ctl_tx.send(Message::Binary(v.into())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    if tty {
        let ctl_tx = ctl_tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                let s = term_size();
                let m = serde_json::to_string(&ClientMsg::Resize {
                    rows: s.rows,
                    cols: s.cols,
                })
                .unwrap_or_default();
                if ctl_tx.send(Message::Text(m.into())).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(ctl_tx);
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let mut exit: Option<ExitReport> = None;
    // Not `ctl_rx.is_closed()`: that turns true once the stdin task has
    // sent its last message and dropped its sender, with the data and the
    // close still queued, which would never reach the process.
    let mut ctl_open = true;
    loop {
        tokio::select! {
            m = ctl_rx.recv(), if ctl_open => {
                match m {
                    Some(m) => if tx.send(m).await.is_err() { break; },
                    None => ctl_open = false,
                }
            }
            msg = rx.next() => {
                let Some(msg) = msg else { break };
                match msg? {
                    Message::Binary(b) if !b.is_empty() => {
                        let out: &mut dyn Write = if b[0] == CH_STDERR { &mut stderr } else { &mut stdout };
                        if b[0] == CH_STDOUT || b[0] == CH_STDERR {
                            out.write_all(&b[1..])?;
                            out.flush()?;
                        }
                    }
                    Message::Text(t) => match serde_json::from_str::<ServerMsg>(t.as_str())? {
                        ServerMsg::Started { .. } => {}
                        ServerMsg::Exit(e) => { exit = Some(e); break; }
                        ServerMsg::Error { message, .. } => {
                            drop(_raw);
                            eprintln!("dwell: {message}");
                            return Ok(EXIT_DWELL_FAILED);
                        }
                    },
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        }
    }
    drop(_raw);
    let Some(e) = exit else {
        eprintln!("dwell: the stream ended before the process did (daemon or sandbox gone?)");
        return Ok(EXIT_DWELL_FAILED);
    };
    if e.oom_killed {
        eprintln!("dwell: the process was killed by the kernel's OOM killer: the sandbox hit its memory limit (raise it with `dwell create --memory`)");
    } else if e.timed_out {
        eprintln!("dwell: the process was killed: its --timeout expired");
        return Ok(124);
    }
    Ok(e.shell_code())
}

pub async fn logs(c: &Client, a: LogsArgs) -> Result<i32> {
    if let Some(pid) = a.pid {
        let path = format!("/v1/sandboxes/{}/processes/{pid}/attach", enc(&a.sandbox));
        if a.follow {
            return stream(c, &path, None, false, false).await;
        }
        // Without --follow: the buffered output, then return.
        let ws = c.websocket(&path).await?;
        let (_tx, mut rx) = ws.split();
        let mut stdout = std::io::stdout();
        let mut stderr = std::io::stderr();
        loop {
            let next = tokio::time::timeout(std::time::Duration::from_millis(300), rx.next()).await;
            match next {
                Ok(Some(Ok(Message::Binary(b)))) if !b.is_empty() => {
                    if b[0] == CH_STDERR {
                        stderr.write_all(&b[1..])?
                    } else {
                        stdout.write_all(&b[1..])?
                    }
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    if let Ok(ServerMsg::Error { message, .. }) = serde_json::from_str(t.as_str()) {
                        eprintln!("dwell: {message}");
                        return Ok(1);
                    }
                    if let Ok(ServerMsg::Exit(_)) = serde_json::from_str(t.as_str()) {
                        break;
                    }
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        stdout.flush()?;
        return Ok(0);
    }
    if !a.events {
        let sb: dwell_contract::Sandbox =
            c.get(&format!("/v1/sandboxes/{}", enc(&a.sandbox))).await?;
        if sb.spec.service.is_some() {
            return service_logs(c, &a).await;
        }
    }
    if a.tail.is_some() || a.since.is_some() {
        bail!("--tail and --since apply to a service's output; this sandbox has no service (see `dwell logs --help`)");
    }
    let mut after = 0i64;
    loop {
        let events: Vec<Event> = c
            .get(&format!(
                "/v1/sandboxes/{}/events?after={after}",
                enc(&a.sandbox)
            ))
            .await?;
        for e in &events {
            if a.json {
                println!("{}", serde_json::to_string(e)?);
            } else {
                println!("{}  {:<7}  {}", output::time(e.at), e.kind, e.message);
            }
            after = e.seq;
        }
        if !a.follow {
            return Ok(0);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The service's output, raw as it came (stdout and stderr interleaved).
async fn service_logs(c: &Client, a: &LogsArgs) -> Result<i32> {
    use http_body_util::BodyExt;
    let mut q = format!("follow={}", a.follow);
    if let Some(n) = a.tail {
        q.push_str(&format!("&tail={n}"));
    }
    if let Some(s) = &a.since {
        let d = humantime::parse_duration(s.trim())
            .map_err(|_| anyhow::anyhow!("--since {s:?} is not a duration; use e.g. 10m, 1h"))?;
        let since = (dwell_store::now_ms() as u64).saturating_sub(d.as_millis() as u64);
        q.push_str(&format!("&since_ms={since}"));
    }
    let resp = c
        .send(
            hyper::Method::GET,
            &format!("/v1/sandboxes/{}/service/logs?{q}", enc(&a.sandbox)),
            "application/json",
            http_body_util::Empty::<bytes::Bytes>::new(),
        )
        .await?;
    let mut body = crate::client::check(resp).await?.into_body();
    let mut out = std::io::stdout();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the daemon broke off the service's output")?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data)?;
            out.flush()?;
        }
    }
    Ok(0)
}

pub async fn ps(c: &Client, a: NameJson) -> Result<i32> {
    let list: Vec<ProcessInfo> = c
        .get(&format!("/v1/sandboxes/{}/processes", enc(&a.sandbox)))
        .await?;
    if a.json {
        output::json(&list)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            let status = match (&p.exit, p.running) {
                (_, true) => "running".to_string(),
                (Some(e), _) => match (e.code, e.signal) {
                    (Some(c), _) => format!("exited {c}"),
                    (_, Some(s)) => format!("killed by signal {s}"),
                    _ => "exited".into(),
                },
                _ => "exited".into(),
            };
            vec![
                p.pid.to_string(),
                status,
                if p.background {
                    "background".into()
                } else {
                    "foreground".into()
                },
                p.tag.clone().unwrap_or_default(),
                output::ago(p.started_at_ms as i64),
                p.argv.join(" "),
            ]
        })
        .collect();
    output::table(
        &["PID", "STATUS", "KIND", "TAG", "STARTED", "COMMAND"],
        &rows,
    );
    Ok(0)
}

fn signal_number(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    Ok(match name.as_str() {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        _ => bail!("unknown signal {s:?}; use a number or one of HUP, INT, QUIT, KILL, USR1, USR2, TERM, CONT, STOP"),
    })
}

pub async fn kill(c: &Client, a: KillArgs) -> Result<i32> {
    let signal = signal_number(&a.signal)?;
    c.post::<serde_json::Value>(
        &format!(
            "/v1/sandboxes/{}/processes/{}/signal",
            enc(&a.sandbox),
            a.pid
        ),
        &SignalBody { signal },
    )
    .await?;
    Ok(0)
}
