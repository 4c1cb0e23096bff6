//! A tiny stand-in for `dwell-agent`, used by the namespace runtime's
//! integration tests as the sandbox's PID 1.
//!
//! `dwell-ns-testinit --listen <socket>` (or `--listen-fd <fd>`, a bound
//! socket passed by the runtime, as the real agent gets it): accept connections; each one
//! sends a single line, which runs as `/bin/sh -c <line>` with stdout and
//! stderr on the connection, followed by a final `__exit=<code>` line
//! (128 + signal for a killed command). Orphans are reaped after each
//! command.
//!
//! `dwell-ns-testinit --connect <ip:port>`: try a TCP connection (2 s
//! timeout) and print `connected <local addr>`, `refused` or `timeout`.
//!
//! `dwell-ns-testinit --probe`: try system calls a sandbox must not be able
//! to make and print `name=<errno>` for each (0 means it succeeded).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

fn errno_of(ret: libc::c_long) -> i32 {
    if ret < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    } else {
        0
    }
}

fn probe() {
    let empty = c"";
    let mnt = c"/mnt";
    let tmpfs = c"tmpfs";
    // SAFETY: each call gets valid (possibly null) pointers; all of them
    // are expected to fail.
    let results = unsafe {
        [
            (
                "init_module",
                errno_of(libc::syscall(
                    libc::SYS_init_module,
                    std::ptr::null::<u8>(),
                    0,
                    empty.as_ptr(),
                )),
            ),
            (
                "finit_module",
                errno_of(libc::syscall(libc::SYS_finit_module, -1, empty.as_ptr(), 0)),
            ),
            (
                "mount",
                errno_of(libc::mount(
                    tmpfs.as_ptr(),
                    mnt.as_ptr(),
                    tmpfs.as_ptr(),
                    0,
                    std::ptr::null(),
                ) as libc::c_long),
            ),
            (
                "unshare_user",
                errno_of(libc::unshare(libc::CLONE_NEWUSER) as libc::c_long),
            ),
            (
                "unshare_net",
                errno_of(libc::unshare(libc::CLONE_NEWNET) as libc::c_long),
            ),
            (
                "keyctl",
                errno_of(libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0)),
            ),
            (
                "bpf",
                errno_of(libc::syscall(libc::SYS_bpf, 0, std::ptr::null::<u8>(), 0)),
            ),
            (
                "clone3",
                errno_of(libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0)),
            ),
            (
                "personality_rie",
                errno_of(libc::personality(0x0040_0000) as libc::c_long),
            ),
            (
                "x32_getpid",
                errno_of(libc::syscall(0x4000_0000 | libc::SYS_getpid)),
            ),
        ]
    };
    for (name, errno) in results {
        println!("{name}={errno}");
    }
}

fn connect(addr: &str) {
    let addr: std::net::SocketAddr = addr.parse().expect("ip:port");
    match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)) {
        Ok(s) => println!("connected {}", s.local_addr().expect("local addr")),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => println!("refused"),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => println!("timeout"),
        Err(e) => println!("error {e}"),
    }
}

fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out pointer.
        if unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } <= 0 {
            break;
        }
    }
}

fn serve(path: &str) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    serve_on(UnixListener::bind(path)?)
}

fn serve_fd(fd: &str) -> std::io::Result<()> {
    use std::os::fd::FromRawFd;
    let fd: i32 = fd
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad descriptor {fd:?}")))?;
    // SAFETY: the runtime passed this bound socket to us for our life.
    if unsafe { libc::listen(fd, 64) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    serve_on(unsafe { UnixListener::from_raw_fd(fd) })
}

fn serve_on(listener: UnixListener) -> std::io::Result<()> {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() || line.trim().is_empty() {
            continue;
        }
        // Close-on-exec duplicates: only fds 1 and 2 of the command may
        // hold the connection, or a background job would keep it open.
        let out = conn.try_clone()?;
        let err = conn.try_clone()?;
        let status = Command::new("/bin/sh")
            .arg("-c")
            .arg(line.trim_end())
            .stdin(Stdio::null())
            .stdout(OwnedFd::from(out))
            .stderr(OwnedFd::from(err))
            .status();
        let code = match status {
            Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
            Err(e) => {
                let _ = writeln!(conn, "spawn failed: {e}");
                127
            }
        };
        let _ = write!(conn, "\n__exit={code}\n");
        drop(conn);
        reap();
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--listen", path] => {
            if let Err(e) = serve(path) {
                eprintln!("dwell-ns-testinit: {e}");
                std::process::exit(1);
            }
        }
        ["--listen-fd", fd] => {
            if let Err(e) = serve_fd(fd) {
                eprintln!("dwell-ns-testinit: {e}");
                std::process::exit(1);
            }
        }
        ["--probe"] => probe(),
        ["--connect", addr] => connect(addr),
        _ => {
            eprintln!("usage: dwell-ns-testinit --listen <socket> | --probe");
            std::process::exit(2);
        }
    }
}
