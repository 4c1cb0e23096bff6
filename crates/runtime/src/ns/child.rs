//! The boot child: the process that becomes the sandbox's PID 1. It builds
//! the root filesystem, waits for the boot parent's go, drops privileges and
//! execs the agent. Any failure is written to the error pipe, which the
//! parent reads; a successful exec closes the pipe (close-on-exec).
//!
//! no_new_privs is set only for a sandbox without a user namespace (its
//! root is host root) or whose grants ask for it; in a user namespace
//! set-user-id binaries work and give sandbox root, bounded by the reduced
//! capability bounding set.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use super::{caps, layout, mounts, seccomp, userns};
use crate::host::{network, sys};
use crate::SandboxConfig;

/// Run the child side; never returns. `listen` is the agent's bound
/// socket, passed to it as descriptor [`layout::AGENT_LISTEN_FD`];
/// `userns` the socket the boot parent sends the sandbox's mounts on
/// (user namespaces on).
pub fn run(
    config: &SandboxConfig,
    console: File,
    go: File,
    err: File,
    listen: OwnedFd,
    userns: Option<UnixStream>,
) -> ! {
    // Out of the way of descriptor 3, which the agent's socket takes.
    let moved = (
        above(go.into()),
        above(err.into()),
        above(listen),
        userns.map(|u| above(u.into())).transpose(),
    );
    let (mut go, mut err, listen, userns) = match moved {
        (Ok(g), Ok(e), Ok(l), Ok(u)) => (File::from(g), File::from(e), l, u.map(UnixStream::from)),
        // SAFETY: leaving the child (out of descriptors) without running
        // the parent's destructors; the parent sees PID 1 gone.
        _ => unsafe { libc::_exit(1) },
    };
    let msg = match prepare_and_exec(config, console, &mut go, &listen, userns.as_ref()) {
        Ok(never) => match never {},
        Err(m) => m,
    };
    let _ = err.write_all(msg.as_bytes());
    // SAFETY: leaving the child without running the parent's destructors.
    unsafe { libc::_exit(1) }
}

/// A close-on-exec duplicate of `fd` numbered 10 or above.
fn above(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor; the result is owned.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Standard input from /dev/null; standard output and error to the console
/// log (opened by the boot parent: in a user namespace the child cannot
/// reach it by path).
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

/// RLIMIT_CORE 1 (soft and hard) unless the sandbox was granted core
/// dumps. 1, not 0: the kernel ignores RLIMIT_CORE for a piped
/// `kernel.core_pattern` except for the value 1, which aborts a piped dump,
/// and a file dump needs at least a page, so 1 stops both (core(5)). The
/// seccomp filter refuses any later change: lowering the soft limit to 0,
/// which needs no privilege, would pipe dumps again.
fn limit_core_dumps(config: &SandboxConfig) -> Result<(), String> {
    if config.grants.core_dumps {
        // The runtime checked the host's core_pattern before booting.
        return Ok(());
    }
    let one = libc::rlimit {
        rlim_cur: 1,
        rlim_max: 1,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &one) } < 0 {
        return Err(format!(
            "setting RLIMIT_CORE to 1: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn prepare_and_exec(
    config: &SandboxConfig,
    console: File,
    go: &mut File,
    listen: &OwnedFd,
    userns: Option<&UnixStream>,
) -> Result<std::convert::Infallible, String> {
    // Now that this process sits in the sandbox's cgroups, a new cgroup
    // namespace makes them its root (clone3 would have rooted it at the
    // boot process's cgroup instead).
    sys::unshare(libc::CLONE_NEWCGROUP)
        .map_err(|e| format!("creating the cgroup namespace: {e}"))?;
    redirect_stdio(console)?;
    if userns.is_none() {
        // The rootfs mount point is made under the daemon's 077 umask (in
        // a user namespace the boot parent makes it).
        let rootfs = layout::state_file(config, layout::ROOTFS_DIR);
        std::fs::create_dir_all(&rootfs)
            .map_err(|e| format!("creating {}: {e}", rootfs.display()))?;
    }
    // Inside the sandbox directories and files are made with the usual 022.
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0o022) };
    match userns {
        // In its own user namespace: mounts come from the boot parent.
        Some(sock) => userns::build_root(config, sock)?,
        None => mounts::build_root(config)?,
    }
    sys::sethostname(&config.hostname).map_err(|e| format!("setting the hostname: {e}"))?;
    network::loopback_up()?;

    // The parent sets up the host side (pid file, network) meanwhile.
    // "g", then the DNS resolver's address for a NAT sandbox; the parent
    // closes its end after writing.
    let mut msg = Vec::new();
    let _ = Read::by_ref(go).take(64).read_to_end(&mut msg);
    let dns = match msg.split_first() {
        Some((b'g', rest)) => std::str::from_utf8(rest)
            .ok()
            .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok()),
        _ => return Err("the boot process went away before the sandbox was ready".into()),
    };

    let fd_arg = layout::AGENT_LISTEN_FD.to_string();
    let argv: Vec<CString> = [layout::SANDBOX_AGENT, "--listen-fd", &fd_arg]
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
        if k == crate::AGENT_KEY_ENV || k == crate::DNS_ENV {
            continue;
        }
        env.push(
            CString::new(format!("{k}={v}"))
                .map_err(|_| format!("environment variable {k} contains a NUL byte"))?,
        );
    }
    if let Some(dns) = dns {
        env.push(CString::new(format!("{}={dns}", crate::DNS_ENV)).expect("an address has no NUL"));
    }
    // The agent takes its key out of its environment before it starts
    // anything, so no process of the sandbox inherits it.
    if let Some(key) = &config.agent_key {
        env.push(
            CString::new(format!("{}={key}", crate::AGENT_KEY_ENV))
                .map_err(|_| "the agent key contains a NUL byte".to_string())?,
        );
    }
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|s| s.as_ptr()).collect();
    env_p.push(std::ptr::null());

    sys::cloexec_from(3).map_err(|e| format!("marking descriptors close-on-exec: {e}"))?;
    // SAFETY: dup2 onto descriptor 3 (kept across exec) from an open socket.
    if unsafe { libc::dup2(listen.as_raw_fd(), layout::AGENT_LISTEN_FD) } < 0 {
        return Err(format!(
            "passing the agent's socket as descriptor {}: {}",
            layout::AGENT_LISTEN_FD,
            std::io::Error::last_os_error()
        ));
    }
    limit_core_dumps(config)?;
    if userns.is_some() && !config.grants.no_new_privs {
        // In its own user namespace the sandbox's root is an unprivileged
        // host uid, so a set-user-id binary (`sudo`) only gives sandbox
        // root, within the bounding set dropped below: no_new_privs is not
        // needed. Without it the kernel takes a seccomp filter only from a
        // process holding CAP_SYS_ADMIN in its user namespace, so the
        // filters go first, then the capabilities (the filters allow the
        // prctl, capset and /proc reads the drop makes).
        seccomp::install_without_no_new_privs(config.grants.core_dumps)?;
        caps::drop_to(&config.grants)?;
    } else {
        // Without a user namespace root inside is host root: nothing may
        // gain privileges through exec.
        caps::drop_to(&config.grants)?;
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
            .map_err(|e| format!("setting no_new_privs: {e}"))?;
        seccomp::install(config.grants.core_dumps)?;
    }
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings.
    unsafe { libc::execve(argv_p[0], argv_p.as_ptr(), env_p.as_ptr()) };
    Err(format!(
        "executing the agent {}: {}",
        layout::SANDBOX_AGENT,
        std::io::Error::last_os_error()
    ))
}
