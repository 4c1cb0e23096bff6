//! The supervisor task of one process: reads its output into the ring
//! buffer and to subscribers, enforces its timeout, waits for its exit status
//! from the reaper, drains what is left and announces the exit.

use std::time::Duration;

use bytes::Bytes;
use dwell_proto::ExitStatus;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::fdio::Fd;
use crate::registry::{self, Output};

const READ_BUF: usize = 16 * 1024;

/// Kills a process group (and the process itself, in case it left the group).
pub fn kill_group(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) calls.
    unsafe {
        libc::kill(-(pid as i32), sig);
        libc::kill(pid as i32, sig);
    }
}

fn decode(status: i32, timed_out: bool) -> ExitStatus {
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    ExitStatus {
        code,
        signal,
        timed_out,
    }
}

async fn deliver(pid: u32, stderr: bool, b: Bytes) {
    let subs = registry::with(|r| r.record_output(pid, stderr, &b));
    for s in subs {
        let msg = if stderr {
            Output::Stderr(b.clone())
        } else {
            Output::Stdout(b.clone())
        };
        let _ = s.send(msg).await;
    }
}

async fn read_some(fd: &Option<Fd>, buf: &mut [u8]) -> std::io::Result<usize> {
    match fd {
        Some(f) => f.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Drains whatever is readable right now from `fd`; false once it hit end of file.
async fn drain(pid: u32, stderr: bool, fd: &Option<Fd>, buf: &mut [u8]) -> bool {
    let Some(f) = fd else { return false };
    loop {
        match f.read_now(buf) {
            Ok(Some(0)) | Err(_) => return false,
            Ok(Some(n)) => deliver(pid, stderr, Bytes::copy_from_slice(&buf[..n])).await,
            Ok(None) => return true,
        }
    }
}

/// Keeps reading a pipe that descendants of an exited process still hold,
/// into the ring buffer only, so that they do not get SIGPIPE.
async fn linger(pid: u32, stderr: bool, fd: Fd) {
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = fd.read(&mut buf).await {
        if n == 0 {
            return;
        }
        let b = Bytes::copy_from_slice(&buf[..n]);
        registry::with(|r| r.record_output(pid, stderr, &b));
    }
}

/// Supervises `pid` until it exits.
pub async fn supervise(
    pid: u32,
    mut stdout: Option<Fd>,
    mut stderr: Option<Fd>,
    mut exit_rx: oneshot::Receiver<i32>,
    timeout: Option<Duration>,
) {
    let mut out_buf = vec![0u8; READ_BUF];
    let mut err_buf = vec![0u8; if stderr.is_some() { READ_BUF } else { 0 }];
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    let status = loop {
        tokio::select! {
            r = read_some(&stdout, &mut out_buf), if stdout.is_some() => match r {
                Ok(n) if n > 0 => deliver(pid, false, Bytes::copy_from_slice(&out_buf[..n])).await,
                _ => stdout = None,
            },
            r = read_some(&stderr, &mut err_buf), if stderr.is_some() => match r {
                Ok(n) if n > 0 => deliver(pid, true, Bytes::copy_from_slice(&err_buf[..n])).await,
                _ => stderr = None,
            },
            st = &mut exit_rx => break st.unwrap_or(0),
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && !timed_out => {
                crate::debug!("process {pid} timed out; killing its group");
                timed_out = true;
                kill_group(pid, libc::SIGKILL);
            }
        }
    };
    // Everything the process wrote before exiting is in the pipe now; output
    // of descendants that keep the pipe open afterwards is not waited for.
    let out_open = drain(pid, false, &stdout, &mut out_buf).await;
    let err_open = drain(pid, true, &stderr, &mut err_buf).await;
    let st = decode(status, timed_out);
    crate::debug!("process {pid} exited: {st:?}");
    for s in registry::with(|r| r.finish(pid, st)) {
        let _ = s.send(Output::Exit(st)).await;
    }
    drop((out_buf, err_buf));
    for (open, is_err, fd) in [(out_open, false, stdout), (err_open, true, stderr)] {
        if let (true, Some(fd)) = (open, fd) {
            tokio::spawn(linger(pid, is_err, fd));
        }
    }
    if registry::with(|r| r.running_count()) == 0 {
        crate::memory::trim();
    }
}
