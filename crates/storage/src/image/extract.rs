//! Safe extraction of tar archives into a directory we own.
//!
//! Every entry is placed strictly inside the destination: absolute paths
//! and `..` components are refused, and no entry may be created through a
//! symlink (each parent component is checked with `lstat`; we are the only
//! writer of the staging directory, so the check cannot race). Hardlinks
//! must point inside the archive's own tree. Device nodes are skipped.
//!
//! With `whiteouts` on (image layers), OCI whiteouts become overlayfs ones:
//! `.wh.<name>` turns into a 0:0 character device `<name>`, and
//! `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{cpath, lchown, remove_any, set_times, set_xattr};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What an extraction produced.
#[derive(Debug, Default)]
pub(crate) struct Unpacked {
    /// Sum of the regular files' sizes.
    pub bytes: u64,
    /// Entries skipped (device nodes, unsupported types).
    pub skipped: u64,
}

/// Extracts `archive` into `dest` (an existing, empty directory).
/// `layer` names the archive in errors.
pub(crate) fn unpack<R: Read>(
    archive: R,
    dest: &Path,
    layer: &str,
    whiteouts: bool,
) -> Result<Unpacked> {
    let mut ar = tar::Archive::new(archive);
    let mut out = Unpacked::default();
    // Directory metadata is applied last, deepest first, so that adding
    // children does not disturb mtimes and read-only modes do not get in
    // the way.
    let mut dirs: Vec<(PathBuf, u32, u64, u64, u64)> = Vec::new();
    let unsafe_entry = |entry: &str, reason: &str| StorageError::UnsafePath {
        layer: layer.to_string(),
        entry: entry.to_string(),
        reason: reason.to_string(),
    };
    let entries = ar.entries().map_err(|e| bad_tar(layer, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad_tar(layer, e))?;
        let raw = entry.path().map_err(|e| bad_tar(layer, e))?.into_owned();
        let shown = raw.to_string_lossy().into_owned();
        let rel = normalize(&raw).map_err(|r| unsafe_entry(&shown, r))?;
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the archive's root directory itself
        };
        let parent = ensure_parent(dest, &rel).map_err(|r| unsafe_entry(&shown, &r))?;
        let target = parent.join(&name);
        let header = entry.header();
        let mode = header.mode().map_err(|e| bad_tar(layer, e))? & 0o7777;
        let uid = header.uid().map_err(|e| bad_tar(layer, e))?;
        let gid = header.gid().map_err(|e| bad_tar(layer, e))?;
        let mtime = header.mtime().unwrap_or(0);
        let kind = header.entry_type();

        if whiteouts && name == OPAQUE_MARKER {
            set_xattr(&parent, "trusted.overlay.opaque", b"y").ctx(
                "mark directory opaque (needs root for trusted.* xattrs)",
                &parent,
            )?;
            continue;
        }
        if whiteouts {
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                    return Err(unsafe_entry(&shown, "whiteout names no file"));
                }
                let t = parent.join(hidden);
                remove_any(&t).ctx("replace with whiteout", &t)?;
                mknod(&t, libc::S_IFCHR, 0).ctx("create whiteout", &t)?;
                continue;
            }
        }

        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&target).ctx("replace", &target)?;
                        fs::create_dir(&target).ctx("create directory", &target)?;
                    }
                    Err(_) => fs::create_dir(&target).ctx("create directory", &target)?,
                }
                dirs.push((target, mode, uid, gid, mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                remove_any(&target).ctx("replace", &target)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&target)
                    .ctx("create file", &target)?;
                out.bytes += io::copy(&mut entry, &mut f).ctx("write file", &target)?;
                drop(f);
                finish(&target, mode, uid, gid, mtime)?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| bad_tar(layer, e))?
                    .ok_or_else(|| unsafe_entry(&shown, "symlink without a target"))?;
                remove_any(&target).ctx("replace", &target)?;
                std::os::unix::fs::symlink(&link, &target).ctx("create symlink", &target)?;
                lchown(&target, uid as u32, gid as u32).ctx("chown", &target)?;
                let _ = set_times(&target, mtime as i64, mtime as i64);
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| bad_tar(layer, e))?
                    .ok_or_else(|| unsafe_entry(&shown, "hardlink without a target"))?;
                let link_rel = normalize(&link).map_err(|r| {
                    unsafe_entry(&shown, &format!("hardlink target {}: {r}", link.display()))
                })?;
                let link_parent = check_parents(dest, &link_rel).map_err(|r| {
                    unsafe_entry(&shown, &format!("hardlink target {}: {r}", link.display()))
                })?;
                let source = match link_rel.file_name() {
                    Some(n) => link_parent.join(n),
                    None => return Err(unsafe_entry(&shown, "hardlink to the layer root")),
                };
                if fs::symlink_metadata(&source).is_err() {
                    return Err(unsafe_entry(
                        &shown,
                        &format!("hardlink target {} is not in this layer", link.display()),
                    ));
                }
                if source != target {
                    remove_any(&target).ctx("replace", &target)?;
                    fs::hard_link(&source, &target).ctx("create hardlink", &target)?;
                }
            }
            EntryType::Fifo => {
                remove_any(&target).ctx("replace", &target)?;
                mknod(&target, libc::S_IFIFO, 0).ctx("create fifo", &target)?;
                finish(&target, mode, uid, gid, mtime)?;
            }
            // Device nodes are never taken from images; pax/GNU metadata
            // records are consumed by the tar reader already.
            _ => out.skipped += 1,
        }
    }
    for (path, mode, uid, gid, mtime) in dirs.into_iter().rev() {
        finish(&path, mode, uid, gid, mtime)?;
    }
    Ok(out)
}

/// Owner, then mode (chown clears set-id bits), then times.
fn finish(path: &Path, mode: u32, uid: u64, gid: u64, mtime: u64) -> Result<()> {
    lchown(path, uid as u32, gid as u32).ctx("chown", path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).ctx("chmod", path)?;
    let _ = set_times(path, mtime as i64, mtime as i64);
    Ok(())
}

/// Turns an entry path into a relative path with only normal components.
fn normalize(raw: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("it contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("it is an absolute path"),
        }
    }
    Ok(out)
}

/// Checks that every parent of `rel` under `dest` is a real directory (no
/// symlinks) and returns the parent's path; missing parents are an error.
fn check_parents(dest: &Path, rel: &Path) -> std::result::Result<PathBuf, String> {
    walk_parents(dest, rel, false)
}

/// Like [`check_parents`] but creates missing parents (mode 0755).
fn ensure_parent(dest: &Path, rel: &Path) -> std::result::Result<PathBuf, String> {
    walk_parents(dest, rel, true)
}

fn walk_parents(dest: &Path, rel: &Path, create: bool) -> std::result::Result<PathBuf, String> {
    let mut cur = dest.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(cur);
    };
    for c in parent.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "its parent {} is a symlink; entries may not be written through symlinks",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                ))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "its parent {} is not a directory",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                ))
            }
            Err(_) if create => {
                fs::create_dir(&cur).map_err(|e| format!("create {}: {e}", cur.display()))?;
            }
            Err(_) => {
                return Err(format!(
                    "{} does not exist",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                ))
            }
        }
    }
    Ok(cur)
}

fn mknod(path: &Path, kind: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: valid C string; mknod has no memory preconditions.
    if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, dev) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn bad_tar(layer: &str, e: io::Error) -> StorageError {
    StorageError::Io {
        op: "read tar archive",
        path: PathBuf::from(layer),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;
    use std::path::Path;

    #[test]
    fn normalize_refuses_escapes() {
        assert!(normalize(Path::new("../evil")).is_err());
        assert!(normalize(Path::new("a/../../evil")).is_err());
        assert!(normalize(Path::new("/etc/passwd")).is_err());
        assert_eq!(normalize(Path::new("./a/b")).unwrap(), Path::new("a/b"));
    }
}
