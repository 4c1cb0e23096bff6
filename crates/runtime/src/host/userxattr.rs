//! The one-time upgrade of overlay metadata from `trusted.overlay.*` to
//! `user.overlay.*` xattrs.
//!
//! An overlay mounted inside a user namespace must use the `userxattr`
//! option: it then reads and writes opaque-directory (and redirect, impure,
//! origin) marks as `user.overlay.*`. Volumes written before user
//! namespaces (overlay mounted by host root) and image layers unpacked
//! before then carry `trusted.overlay.*` marks only, which such an overlay
//! ignores: deleted directories would come back. So before a sandbox first
//! starts in a user namespace, the boot process (host root, the sandbox not
//! running) copies every `trusted.overlay.*` xattr of every directory to its
//! `user.overlay.*` name and leaves a marker so it happens once.
//!
//! The walk never follows a symlink: every directory is opened with
//! `O_NOFOLLOW | O_DIRECTORY` relative to its parent's descriptor and the
//! xattrs are read and written on that descriptor. The trusted names are
//! kept, so an overlay mounted the old way still sees the same tree.
//! Whiteouts (0/0 character devices) need no conversion.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Marker file in a volume's upper root once its upper dirs are converted.
pub const VOLUME_MARKER: &str = ".dwell-userxattr";
/// Xattr on the top directory of a converted image layer (trusted.*: a
/// sandbox in a user namespace cannot see it).
pub const LAYER_MARK: &str = "trusted.dwell.userxattr";
/// Deeper directory trees are refused (one descriptor per level).
const MAX_DEPTH: usize = 512;

const TRUSTED: &[u8] = b"trusted.overlay.";
const USER: &[u8] = b"user.overlay.";

/// Whether the volume at `upper_root` uses `user.overlay.*` names (then
/// every overlay on it is mounted with `userxattr`, also without a user
/// namespace).
pub fn volume_converted(upper_root: &Path) -> bool {
    upper_root.join(VOLUME_MARKER).exists()
}

/// Convert the volume's upper dirs (`root/upper`, `host/*/upper`) once.
pub fn convert_volume(upper_root: &Path) -> io::Result<()> {
    if volume_converted(upper_root) {
        return Ok(());
    }
    convert_tree(&upper_root.join("root/upper"))?;
    let host = upper_root.join("host");
    if let Some(dir) = open_dir_at(libc::AT_FDCWD, host.as_os_str())? {
        for name in list_dirs(&dir)? {
            let Some(d) = open_dir_at(dir.as_raw_fd(), &name)? else {
                continue;
            };
            if let Some(upper) = open_dir_at(d.as_raw_fd(), OsStr::new("upper"))? {
                convert_dir(upper, 0)?;
            }
        }
    }
    write_marker(&upper_root.join(VOLUME_MARKER))
}

/// Convert an image layer directory once. The mark is an xattr on the
/// layer's top directory ([`LAYER_MARK`]): a file would show up in the
/// sandbox's root, or be taken for a layer by the image store.
pub fn convert_layer(layer: &Path) -> io::Result<()> {
    let Some(top) = open_dir_at(libc::AT_FDCWD, layer.as_os_str())? else {
        return Ok(());
    };
    let mark = CString::new(LAYER_MARK).expect("static name");
    if get_xattr(top.as_raw_fd(), &mark).is_ok() {
        return Ok(());
    }
    convert_dir(top, 0)
        .map_err(|e| io::Error::new(e.kind(), format!("converting {}: {e}", layer.display())))?;
    let top = open_dir_at(libc::AT_FDCWD, layer.as_os_str())?
        .ok_or_else(|| io::Error::other(format!("{} went away", layer.display())))?;
    // SAFETY: valid name and one-byte value.
    if unsafe { libc::fsetxattr(top.as_raw_fd(), mark.as_ptr(), b"1".as_ptr().cast(), 1, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn write_marker(path: &Path) -> io::Result<()> {
    std::fs::write(path, b"user.overlay.* xattrs written by dwell\n")
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// Convert the tree rooted at `root` (absent: nothing to do). `root` itself
/// must not be a symlink.
pub fn convert_tree(root: &Path) -> io::Result<()> {
    match open_dir_at(libc::AT_FDCWD, root.as_os_str())? {
        Some(fd) => convert_dir(fd, 0)
            .map_err(|e| io::Error::new(e.kind(), format!("converting {}: {e}", root.display()))),
        None => Ok(()),
    }
}

fn convert_dir(dir: OwnedFd, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "directories nested deeper than {MAX_DEPTH} levels"
        )));
    }
    copy_overlay_xattrs(dir.as_raw_fd())?;
    for name in list_dirs(&dir)? {
        if let Some(sub) = open_dir_at(dir.as_raw_fd(), &name)? {
            convert_dir(sub, depth + 1)?;
        }
    }
    Ok(())
}

/// Open the directory `name` under `dir` without following a symlink;
/// `None` when it does not exist or is not a directory.
fn open_dir_at(dir: RawFd, name: &OsStr) -> io::Result<Option<OwnedFd>> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name with a NUL byte"))?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid C string and descriptor.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: a new descriptor we own.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Names of the subdirectories of `dir` (by d_type, never following).
fn list_dirs(dir: &OwnedFd) -> io::Result<Vec<std::ffi::OsString>> {
    // read_dir through the descriptor's own /proc link: the same directory.
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.push(entry.file_name());
        }
    }
    Ok(out)
}

/// Copy every `trusted.overlay.X` xattr of the open file `fd` to
/// `user.overlay.X`.
fn copy_overlay_xattrs(fd: RawFd) -> io::Result<()> {
    for name in list_xattrs(fd)? {
        let Some(rest) = name.as_bytes().strip_prefix(TRUSTED) else {
            continue;
        };
        let value = get_xattr(fd, &name)?;
        let mut user = USER.to_vec();
        user.extend_from_slice(rest);
        let user = CString::new(user).expect("xattr names have no NUL");
        // SAFETY: valid name and value buffer of the given length.
        let r =
            unsafe { libc::fsetxattr(fd, user.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn list_xattrs(fd: RawFd) -> io::Result<Vec<CString>> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: buffer of the given length.
        let n = unsafe { libc::flistxattr(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            break;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    }
    Ok(buf
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| CString::new(n).expect("split at NUL"))
        .collect())
}

fn get_xattr(fd: RawFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: buffer of the given length, valid name.
        let n = unsafe { libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(p: &Path, name: &str, v: &[u8]) {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        let n = CString::new(name).unwrap();
        // SAFETY: valid strings and buffer.
        let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
    }

    fn get(p: &Path, name: &str) -> Option<Vec<u8>> {
        let f = std::fs::File::open(p).ok()?;
        get_xattr(f.as_raw_fd(), &CString::new(name).unwrap()).ok()
    }

    #[test]
    fn converts_opaque_dirs_once_and_never_follows_symlinks() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: trusted.* xattrs need root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        let opq = vol.join("root/upper/etc/opq");
        std::fs::create_dir_all(&opq).unwrap();
        set(&opq, "trusted.overlay.opaque", b"y");
        let hostopq = vol.join("host/usr/upper/share");
        std::fs::create_dir_all(&hostopq).unwrap();
        set(&hostopq, "trusted.overlay.opaque", b"y");
        // A symlink to a directory outside: never entered.
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("d")).unwrap();
        set(&outside.join("d"), "trusted.overlay.opaque", b"y");
        std::os::unix::fs::symlink(&outside, vol.join("root/upper/link")).unwrap();

        convert_volume(&vol).unwrap();
        assert_eq!(get(&opq, "user.overlay.opaque").as_deref(), Some(&b"y"[..]));
        assert_eq!(
            get(&opq, "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(
            get(&hostopq, "user.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(get(&outside.join("d"), "user.overlay.opaque"), None);
        assert!(volume_converted(&vol));

        // Once: a later trusted mark is left alone.
        let late = vol.join("root/upper/late");
        std::fs::create_dir(&late).unwrap();
        set(&late, "trusted.overlay.opaque", b"y");
        convert_volume(&vol).unwrap();
        assert_eq!(get(&late, "user.overlay.opaque"), None);
    }

    #[test]
    fn a_layer_is_converted_once_and_marked_on_its_top_dir() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: trusted.* xattrs need root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("layer");
        std::fs::create_dir_all(layer.join("a/b")).unwrap();
        set(&layer.join("a/b"), "trusted.overlay.opaque", b"y");
        convert_layer(&layer).unwrap();
        assert_eq!(
            get(&layer.join("a/b"), "user.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(get(&layer, LAYER_MARK).as_deref(), Some(&b"1"[..]));
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no file beside it"
        );
        // Once: a later trusted mark is left alone.
        std::fs::create_dir(layer.join("late")).unwrap();
        set(&layer.join("late"), "trusted.overlay.opaque", b"y");
        convert_layer(&layer).unwrap();
        assert_eq!(get(&layer.join("late"), "user.overlay.opaque"), None);
    }
}
