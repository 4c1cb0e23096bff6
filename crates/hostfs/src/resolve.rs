//! Turning a relative path into a file descriptor beneath a root dir fd
//! without following a symlink anywhere on the way.
//!
//! Two resolvers do the same job: `openat2(2)` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` (Linux 5.6+), where the
//! kernel enforces it atomically, and a walk of one `openat(O_NOFOLLOW)` per
//! component for kernels (or seccomp profiles) without `openat2`. Both refuse
//! `..` and absolute paths up front, so they agree on every input.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::OnceLock;

use crate::error::Reason;

/// How paths are resolved beneath a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2` with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
    /// RESOLVE_NO_MAGICLINKS.
    Openat2,
    /// One `openat(O_NOFOLLOW)` per component (where `openat2` is missing).
    Walk,
}

impl Resolver {
    /// `Openat2` when the kernel has it (probed once), `Walk` otherwise.
    pub fn detect() -> Resolver {
        static DETECTED: OnceLock<Resolver> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let dot = c".";
            match openat2(libc::AT_FDCWD, dot, libc::O_PATH | libc::O_CLOEXEC, 0) {
                Err(e) if e == libc::ENOSYS => Resolver::Walk,
                _ => Resolver::Openat2,
            }
        })
    }
}

/// The components of `rel`, each a plain name: `..`, absolute paths and
/// NUL bytes are refused. `.` components are skipped; an empty list names
/// the root itself.
pub(crate) fn components(rel: &Path) -> Result<Vec<CString>, Reason> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(cstr(n)?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(Reason::Escape)
            }
        }
    }
    Ok(out)
}

pub(crate) fn cstr(name: &OsStr) -> Result<CString, Reason> {
    CString::new(name.as_bytes()).map_err(|_| {
        Reason::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path holds a NUL byte",
        ))
    })
}

/// Open `names` (from [`components`]) beneath `dir` with `flags` for the
/// last component; intermediate components must be directories.
pub(crate) fn open(
    resolver: Resolver,
    dir: RawFd,
    names: &[CString],
    flags: libc::c_int,
    mode: libc::mode_t,
) -> Result<OwnedFd, Reason> {
    let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    let r = match resolver {
        Resolver::Openat2 => open_openat2(dir, names, flags, mode),
        Resolver::Walk => open_walk(dir, names, flags, mode),
    };
    r.map_err(|e| match e {
        Reason::Io(io)
            if io.raw_os_error() == Some(libc::ENOTDIR) && symlink_on_the_way(dir, names) =>
        {
            Reason::Symlink
        }
        e => e,
    })
}

/// `O_NOFOLLOW | O_DIRECTORY` on a symlink answers ENOTDIR, not ELOOP:
/// whether a component of `names` is a symlink (checked only on that error,
/// to word it right).
fn symlink_on_the_way(dir: RawFd, names: &[CString]) -> bool {
    let mut cur: Option<OwnedFd> = None;
    for name in names {
        let at = cur.as_ref().map_or(dir, |f| f.as_raw_fd());
        if is_symlink(at, name) {
            return true;
        }
        match openat(
            at,
            name,
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
        ) {
            Ok(fd) => cur = Some(fd),
            Err(_) => return false,
        }
    }
    false
}

fn open_openat2(
    dir: RawFd,
    names: &[CString],
    flags: libc::c_int,
    mode: libc::mode_t,
) -> Result<OwnedFd, Reason> {
    let joined = if names.is_empty() {
        c".".to_owned()
    } else {
        let bytes: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        CString::new(bytes.join(&b'/')).expect("components hold no NUL")
    };
    // A rename elsewhere on the system makes RESOLVE_BENEATH answer EAGAIN
    // (it cannot prove the walk stayed beneath): retry a few times.
    let mut tries = 0;
    loop {
        match openat2(dir, &joined, flags, mode) {
            Ok(fd) => return Ok(fd),
            Err(libc::EAGAIN) if tries < 16 => tries += 1,
            Err(e) => return Err(reason(e)),
        }
    }
}

fn open_walk(
    dir: RawFd,
    names: &[CString],
    flags: libc::c_int,
    mode: libc::mode_t,
) -> Result<OwnedFd, Reason> {
    let Some((last, parents)) = names.split_last() else {
        return openat(dir, c".", flags, mode).map_err(reason);
    };
    let mut cur: Option<OwnedFd> = None;
    for name in parents {
        let at = cur.as_ref().map_or(dir, |f| f.as_raw_fd());
        let next = openat(
            at,
            name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
        )
        .map_err(reason)?;
        cur = Some(next);
    }
    let at = cur.as_ref().map_or(dir, |f| f.as_raw_fd());
    openat(at, last, flags, mode).map_err(reason)
}

fn is_symlink(at: RawFd, name: &CString) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid C string and a stat buffer the kernel fills.
    let rc = unsafe {
        libc::fstatat(
            at,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    // SAFETY: fstatat succeeded, so it filled the buffer.
    rc == 0 && unsafe { st.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// The refusal an errno of an open beneath stands for.
pub(crate) fn reason(errno: i32) -> Reason {
    match errno {
        libc::ELOOP => Reason::Symlink,
        libc::EXDEV => Reason::Escape,
        e => Reason::Io(std::io::Error::from_raw_os_error(e)),
    }
}

fn openat2(
    dir: RawFd,
    path: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> Result<OwnedFd, i32> {
    // SAFETY: open_how is plain old data; zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.mode = if flags & libc::O_CREAT != 0 {
        mode as u64
    } else {
        0
    };
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a valid C string and open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn openat(dir: RawFd, path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> Result<OwnedFd, i32> {
    // SAFETY: a valid C string; mode is read only with O_CREAT.
    let fd = unsafe { libc::openat(dir, path.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}
