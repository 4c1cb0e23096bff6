//! The boot child: the process that becomes the sandbox's PID 1. It builds
//! the root filesystem, waits for the boot parent's go, drops privileges and
//! execs the agent. Any failure is written to the error pipe, which the
//! parent reads; a successful exec closes the pipe (close-on-exec).

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::{caps, layout, mounts, network, seccomp, sys, userns};
use crate::SandboxConfig;

/// Run the child side; never returns.
pub fn run(
    config: &SandboxConfig,
    console: File,
    mut go: File,
    mut err: File,
    userns: Option<UnixStream>,
) -> ! {
    let msg = match prepare_and_exec(config, console, &mut go, userns.as_ref()) {
        Ok(never) => match never {},
        Err(m) => m,
    };
    let _ = err.write_all(msg.as_bytes());
    // SAFETY: leaving the child without running the parent's destructors.
    unsafe { libc::_exit(1) }
}

/// Open the console log (by the boot parent, before the clone: in a user
/// namespace the child can no longer reach the data dir).
pub fn open_console(config: &SandboxConfig) -> Result<File, String> {
    let log_path = layout::state_file(config, layout::CONSOLE_LOG);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))
}

fn redirect_stdio(log: File) -> Result<(), String> {
    let null = File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;
    // SAFETY: dup2 onto the standard descriptors with valid sources.
    unsafe {
        if libc::dup2(null.as_raw_fd(), 0) < 0
            || libc::dup2(log.as_raw_fd(), 1) < 0
            || libc::dup2(log.as_raw_fd(), 2) < 0
        {
            return Err(format!(
                "redirecting stdio: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn prepare_and_exec(
    config: &SandboxConfig,
    console: File,
    go: &mut File,
    userns: Option<&UnixStream>,
) -> Result<std::convert::Infallible, String> {
    // Now that this process sits in the sandbox's cgroups, a new cgroup
    // namespace makes them its root (clone3 would have rooted it at the
    // boot process's cgroup instead).
    sys::unshare(libc::CLONE_NEWCGROUP)
        .map_err(|e| format!("creating the cgroup namespace: {e}"))?;
    redirect_stdio(console)?;
    match userns {
        // In its own user namespace: mounts come from the boot parent.
        Some(sock) => userns::build_root(config, sock)?,
        None => mounts::build_root(config)?,
    }
    sys::sethostname(&config.hostname).map_err(|e| format!("setting the hostname: {e}"))?;
    network::loopback_up()?;

    // The parent sets up the host side (pid file, network) meanwhile.
    let mut byte = [0u8; 1];
    match go.read(&mut byte) {
        Ok(1) => {}
        _ => return Err("the boot process went away before the sandbox was ready".into()),
    }

    let argv: Vec<CString> = [
        layout::SANDBOX_AGENT,
        "--listen",
        layout::SANDBOX_AGENT_SOCKET,
    ]
    .iter()
    .map(|s| CString::new(*s).expect("static strings"))
    .collect();
    let mut env: Vec<CString> = Vec::new();
    if !config.env.contains_key("PATH") {
        env.push(
            CString::new("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
                .expect("static"),
        );
    }
    for (k, v) in &config.env {
        env.push(
            CString::new(format!("{k}={v}"))
                .map_err(|_| format!("environment variable {k} contains a NUL byte"))?,
        );
    }
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|s| s.as_ptr()).collect();
    env_p.push(std::ptr::null());

    sys::cloexec_from(3).map_err(|e| format!("marking descriptors close-on-exec: {e}"))?;
    caps::drop_to_default()?;
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(|e| format!("setting no_new_privs: {e}"))?;
    seccomp::install()?;
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings.
    unsafe { libc::execve(argv_p[0], argv_p.as_ptr(), env_p.as_ptr()) };
    Err(format!(
        "executing the agent {}: {}",
        layout::SANDBOX_AGENT,
        std::io::Error::last_os_error()
    ))
}
