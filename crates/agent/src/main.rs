//! dwell-agent: PID 1 of every dwell sandbox.
//!
//! `dwell-agent --listen /run/dwell/agent.sock` serves the dwell agent
//! protocol (see crates/proto/PROTOCOL.md) on a unix socket;
//! `dwell-agent --stdio` serves one connection on stdin/stdout. It reaps all
//! zombies, and shuts down gracefully on SIGTERM/SIGINT.
//! `DWELL_AGENT_LOG=debug` logs to stderr. `DWELL_AGENT_KEY` (64 hex
//! digits) is the sandbox's key: connections must prove it in the handshake.

mod as_user;
mod conn;
mod defaults;
mod fdio;
mod files;
mod handlers;
mod hosts;
mod key;
mod log;
mod memory;
mod process;
mod pump;
mod reaper;
mod registry;
mod resolv;
mod ring;
mod server;
mod service;
mod shutdown;
mod small_file;
mod spawn;
mod tcp;
mod user;
mod watch;
mod xattr;

use std::path::PathBuf;

use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: dwell-agent --listen <socket path> | --listen-fd <fd> | --stdio
  --listen PATH  serve on a unix socket (parent directory created, mode 0600)
  --listen-fd N  serve on the bound unix socket passed as descriptor N (>= 3)
  --stdio        serve one connection on stdin/stdout
  --idle [PATH]  the init of a pooled gVisor sandbox's placeholder container: with PATH, first
                 take one hostname on a unix socket there and set it; then do nothing until killed
environment: DWELL_AGENT_LOG=debug logs to stderr;
  DWELL_AGENT_KEY=<64 hex digits> requires clients to prove this key (removed from the
  environment at start)";

enum Mode {
    Listen(PathBuf),
    ListenFd(i32),
    Stdio,
}

fn parse_args() -> Result<Mode, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--listen", p] => Ok(Mode::Listen(PathBuf::from(p))),
        ["--listen-fd", n] => n
            .parse()
            .map(Mode::ListenFd)
            .map_err(|_| format!("--listen-fd takes a descriptor number, not {n:?}")),
        ["--stdio"] => Ok(Mode::Stdio),
        ["--help"] | ["-h"] => {
            println!("{USAGE}");
            std::process::exit(0)
        }
        _ => Err(format!("unrecognised arguments {args:?}\n{USAGE}")),
    }
}

fn main() {
    // The placeholder init of a warm-pool gVisor sandbox (see the runtime's
    // gvisor::pool): it must touch nothing, not even /etc, and cost no CPU.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--idle") && args.len() <= 2 {
        idle(args.get(1).map(std::path::Path::new))
    }
    log::init();
    if let Err(e) = key::init_from_env() {
        eprintln!("dwell-agent: {e}");
        std::process::exit(2);
    }
    if std::process::id() == 1 {
        resolv::init_from_env();
        hosts::init();
    }
    defaults::init_from_env();
    memory::init();
    let mode = match parse_args() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("dwell-agent: {e}");
            std::process::exit(2);
        }
    };
    handlers::mark_start();
    if std::process::id() == 1 {
        // Sandbox processes get the usual 022, whatever mask the daemon
        // (077, to keep host files private) handed down.
        // SAFETY: umask only changes this process's file creation mask.
        unsafe { libc::umask(0o022) };
    } else {
        // Outside PID 1, still adopt orphaned descendants so they get reaped.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(4)
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dwell-agent: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async move {
        // Register SIGCHLD before any process is spawned.
        let sigchld = match signal(SignalKind::child()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("dwell-agent: cannot handle SIGCHLD: {e}");
                return 1;
            }
        };
        tokio::spawn(reaper::run(sigchld));
        match mode {
            Mode::Listen(path) => {
                let l = match server::bind(&path) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("dwell-agent: cannot listen on {}: {e}", path.display());
                        return 1;
                    }
                };
                debug!("listening on {}", path.display());
                let p = path.clone();
                tokio::spawn(shutdown::run(move || {
                    let _ = std::fs::remove_file(&p);
                }));
                if let Err(e) = server::listen(l, &path).await {
                    eprintln!("dwell-agent: cannot serve on {}: {e}", path.display());
                    return 1;
                }
                0
            }
            Mode::ListenFd(fd) => {
                tokio::spawn(shutdown::run(|| {}));
                if let Err(e) = server::listen_fd(fd).await {
                    eprintln!("dwell-agent: cannot serve on descriptor {fd}: {e}");
                    return 1;
                }
                0
            }
            Mode::Stdio => {
                tokio::spawn(shutdown::run(|| {}));
                if let Err(e) = server::stdio().await {
                    eprintln!("dwell-agent: cannot serve on stdin/stdout: {e}");
                    return 1;
                }
                if std::process::id() == 1 {
                    // PID 1 must not exit: that would kill the sandbox.
                    debug!("stdio connection ended; staying alive as PID 1");
                    std::future::pending::<()>().await;
                }
                0
            }
        }
    });
    std::process::exit(code);
}

/// `--idle [PATH]`: with PATH, serve one connection on a unix socket
/// there: read a hostname (up to 64 bytes), set it (the sandbox's
/// containers share this UTS namespace), answer `ok` (or the error). Then
/// block in pause(2) forever.
fn idle(ctl: Option<&std::path::Path>) -> ! {
    if let Some(path) = ctl {
        if let Err(e) = set_hostname_once(path) {
            eprintln!("dwell-agent --idle: {e}");
        }
    }
    loop {
        // SAFETY: pause only blocks until a signal arrives.
        unsafe { libc::pause() };
    }
}

fn set_hostname_once(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    let (mut conn, _) = listener.accept()?;
    drop(listener);
    let _ = std::fs::remove_file(path);
    let mut buf = [0u8; 65];
    let mut n = 0;
    while n < buf.len() {
        match conn.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
        if buf[..n].contains(&b'\n') {
            break;
        }
    }
    let name = buf[..n].strip_suffix(b"\n").unwrap_or(&buf[..n]);
    let reply = if name.is_empty() || name.len() > 64 {
        "bad hostname\n".to_string()
    } else {
        // SAFETY: name points to name.len() readable bytes.
        let r = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
        if r == 0 {
            "ok\n".to_string()
        } else {
            format!("sethostname: {}\n", std::io::Error::last_os_error())
        }
    };
    conn.write_all(reply.as_bytes())
}
