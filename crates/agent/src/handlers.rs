//! Dispatches a request to its handler and implements the small unary ones
//! (health, process list, signal, stdin close, resize).

use std::sync::OnceLock;
use std::time::Instant;

use dwell_proto::{ErrorKind, Health, RemoteError, Request, PROTOCOL_VERSION};

use crate::conn::StreamCtx;
use crate::registry::{self, StdinMsg};
use crate::{as_user, files, process, pump, spawn};

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Records the agent's start time for `uptime_ms`.
pub fn mark_start() {
    STARTED.get_or_init(Instant::now);
}

/// Runs one request to completion.
pub async fn run(ctx: StreamCtx, req: Request) {
    crate::debug!("stream {}: {req:?}", ctx.id);
    match req {
        Request::Exec(r) => process::exec(ctx, r).await,
        Request::Attach { pid } => process::attach(ctx, pid).await,
        Request::ReadFile { path } => files::read(ctx, path).await,
        Request::WriteFile {
            path,
            options,
            user,
            xattrs,
        } => files::write(ctx, path, options, user, xattrs).await,
        Request::Health => ctx.end(Ok(health())).await,
        Request::Processes => ctx.end(Ok(registry::with(|r| r.list()))).await,
        Request::Signal { pid, signal } => ctx.end(send_signal(pid, signal)).await,
        Request::WriteStdin { pid } => process::write_stdin(ctx, pid).await,
        Request::CloseStdin { pid } => ctx.end(close_stdin(pid)).await,
        Request::Resize { pid, rows, cols } => ctx.end(resize(pid, rows, cols)).await,
        Request::ListDir {
            path,
            depth,
            xattrs,
        } => {
            ctx.end(files::blocking(move || files::list_dir(&path, depth, xattrs)).await)
                .await
        }
        Request::Stat { path, xattrs } => {
            ctx.end(files::blocking(move || files::stat(&path, xattrs.as_deref())).await)
                .await
        }
        Request::Mkdir {
            path,
            parents,
            user,
        } => {
            let op = move || files::mkdir(&path, parents);
            ctx.end(files::blocking(move || as_user::run(user, op)).await)
                .await
        }
        Request::Remove {
            path,
            recursive,
            user,
        } => {
            let op = move || files::remove(&path, recursive);
            ctx.end(files::blocking(move || as_user::run(user, op)).await)
                .await
        }
        Request::Chown { path, uid, gid } => {
            ctx.end(files::blocking(move || files::chown(&path, uid, gid)).await)
                .await
        }
        Request::Watch {
            path,
            recursive,
            flush,
        } => crate::watch::watch(ctx, path, recursive, flush).await,
        Request::Unlisten => {
            let can = crate::server::can_unlisten();
            let yes = can.is_ok();
            ctx.end(can).await;
            if yes {
                crate::server::unlisten_now();
            }
        }
        Request::Connect { host, port } => crate::tcp::connect(ctx, host, port).await,
        Request::ServiceSet { service } => ctx.end(crate::service::set(service).await).await,
        Request::ServiceStatus => ctx.end(Ok(crate::service::status())).await,
        Request::ServiceControl { action } => ctx.end(crate::service::control(action).await).await,
        Request::ServiceLogs {
            follow,
            tail,
            since_ms,
        } => crate::service::logs(ctx, follow, tail, since_ms).await,
        Request::Rename { from, to, user } => {
            let op = move || files::rename(&from, &to);
            ctx.end(files::blocking(move || as_user::run(user, op)).await)
                .await
        }
    }
}

fn pid_count() -> u32 {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .count() as u32
        })
        .unwrap_or(0)
}

fn health() -> Health {
    Health {
        protocol: PROTOCOL_VERSION,
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_ms: STARTED.get_or_init(Instant::now).elapsed().as_millis() as u64,
        pid_count: pid_count(),
        processes_running: registry::with(|r| r.running_count()) as u32,
        default_workdir: crate::defaults::workdir(),
        default_user: crate::defaults::user(),
        defaults_error: crate::defaults::problem(),
        features: vec![dwell_proto::FEATURE_XATTRS.to_string()],
    }
}

fn send_signal(pid: u32, signal: i32) -> Result<(), RemoteError> {
    if !(1..=64).contains(&signal) {
        return Err(RemoteError::new(
            ErrorKind::InvalidArgument,
            format!("signal {signal} is not a valid signal number (1-64)"),
        ));
    }
    if pid <= 1 {
        return Err(RemoteError::new(
            ErrorKind::InvalidArgument,
            format!("refusing to signal pid {pid}"),
        ));
    }
    if registry::with(|r| r.is_running(pid)) {
        pump::kill_group(pid, signal);
        return Ok(());
    }
    // SAFETY: plain kill(2).
    if unsafe { libc::kill(pid as i32, signal) } < 0 {
        let e = std::io::Error::last_os_error();
        return Err(RemoteError::from_io(
            &format!("signal {signal} to pid {pid}"),
            &e,
        ));
    }
    Ok(())
}

fn close_stdin(pid: u32) -> Result<(), RemoteError> {
    if let Some(tx) = registry::with(|r| r.stdin(pid))? {
        let _ = tx.send(StdinMsg::Close);
    }
    Ok(())
}

fn resize(pid: u32, rows: u16, cols: u16) -> Result<(), RemoteError> {
    use std::os::fd::AsRawFd;
    let pty = registry::with(|r| r.pty(pid))?;
    spawn::resize_pty(pty.as_raw_fd(), rows, cols)
        .map_err(|e| RemoteError::from_io(&format!("resize the tty of {pid}"), &e))
}

/// Resizes, for use by process streams.
pub fn resize_pid(pid: u32, rows: u16, cols: u16) -> Result<(), RemoteError> {
    resize(pid, rows, cols)
}

/// Signals, for use by process streams.
pub fn signal_pid(pid: u32, signal: i32) -> Result<(), RemoteError> {
    send_signal(pid, signal)
}
