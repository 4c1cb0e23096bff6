//! Extended attributes of the sandbox's own files: read (`stat` and
//! `list_dir` with an `xattrs` prefix) and replaced under a prefix on an
//! open file (`write_file` with `xattrs`). Done inside the sandbox like
//! every other file operation; sizes are bounded by the protocol's
//! `MAX_XATTRS` / `MAX_XATTR_NAME` / `MAX_XATTR_VALUE`.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use dwell_proto::{ErrorKind, RemoteError, XattrSet, MAX_XATTRS, MAX_XATTR_VALUE};

/// The kernel's limit on a name list (`XATTR_LIST_MAX`).
const LIST_MAX: usize = 64 << 10;

/// Where the attributes are read from.
enum Target<'a> {
    /// A path, not following a final symlink.
    Path(&'a CStr),
    Fd(BorrowedFd<'a>),
}

fn list(t: &Target) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: the buffer is valid for `buf.len()` bytes.
        let n = unsafe {
            match t {
                Target::Path(p) => libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
                Target::Fd(fd) => {
                    libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                }
            }
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < LIST_MAX {
            buf.resize(LIST_MAX, 0);
            continue;
        }
        return Err(e);
    }
}

/// One value, `None` when it is gone or larger than `MAX_XATTR_VALUE`.
fn get(t: &Target, name: &CStr) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; MAX_XATTR_VALUE];
    // SAFETY: the buffer is valid for `buf.len()` bytes; `name` is NUL-terminated.
    let n = unsafe {
        match t {
            Target::Path(p) => libc::lgetxattr(
                p.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            ),
            Target::Fd(fd) => libc::fgetxattr(
                fd.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            ),
        }
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn names<'a>(raw: &'a [u8], prefix: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    raw.split(|b| *b == 0)
        .filter(move |n| !n.is_empty() && n.starts_with(prefix.as_bytes()))
}

/// The attributes of `path` (not following a final symlink) whose names
/// start with `prefix`: at most `MAX_XATTRS`, values over
/// `MAX_XATTR_VALUE` bytes left out. A file system without extended
/// attributes, or a file that vanished, has none.
pub fn read(path: &Path, prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return out;
    };
    let t = Target::Path(&c);
    let Ok(raw) = list(&t) else {
        return out;
    };
    for n in names(&raw, prefix) {
        if out.len() >= MAX_XATTRS {
            break;
        }
        let Ok(name) = CString::new(n) else { continue };
        if let Some(v) = get(&t, &name) {
            out.insert(
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
    }
    out
}

fn fail(what: &str, shown: &str, e: std::io::Error) -> RemoteError {
    match e.raw_os_error() {
        Some(libc::ENOTSUP) => RemoteError::new(
            ErrorKind::InvalidArgument,
            format!(
                "{what} of {shown}: its file system does not support user extended attributes; write it without metadata, or elsewhere (a tmpfs or the root file system)"
            ),
        ),
        Some(libc::E2BIG) | Some(libc::ENOSPC) => RemoteError::new(
            ErrorKind::NoSpace,
            format!("{what} of {shown}: no room for more extended attributes on this file ({e}); set fewer or shorter ones"),
        ),
        _ => RemoteError::from_io(&format!("{what} of {shown}"), &e),
    }
}

/// Replaces the attributes of the open file `fd` under `want.prefix` by
/// `want.set` (checked first: names under the prefix, sizes in bounds).
pub fn apply(fd: BorrowedFd, shown: &str, want: &XattrSet) -> Result<(), RemoteError> {
    want.check()
        .map_err(|why| RemoteError::new(ErrorKind::InvalidArgument, why))?;
    let t = Target::Fd(fd);
    let raw = match list(&t) {
        Ok(r) => r,
        // Nothing to remove; setting below reports the real problem.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) && !want.set.is_empty() => Vec::new(),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(fail("listing the extended attributes", shown, e)),
    };
    for n in names(&raw, &want.prefix) {
        if want.set.contains_key(String::from_utf8_lossy(n).as_ref()) {
            continue;
        }
        let Ok(name) = CString::new(n) else { continue };
        // SAFETY: plain fremovexattr(2) with a NUL-terminated name.
        if unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENODATA) {
                return Err(fail("removing an extended attribute", shown, e));
            }
        }
    }
    for (k, v) in &want.set {
        let name = CString::new(k.as_bytes()).map_err(|_| {
            RemoteError::new(
                ErrorKind::InvalidArgument,
                format!("extended attribute name {k:?} holds a NUL"),
            )
        })?;
        // SAFETY: the value is valid for its length; the name is NUL-terminated.
        let r = unsafe {
            libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), v.as_ptr().cast(), v.len(), 0)
        };
        if r < 0 {
            return Err(fail(
                "setting an extended attribute",
                shown,
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn replace_under_a_prefix_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = std::fs::File::create(&p).unwrap();
        let mut set = XattrSet {
            prefix: "user.t.".into(),
            set: BTreeMap::from([
                ("user.t.a".into(), "1".into()),
                ("user.t.b".into(), "2".into()),
            ]),
        };
        match apply(f.as_fd(), "f", &set) {
            Ok(()) => {}
            // The test's file system has no user xattrs (some tmpfs): the
            // error says so; nothing else to check here.
            Err(e) if e.message.contains("does not support") => return,
            Err(e) => panic!("{e:?}"),
        }
        assert_eq!(read(&p, "user.t."), set.set);
        set.set.remove("user.t.a");
        apply(f.as_fd(), "f", &set).unwrap();
        assert_eq!(read(&p, "user.t."), set.set);
        assert!(read(&p, "user.other.").is_empty());
        let bad = XattrSet {
            prefix: "user.t.".into(),
            set: BTreeMap::from([("user.x".into(), "1".into())]),
        };
        assert_eq!(
            apply(f.as_fd(), "f", &bad).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        let big = XattrSet {
            prefix: "user.t.".into(),
            set: BTreeMap::from([("user.t.a".into(), "x".repeat(MAX_XATTR_VALUE + 1))]),
        };
        assert!(apply(f.as_fd(), "f", &big).is_err());
        let trusted = XattrSet {
            prefix: "trusted.".into(),
            set: BTreeMap::new(),
        };
        assert!(apply(f.as_fd(), "f", &trusted).is_err());
    }
}
