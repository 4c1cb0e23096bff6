//! Listing a directory opened beneath a root: names from `readdir` on the
//! dir fd, metadata from `fstatat(AT_SYMLINK_NOFOLLOW)` on the same fd, so
//! an entry swapped for a symlink is reported as the symlink.

use std::ffi::{CStr, CString, OsString};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use crate::error::{Error, Reason, Result};
use crate::{fstatat, Stat};

/// One entry of a directory.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: OsString,
    /// As `lstat` sees it.
    pub stat: Stat,
}

/// The entries of a directory, read lazily (a huge directory is never held
/// in memory at once).
pub struct ReadDir {
    dir: *mut libc::DIR,
    fd: libc::c_int,
    path: PathBuf,
}

// SAFETY: the DIR stream is owned by this value alone and used through
// &mut self only.
unsafe impl Send for ReadDir {}

impl ReadDir {
    pub(crate) fn new(fd: OwnedFd, path: PathBuf) -> std::result::Result<ReadDir, Reason> {
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` is an open directory fd whose ownership moves to the
        // stream (closed by closedir).
        let dir = unsafe { libc::fdopendir(raw) };
        if dir.is_null() {
            let e = std::io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `raw` is still ours to close.
            unsafe { libc::close(raw) };
            return Err(Reason::Io(e));
        }
        Ok(ReadDir { dir, fd: raw, path })
    }

    fn next_name(&mut self) -> Option<std::result::Result<CString, std::io::Error>> {
        loop {
            // SAFETY: errno is thread-local; readdir reports errors only there.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: a valid open stream.
            let ent = unsafe { libc::readdir64(self.dir) };
            if ent.is_null() {
                let e = std::io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(0) | None => None,
                    Some(_) => Some(Err(e)),
                };
            }
            // SAFETY: readdir returned an entry whose d_name is NUL-terminated.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                return Some(Ok(name.to_owned()));
            }
        }
    }
}

impl Iterator for ReadDir {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        let name = match self.next_name()? {
            Ok(n) => n,
            Err(e) => return Some(Err(Error::new("list", self.path.clone(), Reason::Io(e)))),
        };
        let stat = match fstatat(self.fd, &name) {
            Ok(s) => s,
            Err(r) => {
                let path = self.path.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
                return Some(Err(Error::new("stat", path, r)));
            }
        };
        Some(Ok(Entry {
            name: OsString::from_vec(name.into_bytes()),
            stat,
        }))
    }
}

impl std::fmt::Debug for ReadDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadDir").field("path", &self.path).finish()
    }
}

impl AsRawFd for ReadDir {
    fn as_raw_fd(&self) -> libc::c_int {
        self.fd
    }
}

impl Drop for ReadDir {
    fn drop(&mut self) {
        // SAFETY: the stream is open and closed exactly once.
        unsafe { libc::closedir(self.dir) };
    }
}
