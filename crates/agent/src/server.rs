//! Where connections come from: a unix socket (`--listen PATH`) that accepts
//! connections for as long as the agent lives, or one connection on
//! stdin/stdout (`--stdio`).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use dwell_proto::{ErrorKind, RemoteError};

use tokio::io::Interest;
use tokio::net::UnixListener;

use crate::conn;
use crate::fdio::{Fd, FdReader, FdWriter};

/// Connections served at once; more are closed right after accept.
pub const MAX_CONNECTIONS: usize = 64;

/// Creates the socket: parent directory, stale socket removed, mode 0600.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ))
        }
        Err(_) => {}
    }
    // Bind under a temporary name and rename into place, so the path only
    // appears once the socket is private and listening (no connection is
    // refused between bind and listen).
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(&tmp);
    // SAFETY: restores the previous mask.
    unsafe { libc::umask(old) };
    let l = l?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(l)
}

/// Signal that makes the agent stop listening: it closes its socket and
/// every connection (background processes keep running), so that a
/// checkpoint (gVisor cannot save a bound host socket) can be taken.
pub const UNLISTEN: libc::c_int = libc::SIGUSR1;
/// Signal that makes it listen again on the same path.
pub const RELISTEN: libc::c_int = libc::SIGUSR2;
/// A file next to the socket whose appearance also makes it listen again:
/// the runtime creates it before restoring a checkpoint, so a restored
/// agent listens within a millisecond instead of waiting for a signal
/// (delivering one costs a `runsc kill`, tens of milliseconds).
pub const RESTORED_MARKER: &str = "restored";

/// Whether [`listen`] runs (and handles [`UNLISTEN`]): an agent on stdio
/// has no socket to close.
static LISTENING: AtomicBool = AtomicBool::new(false);

/// Whether an `Unlisten` request can be honoured (the agent listens on a
/// socket); the error says why not.
pub fn can_unlisten() -> Result<(), RemoteError> {
    if LISTENING.load(Ordering::Relaxed) {
        Ok(())
    } else {
        Err(RemoteError::new(
            ErrorKind::InvalidArgument,
            "this agent serves one connection on stdio (--stdio) or a socket passed in \
             (--listen-fd): it has no socket path to stop listening on and bind again",
        ))
    }
}

/// Stop listening (after [`can_unlisten`] said yes and the request was
/// answered): the agent sends itself [`UNLISTEN`], so a request takes the
/// very path the signal takes. (Waking the listener directly instead, with
/// a `Notify`, made one restore in a few under gVisor come back with a
/// listener whose connections were never accepted; the signal path never
/// did, in 140 rounds.)
pub fn unlisten_now() {
    // SAFETY: kill(2) on our own pid with a signal `listen` handles.
    unsafe { libc::kill(libc::getpid(), UNLISTEN) };
}

/// Forget unlisten signals that arrived while the agent did not listen: a
/// second one for the same checkpoint (a request, then the runtime's
/// fallback signal) must not take down the socket of the restored sandbox.
async fn forget_unlisten_signals(unlisten: &mut tokio::signal::unix::Signal) {
    loop {
        tokio::select! {
            biased;
            _ = unlisten.recv() => {}
            _ = std::future::ready(()) => break,
        }
    }
}

/// Resolves once `marker` exists (polled while the agent does not listen:
/// between an unlisten and the checkpoint that stops the sandbox).
async fn appears(marker: &Path) {
    while !marker.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Accepts connections on `l` (already bound at `path`) for the agent's
/// life; [`UNLISTEN`] (or an `Unlisten` request) and [`RELISTEN`] take the
/// socket down and up again.
pub async fn listen(mut l: UnixListener, path: &Path) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut unlisten = signal(SignalKind::from_raw(UNLISTEN))?;
    let mut relisten = signal(SignalKind::from_raw(RELISTEN))?;
    LISTENING.store(true, Ordering::Relaxed);
    loop {
        accept_until(&l, unlisten.recv()).await;
        // Unlisten: no socket, no connection; processes started in the
        // background keep running (foreground ones end with their stream).
        drop(l);
        let _ = std::fs::remove_file(path);
        crate::memory::trim();
        crate::debug!("unlistened (SIGUSR1 or a request); SIGUSR2 listens again");
        // A late SIGUSR2 of an earlier round must not end this one.
        loop {
            tokio::select! {
                biased;
                _ = relisten.recv() => {}
                _ = std::future::ready(()) => break,
            }
        }
        let marker = path.with_file_name(RESTORED_MARKER);
        loop {
            tokio::select! {
                _ = relisten.recv() => {}
                _ = appears(&marker) => {}
            }
            rekey_from(&marker);
            match bind(path) {
                Ok(new) => {
                    l = new;
                    forget_unlisten_signals(&mut unlisten).await;
                    break;
                }
                Err(e) => {
                    crate::error!("SIGUSR2: cannot listen on {}: {e}", path.display());
                }
            }
        }
        crate::debug!("SIGUSR2: listening again on {}", path.display());
    }
}

/// Serves a socket the runtime bound outside the sandbox and passed as
/// descriptor `fd` (`--listen-fd`): the agent calls listen(2) itself, so the
/// daemon's SO_PEERCRED names it. There is no path to take down and bind
/// again, so [`UNLISTEN`] and [`RELISTEN`] are ignored and `Unlisten`
/// requests refused.
pub async fn listen_fd(fd: i32) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let l = adopt_listener(fd)?;
    // Handled (and so ignored): their default action would end the agent.
    let _unlisten = signal(SignalKind::from_raw(UNLISTEN))?;
    let _relisten = signal(SignalKind::from_raw(RELISTEN))?;
    accept_until(&l, std::future::pending::<()>()).await;
    Ok(())
}

/// A listening tokio socket from the bound unix socket `fd`.
fn adopt_listener(fd: i32) -> io::Result<UnixListener> {
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--listen-fd {fd}: descriptors 0-2 are stdio; pass the socket as 3 or above"),
        ));
    }
    // SAFETY: fcntl(F_GETFD) only checks that the descriptor is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "--listen-fd {fd}: descriptor {fd} is not open ({})",
                io::Error::last_os_error()
            ),
        ));
    }
    // SAFETY: the descriptor is open and handed to the agent for its life;
    // from here on it is owned by the listener.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let md = std::fs::File::from(owned.try_clone()?).metadata()?;
    if !md.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--listen-fd {fd}: descriptor {fd} is not a socket"),
        ));
    }
    // SAFETY: plain syscalls on a socket we own.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        if libc::listen(fd, 128) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let std_l = std::os::unix::net::UnixListener::from(owned);
    std_l.set_nonblocking(true)?;
    LISTENING.store(false, Ordering::Relaxed);
    UnixListener::from_std(std_l)
}

/// Accepts connections on `l` until `stop` resolves, then closes every
/// connection and waits for them to end.
async fn accept_until(l: &UnixListener, stop: impl std::future::Future) {
    tokio::pin!(stop);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {
                crate::memory::trim();
            }
            r = l.accept() => {
                let s = match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        crate::error!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                n += 1;
                if conns.len() >= MAX_CONNECTIONS {
                    crate::error!("refusing connection {n}: {MAX_CONNECTIONS} connections already open");
                    continue;
                }
                let tag = format!("#{n}");
                let mut stop = stop_rx.clone();
                conns.spawn(async move {
                    let (r, w) = s.into_split();
                    let stopped = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    conn::serve_until(r, w, tag, stopped).await;
                });
            }
        }
    }
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
}

/// A restore hands the restored agent the key of the sandbox it now is (a
/// warm copy is a new sandbox with a key of its own) in the marker file.
/// Read without following a link, at most a few bytes; an empty marker
/// keeps the key.
fn rekey_from(marker: &Path) {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(marker);
    let mut text = String::new();
    match f {
        Ok(f) => {
            if f.metadata().map(|m| m.is_file()).unwrap_or(false) {
                let _ = f.take(256).read_to_string(&mut text);
            }
        }
        Err(_) => return,
    }
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    match dwell_proto::AgentKey::from_hex(text) {
        Ok(k) => {
            crate::key::set(k);
            crate::debug!("restored: took the sandbox's key from {}", marker.display());
        }
        Err(e) => {
            crate::error!("restored: ignoring the key in {}: {e}", marker.display());
        }
    }
}

/// Serves one connection on fds 0 and 1.
pub async fn stdio() -> io::Result<()> {
    // SAFETY: fds 0 and 1 are ours for the agent's lifetime; the duplicates
    // are owned by the reader and writer.
    let (r, w) = unsafe {
        let r = libc::dup(0);
        let w = libc::dup(1);
        if r < 0 || w < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::fcntl(r, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(w, libc::F_SETFD, libc::FD_CLOEXEC);
        (OwnedFd::from_raw_fd(r), OwnedFd::from_raw_fd(w))
    };
    let r = FdReader(Fd::new(r, Interest::READABLE)?);
    let w = FdWriter(Fd::new(w, Interest::WRITABLE)?);
    conn::serve(r, w, "stdio".into()).await;
    Ok(())
}
