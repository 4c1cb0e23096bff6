//! Starts a process for an exec request: argv or `/bin/sh -c`, environment,
//! working directory, user switch, pipes or a PTY, its own session.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use dwell_proto::{ErrorKind, ExecRequest, RemoteError, TtySize};

use crate::user::{self, Credentials};

/// `PATH` given to processes when the agent itself has none (as PID 1).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A started process and the agent's ends of its standard streams.
pub struct Spawned {
    pub pid: u32,
    pub argv: Vec<String>,
    /// Where stdin goes: a pipe, or a dup of the PTY master.
    pub stdin: Option<OwnedFd>,
    /// Stdout pipe, or the PTY master (merged output).
    pub stdout: OwnedFd,
    pub stderr: Option<OwnedFd>,
    /// A dup of the PTY master, kept for resizing.
    pub pty: Option<OwnedFd>,
}

fn cloexec(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens a PTY pair of the given size: (master, slave).
pub fn open_pty(size: TtySize) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut master = -1;
    let mut slave = -1;
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: out-pointers are valid; name and termios may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty returned two fresh descriptors that we now own.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    cloexec(master)?;
    cloexec(slave)?;
    Ok((m, s))
}

/// Sets the window size of a PTY.
pub fn resize_pty(fd: i32, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn spawn_error(argv0: &str, e: &io::Error) -> RemoteError {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) => " (is it installed in the sandbox and on PATH?)",
        Some(libc::EACCES) => " (is it executable by this user?)",
        _ => "",
    };
    let mut r = RemoteError::from_io(&format!("cannot start {argv0:?}"), e);
    r.message.push_str(hint);
    r
}

/// Starts the process described by `req`.
pub fn spawn(req: &ExecRequest) -> Result<Spawned, RemoteError> {
    let argv = req
        .command_line()
        .map_err(|m| RemoteError::new(ErrorKind::InvalidArgument, m))?;
    // Unset: the sandbox's defaults (the image's USER and WORKDIR).
    let user = req.user.clone().or_else(crate::defaults::user);
    let creds: Option<Credentials> = user.as_deref().map(user::resolve).transpose()?;

    let cwd = match (req.cwd.clone().or_else(crate::defaults::workdir), &creds) {
        (Some(c), _) => c,
        (None, Some(Credentials { home: Some(h), .. })) if std::path::Path::new(h).is_dir() => {
            h.clone()
        }
        _ => "/".to_string(),
    };
    match std::fs::metadata(&cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(RemoteError::new(
                ErrorKind::NotADirectory,
                format!("working directory {cwd:?} is not a directory"),
            ))
        }
        Err(e) => {
            return Err(RemoteError::from_io(
                &format!("working directory {cwd:?}"),
                &e,
            ))
        }
    }

    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).current_dir(&cwd);
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", DEFAULT_PATH);
    }
    if let Some(c) = &creds {
        if let Some(h) = &c.home {
            cmd.env("HOME", h);
        }
        if let Some(n) = &c.name {
            cmd.env("USER", n).env("LOGNAME", n);
        }
    }
    if req.tty.is_some() && std::env::var_os("TERM").is_none() {
        cmd.env("TERM", "xterm-256color");
    }
    cmd.envs(&req.env);

    let mut master = None;
    if let Some(size) = req.tty {
        let (m, s) = open_pty(size).map_err(|e| RemoteError::from_io("cannot open a pty", &e))?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| RemoteError::from_io("cannot duplicate the pty", &e))
        };
        cmd.stdin(Stdio::from(dup(&s)?))
            .stdout(Stdio::from(dup(&s)?))
            .stderr(Stdio::from(s));
        master = Some(m);
    } else {
        cmd.stdin(if req.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    }

    let tty = req.tty.is_some();
    let ids = creds.as_ref().map(|c| (c.uid, c.gid, c.groups.clone()));
    // SAFETY: the closure only makes async-signal-safe system calls and
    // touches memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some((uid, gid, groups)) = &ids {
                if libc::setgroups(groups.len(), groups.as_ptr()) < 0
                    || libc::setgid(*gid) < 0
                    || libc::setuid(*uid) < 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }

    let mut child = cmd.spawn().map_err(|e| spawn_error(&argv[0], &e))?;
    let pid = child.id();
    let (stdin, stdout, stderr, pty) = match master {
        Some(m) => {
            let dup = |fd: &OwnedFd| {
                fd.try_clone()
                    .map_err(|e| RemoteError::from_io("cannot duplicate the pty master", &e))
            };
            let input = dup(&m);
            let resize = dup(&m);
            match (input, resize) {
                (Ok(i), Ok(r)) => (Some(i), m, None, Some(r)),
                (Err(e), _) | (_, Err(e)) => {
                    // SAFETY: killing the process group we just created.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    return Err(e);
                }
            }
        }
        None => (
            child.stdin.take().map(OwnedFd::from),
            OwnedFd::from(child.stdout.take().expect("stdout is piped")),
            child.stderr.take().map(OwnedFd::from),
            None,
        ),
    };
    // `child` is dropped without waiting: the reaper collects its status.
    Ok(Spawned {
        pid,
        argv,
        stdin,
        stdout,
        stderr,
        pty,
    })
}
