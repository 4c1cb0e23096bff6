//! Exec and attach streams: start a process (or subscribe to one), forward
//! its output with flow control, feed its stdin, apply resize and signal
//! controls, and kill a foreground process whose stream goes away.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dwell_proto::frame::{self, Kind};
use dwell_proto::{Control, Event, ExecRequest, ProcessInfo, RemoteError};
use tokio::io::Interest;
use tokio::sync::mpsc;

use crate::conn::{ClientMsg, StreamCtx};
use crate::fdio::Fd;
use crate::handlers::{resize_pid, signal_pid};
use crate::registry::{self, Output, StdinMsg};
use crate::{pump, spawn};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn io_err(what: &str, e: std::io::Error) -> RemoteError {
    RemoteError::from_io(what, &e)
}

/// Feeds a process's stdin from its channel; grants client window after
/// each write (also for data discarded after stdin was closed or broke).
async fn stdin_writer(fd: Fd, tty: bool, mut rx: mpsc::UnboundedReceiver<StdinMsg>) {
    let mut fd = Some(fd);
    while let Some(m) = rx.recv().await {
        match m {
            StdinMsg::Data(b, credit) => {
                if let Some(f) = &fd {
                    if f.write_all(&b).await.is_err() {
                        fd = None;
                    }
                }
                if let Some(c) = credit {
                    c.release().await;
                }
            }
            StdinMsg::Close if tty => {
                // A tty has no end of file: send the EOF character (VEOF, ^D).
                if let Some(f) = &fd {
                    let _ = f.write_all(&[4]).await;
                }
            }
            StdinMsg::Close => fd = None,
        }
    }
}

/// Queues stdin data for `pid`, or discards it (granting the window back).
async fn feed_stdin(pid: u32, b: bytes::Bytes, credit: crate::conn::Credit) {
    match registry::with(|r| r.stdin(pid)).ok().flatten() {
        Some(tx) => {
            if let Err(mpsc::error::SendError(StdinMsg::Data(_, Some(c)))) =
                tx.send(StdinMsg::Data(b, Some(credit)))
            {
                c.release().await;
            }
        }
        // No stdin (not requested, or the process exited): discard.
        None => credit.release().await,
    }
}

/// Starts the process and its supervisor; returns its pid and live output.
pub(crate) fn start(req: &ExecRequest) -> Result<(u32, mpsc::Receiver<Output>), RemoteError> {
    let sp = spawn::spawn(req)?;
    let pid = sp.pid;
    let tty = req.tty.is_some();
    let setup = || -> Result<_, RemoteError> {
        let stdout =
            Fd::new(sp.stdout, Interest::READABLE).map_err(|e| io_err("register stdout", e))?;
        let stderr = sp
            .stderr
            .map(|f| Fd::new(f, Interest::READABLE))
            .transpose()
            .map_err(|e| io_err("register stderr", e))?;
        let stdin = sp
            .stdin
            .map(|f| Fd::new(f, Interest::WRITABLE))
            .transpose()
            .map_err(|e| io_err("register stdin", e))?;
        Ok((stdout, stderr, stdin, sp.pty.map(Arc::<OwnedFd>::new)))
    };
    let (stdout, stderr, stdin, pty) = match setup() {
        Ok(v) => v,
        Err(e) => {
            pump::kill_group(pid, libc::SIGKILL);
            return Err(e);
        }
    };
    let stdin_tx = stdin.map(|fd| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(stdin_writer(fd, tty, rx));
        tx
    });
    let info = ProcessInfo {
        pid,
        argv: sp.argv,
        tag: req.tag.clone(),
        background: req.background,
        tty,
        running: true,
        exit: None,
        started_at_ms: now_ms(),
    };
    // No await between spawn and insert: the reaper cannot run in between,
    // so it always finds the owner of this pid.
    let (exit_rx, live) = registry::with(|r| r.insert(info, stdin_tx, pty, true));
    let timeout = req.timeout_ms.map(Duration::from_millis);
    tokio::spawn(pump::supervise(pid, Some(stdout), stderr, exit_rx, timeout));
    Ok((pid, live.expect("subscribed at insert")))
}

/// Handles an exec request.
pub async fn exec(ctx: StreamCtx, req: ExecRequest) {
    let foreground = !req.background;
    match start(&req) {
        Err(e) => ctx.end::<()>(Err(e)).await,
        Ok((pid, live)) => {
            crate::debug!("stream {}: started {pid} ({:?})", ctx.id, req);
            if ctx.event(&Event::Started { pid }).await.is_err() {
                if foreground {
                    pump::kill_group(pid, libc::SIGKILL);
                }
                return;
            }
            follow(ctx, pid, live, foreground).await
        }
    }
}

/// Handles an attach request.
pub async fn attach(ctx: StreamCtx, pid: u32) {
    let a = match registry::with(|r| r.attach(pid)) {
        Ok(a) => a,
        Err(e) => return ctx.end::<()>(Err(e)).await,
    };
    if ctx.event(&attached_event(a.info)).await.is_err() {
        return;
    }
    for (stderr, b) in a.replay {
        let kind = if stderr { Kind::Stderr } else { Kind::Stdout };
        if ctx.data(kind, b).await.is_err() {
            return;
        }
    }
    match a.live {
        Err(status) => ctx.end(Ok(status)).await,
        Ok(live) => follow(ctx, pid, live, false).await,
    }
}

/// The `attached` event for `info`, with its argv and tag cut short (an
/// ellipsis marks the cut) when the whole would pass the protocol's event
/// limit: a command line may be up to a request frame long, an event not.
fn attached_event(info: ProcessInfo) -> Event {
    let mut budget = frame::MAX_EVENT_PAYLOAD / 2;
    let mut ev = Event::Attached {
        process: info.clone(),
    };
    while serde_json::to_vec(&ev).map_or(0, |p| p.len()) > frame::MAX_EVENT_PAYLOAD {
        let mut process = info.clone();
        process.argv = cut_strings(&info.argv, budget);
        process.tag = info.tag.as_ref().map(|t| cut_str(t, budget / 8));
        ev = Event::Attached { process };
        budget /= 2;
    }
    ev
}

/// The leading strings of `v`, at most `budget` bytes in all; the last one
/// kept is cut short with an ellipsis when it does not fit whole.
fn cut_strings(v: &[String], mut budget: usize) -> Vec<String> {
    let mut out = Vec::new();
    for s in v {
        if s.len() > budget {
            out.push(cut_str(s, budget));
            break;
        }
        budget -= s.len();
        out.push(s.clone());
    }
    out
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` added
/// when it was cut.
fn cut_str(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Forwards output until exit, and client input to the process.
async fn follow(
    mut ctx: StreamCtx,
    pid: u32,
    mut live: mpsc::Receiver<Output>,
    kill_on_cancel: bool,
) {
    let cancelled = loop {
        tokio::select! {
            o = live.recv() => match o {
                Some(Output::Stdout(b)) => if ctx.data(Kind::Stdout, b).await.is_err() { break true },
                Some(Output::Stderr(b)) => if ctx.data(Kind::Stderr, b).await.is_err() { break true },
                Some(Output::Exit(st)) => return ctx.end(Ok(st)).await,
                None => return ctx.end::<()>(Err(RemoteError::new(
                    dwell_proto::ErrorKind::Io,
                    format!("lost track of process {pid}"),
                ))).await,
            },
            m = ctx.inbound.recv() => match m {
                None => break true,
                Some(ClientMsg::Data(b)) => {
                    let credit = ctx.credit(b.len());
                    feed_stdin(pid, b, credit).await;
                }
                Some(ClientMsg::Eof) => {
                    if let Some(tx) = registry::with(|r| r.stdin(pid)).ok().flatten() {
                        let _ = tx.send(StdinMsg::Close);
                    }
                }
                Some(ClientMsg::Control(Control::Resize { rows, cols })) => {
                    if let Err(e) = resize_pid(pid, rows, cols) {
                        crate::debug!("resize of {pid} failed: {}", e.message);
                    }
                }
                Some(ClientMsg::Control(Control::Signal { signal })) => {
                    if let Err(e) = signal_pid(pid, signal) {
                        crate::debug!("signal to {pid} failed: {}", e.message);
                    }
                }
                Some(ClientMsg::Control(Control::Flush { .. })) => {} // for watch streams
            },
        }
    };
    if cancelled && kill_on_cancel && registry::with(|r| r.is_running(pid)) {
        crate::debug!(
            "stream {} went away: killing foreground process {pid}",
            ctx.id
        );
        pump::kill_group(pid, libc::SIGKILL);
    }
}

/// Handles a stdin-only stream to a process.
pub async fn write_stdin(mut ctx: StreamCtx, pid: u32) {
    match registry::with(|r| r.stdin(pid)) {
        Err(e) => return ctx.end::<()>(Err(e)).await,
        Ok(None) => {
            let e = RemoteError::new(
                dwell_proto::ErrorKind::InvalidArgument,
                format!("process {pid} has no open stdin (start it with stdin: true or a tty)"),
            );
            return ctx.end::<()>(Err(e)).await;
        }
        Ok(Some(_)) => {}
    }
    if ctx.event(&Event::Ready).await.is_err() {
        return;
    }
    let mut written = 0u64;
    loop {
        match ctx.inbound.recv().await {
            None => return,
            Some(ClientMsg::Data(b)) => {
                written += b.len() as u64;
                let credit = ctx.credit(b.len());
                feed_stdin(pid, b, credit).await;
            }
            Some(ClientMsg::Eof) => return ctx.end(Ok(written)).await,
            Some(ClientMsg::Control(_)) => {
                let e = RemoteError::new(
                    dwell_proto::ErrorKind::InvalidArgument,
                    "controls are not accepted on a write_stdin stream; use resize/signal",
                );
                return ctx.end::<()>(Err(e)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(argv: Vec<String>, tag: Option<String>) -> ProcessInfo {
        ProcessInfo {
            pid: 7,
            argv,
            tag,
            background: true,
            tty: false,
            running: true,
            exit: None,
            started_at_ms: 0,
        }
    }

    fn len(e: &Event) -> usize {
        serde_json::to_vec(e).unwrap().len()
    }

    #[test]
    fn a_small_attached_event_is_whole() {
        let i = info(vec!["sleep".into(), "9".into()], Some("t".into()));
        assert_eq!(attached_event(i.clone()), Event::Attached { process: i });
    }

    #[test]
    fn a_huge_command_line_is_cut_to_fit_the_event_limit() {
        // 900 KiB of arguments, some all control characters (6 bytes of
        // JSON each), and a 100 KiB tag: all must fit in one event.
        let mut argv = vec!["sh".to_string(), "-c".into(), "é".repeat(100_000)];
        argv.extend((0..40).map(|_| "\u{1}".repeat(20_000)));
        let e = attached_event(info(argv, Some("x".repeat(100_000))));
        assert!(len(&e) <= frame::MAX_EVENT_PAYLOAD, "{}", len(&e));
        let Event::Attached { process } = e else {
            panic!("not an attached event")
        };
        assert_eq!(process.argv[..2], ["sh", "-c"]);
        assert!(process.argv[2].ends_with('…'));
        assert!(process.tag.unwrap().ends_with('…'));
    }
}
