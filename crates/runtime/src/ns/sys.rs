//! Thin, checked wrappers around the raw system calls the namespace runtime
//! needs (mount, pivot_root, clone, ...), each returning `io::Result`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A path as a C string; paths with interior NUL bytes are rejected.
pub fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// mount(2). `source`, `fstype` and `data` are optional like in C.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype.map(|s| CString::new(s).expect("fstype without NUL"));
    let data = data
        .map(|s| {
            CString::new(s).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "mount data has a NUL byte")
            })
        })
        .transpose()?;
    // SAFETY: every pointer is either null or a valid NUL-terminated string
    // that outlives the call.
    check(unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    })
}

/// umount2(2).
pub fn umount2(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstr(target)?;
    // SAFETY: valid C string.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })
}

/// pivot_root(2) (no libc wrapper exists).
pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let new_root = cstr(new_root)?;
    let put_old = cstr(put_old)?;
    // SAFETY: valid C strings.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    check(ret as libc::c_int)
}

/// A fork-like clone(2) into new namespaces: no new stack, the child
/// continues from the call with its own copy of the address space.
/// Returns 0 in the child and the child's pid in the parent.
///
/// # Safety
/// Like fork(2): the calling process must be single-threaded.
pub unsafe fn clone_fork(flags: libc::c_int) -> io::Result<libc::pid_t> {
    let flags = (flags | libc::SIGCHLD) as libc::c_ulong;
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    let ret = libc::syscall(
        libc::SYS_clone,
        flags,
        std::ptr::null_mut::<libc::c_void>(),
        std::ptr::null_mut::<libc::c_int>(),
        std::ptr::null_mut::<libc::c_int>(),
        0usize,
    );
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as libc::pid_t)
    }
}

/// sethostname(2).
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `name`.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
}

/// kill(2); ESRCH counts as success (the process is already gone).
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall.
    if unsafe { libc::kill(pid, sig) } < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}

/// A pipe whose both ends are close-on-exec.
pub fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: the kernel just handed us these two owned descriptors.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    })
}

/// waitpid(2) for one child, retrying on EINTR. Returns the raw status.
pub fn waitpid(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<libc::c_int>> {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(if ret == 0 { None } else { Some(status) });
    }
}

/// The statfs(2) filesystem magic of `path`.
pub fn fs_magic(path: &Path) -> io::Result<i64> {
    let p = cstr(path)?;
    // SAFETY: zeroed statfs is a valid out buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    check(unsafe { libc::statfs(p.as_ptr(), &mut st) })?;
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64)
}

/// Mark every descriptor from 3 up close-on-exec, so nothing of the boot
/// process leaks into the sandbox's PID 1.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: plain syscall; CLOSE_RANGE_CLOEXEC = 1 << 2.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 1u32 << 2) };
    check(ret as libc::c_int)
}

/// prctl(2) with integer arguments.
pub fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> io::Result<()> {
    // SAFETY: integer-only prctl options.
    check(unsafe { libc::prctl(option, arg2, 0, 0, 0) })
}
