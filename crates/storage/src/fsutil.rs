//! Small filesystem helpers shared by volumes and images: atomic writes,
//! no-replace renames, ownership and times, disk usage, name rules, hashing.

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result, StorageError};

/// Converts a path to a C string for libc calls.
pub(crate) fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// A string unique within this host for temporary names.
pub(crate) fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{}-{:x}", std::process::id(), n, t)
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Lower-case hex of a byte string.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex sha256 of a byte string.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Writes `data` to `path` so that readers see either the old or the new
/// content, never a partial file (temporary file, fsync, rename).
pub(crate) fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", nonce()));
    let result = (|| {
        let mut f = fs::File::create(&tmp).ctx("create", &tmp)?;
        f.write_all(data).ctx("write", &tmp)?;
        f.sync_all().ctx("fsync", &tmp)?;
        fs::rename(&tmp, path).ctx("rename into place", path)?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` (which must not exist) with `data` and makes both the
/// file and its directory entry durable. For files in directories nobody
/// else sees yet; elsewhere use [`atomic_write`].
pub(crate) fn write_durable(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .ctx("create", path)?;
    f.write_all(data).ctx("write", path)?;
    f.sync_all().ctx("fsync", path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync directory", dir)
}

/// Renames `from` to `to`, failing with `AlreadyExists` instead of replacing.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (a, b) = (cpath(from)?, cpath(to)?);
    // SAFETY: both pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Changes the owner of `path` without following a final symlink.
pub(crate) fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// Sets access and modification times (seconds) without following symlinks.
pub(crate) fn set_times(path: &Path, atime: i64, mtime: i64) -> io::Result<()> {
    let c = cpath(path)?;
    let ts = [
        libc::timespec {
            tv_sec: atime as libc::time_t,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime as libc::time_t,
            tv_nsec: 0,
        },
    ];
    // SAFETY: `c` is a valid C string and `ts` points to two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes whatever is at `path` (file, symlink or directory tree); a
/// missing path is not an error.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Bytes allocated on disk under `path`, staying on its filesystem and not
/// following symlinks. Entries that vanish during the walk are ignored.
pub(crate) fn disk_usage(path: &Path) -> u64 {
    fn walk(p: &Path, dev: u64, total: &mut u64) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        if m.dev() != dev {
            return;
        }
        *total += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), dev, total);
                }
            }
        }
    }
    let mut total = 0;
    if let Ok(m) = fs::symlink_metadata(path) {
        walk(path, m.dev(), &mut total);
    }
    total
}

/// Checks a volume id or image name: 1-128 characters of `[A-Za-z0-9._:-]`,
/// starting with a letter or digit.
pub(crate) fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(StorageError::InvalidName {
            what,
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("it is empty; use 1-128 characters of letters, digits, '.', '_', ':' or '-'");
    }
    if name.len() > 128 {
        return bad("it is longer than 128 characters");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it must start with a letter or digit");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return bad(&format!(
            "character {c:?} is not allowed; use letters, digits, '.', '_', ':' or '-'"
        ));
    }
    Ok(())
}
