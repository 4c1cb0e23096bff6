//! Safe extraction of tar archives into a directory we own.
//!
//! The archive is hostile (a pulled layer, a build context, an uploaded
//! tar) and the daemon is host root, so every filesystem operation acts
//! beneath the destination through directory fds and never follows a
//! symlink:
//!
//! - entry paths are relative with no `..` (absolute paths and `..` are
//!   refused); each parent directory is reached with
//!   [`dwell_hostfs::Beneath`] (`openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)` or `openat(O_NOFOLLOW)` per component), so a
//!   parent that is a symlink is refused, whatever entry planted it;
//! - files, symlinks, fifos and whiteouts are created with the `*at` calls
//!   in that parent's fd, and owner, mode and times are set on the new
//!   file's own fd (`fchown`/`fchmod`/`futimens`), or with
//!   `AT_SYMLINK_NOFOLLOW` for a symlink;
//! - directory metadata is applied last (so adding children does not
//!   disturb mtimes and read-only modes do not get in the way), by
//!   re-opening each directory beneath the root with `O_DIRECTORY` and no
//!   symlink followed and using `fchown`/`fchmod` on that fd: a later entry
//!   that put a symlink where the directory was makes the directory
//!   unreachable, and its metadata is dropped, never applied to the
//!   symlink's target;
//! - a later entry replaces an earlier one at the same path, as Docker
//!   does (a directory is only merged with a directory); a directory is
//!   removed with [`dwell_hostfs::Beneath::remove_tree`], which follows no
//!   symlink and crosses no mount;
//! - hard links must name an entry already extracted beneath the root,
//!   reached without following a symlink (a link to a symlink links the
//!   symlink itself); a directory cannot be hard-linked;
//! - device nodes are skipped;
//! - [`Limits`] caps the bytes and the entries of one archive.
//!
//! With `whiteouts` on (image layers), OCI whiteouts become overlayfs ones:
//! `.wh.<name>` turns into a 0:0 character device `<name>` in the entry's
//! parent, and `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its
//! directory (both through the parent's fd).

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use dwell_hostfs::{Beneath, FileKind};
use tar::EntryType;

use crate::error::{Result, StorageError};

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

/// How much one archive may expand to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The most bytes of regular files (as the tar headers give them,
    /// checked before any data is written).
    pub bytes: u64,
    /// The most entries (each becomes at least one inode).
    pub entries: u64,
}

impl Limits {
    /// One image layer (pulled, imported or built): 64 GiB and 4 million
    /// entries, far above real layers, low enough that a gzip bomb stops
    /// before it fills a typical image disk.
    pub const LAYER: Limits = Limits {
        bytes: 64 << 30,
        entries: 4_000_000,
    };
}

/// Extracts `archive` into `dest` (an existing, empty directory the daemon
/// owns) within `limits`. `layer` names the archive in errors.
pub(crate) fn unpack<R: Read>(
    archive: R,
    dest: &Path,
    layer: &str,
    whiteouts: bool,
    limits: Limits,
) -> Result<Unpacked> {
    let root = Beneath::open(dest).map_err(host)?;
    let mut ar = tar::Archive::new(archive);
    let mut out = Unpacked::default();
    let mut entries_seen: u64 = 0;
    // Directories whose metadata is applied at the end, by relative path.
    let mut dirs: Vec<(PathBuf, Meta)> = Vec::new();
    let unsafe_entry = |entry: &str, reason: &str| StorageError::UnsafePath {
        layer: layer.to_string(),
        entry: entry.to_string(),
        reason: reason.to_string(),
    };
    let entries = ar.entries().map_err(|e| bad_tar(layer, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad_tar(layer, e))?;
        entries_seen += 1;
        if entries_seen > limits.entries {
            return Err(too_large(
                layer,
                format!("it has more than {} entries", limits.entries),
            ));
        }
        let raw = entry.path().map_err(|e| bad_tar(layer, e))?.into_owned();
        let shown = raw.to_string_lossy().into_owned();
        let rel = normalize(&raw).map_err(|r| unsafe_entry(&shown, r))?;
        let Some(name) = rel.file_name().map(|n| n.to_os_string()) else {
            continue; // the archive's root directory itself
        };
        let name_s = name.to_string_lossy().into_owned();
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let pdir = ensure_parent(&root, &parent_rel).map_err(|r| unsafe_entry(&shown, &r))?;
        let header = entry.header();
        let meta = Meta {
            mode: header.mode().map_err(|e| bad_tar(layer, e))? & 0o7777,
            uid: header.uid().map_err(|e| bad_tar(layer, e))? as u32,
            gid: header.gid().map_err(|e| bad_tar(layer, e))? as u32,
            mtime: header.mtime().unwrap_or(0) as i64,
        };
        let kind = header.entry_type();
        let cname = cstr(&name).map_err(|r| unsafe_entry(&shown, r))?;

        if whiteouts && name_s == OPAQUE_MARKER {
            set_opaque(pdir.as_raw_fd()).map_err(|e| StorageError::Io {
                op: "mark directory opaque (needs root for trusted.* xattrs)",
                path: root.host_path(&parent_rel),
                source: e,
            })?;
            continue;
        }
        if whiteouts {
            if let Some(hidden) = name_s.strip_prefix(WHITEOUT_PREFIX) {
                if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                    return Err(unsafe_entry(&shown, "whiteout names no file"));
                }
                let hidden_c = cstr(hidden.as_ref()).map_err(|r| unsafe_entry(&shown, r))?;
                remove_existing(&pdir, Path::new(hidden))?;
                mknodat(pdir.as_raw_fd(), &hidden_c, libc::S_IFCHR, 0)
                    .map_err(|e| io_err("create whiteout", &pdir, hidden.as_ref(), e))?;
                continue;
            }
        }

        let name_p = Path::new(&name);
        match kind {
            EntryType::Directory => {
                match pdir.try_stat(name_p).map_err(host)? {
                    Some(s) if s.kind == FileKind::Dir => {}
                    Some(_) => {
                        pdir.remove(name_p).map_err(host)?;
                        pdir.mkdir(name_p, 0o700).map_err(host)?;
                    }
                    None => pdir.mkdir(name_p, 0o700).map_err(host)?,
                }
                dirs.push((rel, meta));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let size = entry.size();
                if out.bytes.saturating_add(size) > limits.bytes {
                    return Err(too_large(
                        layer,
                        format!("its files add up to more than {} bytes", limits.bytes),
                    ));
                }
                remove_existing(&pdir, name_p)?;
                let mut f = pdir.create(name_p, 0o600).map_err(host)?;
                let budget = limits.bytes - out.bytes;
                let n = io::copy(&mut (&mut entry).take(budget.saturating_add(1)), &mut f)
                    .map_err(|e| io_err("write file", &pdir, name_p, e))?;
                out.bytes += n;
                if out.bytes > limits.bytes {
                    return Err(too_large(
                        layer,
                        format!("its files add up to more than {} bytes", limits.bytes),
                    ));
                }
                meta.apply_fd(f.as_raw_fd())
                    .map_err(|e| io_err("set owner and mode of", &pdir, name_p, e))?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| bad_tar(layer, e))?
                    .ok_or_else(|| unsafe_entry(&shown, "symlink without a target"))?;
                let link_c = cstr(link.as_os_str()).map_err(|r| unsafe_entry(&shown, r))?;
                remove_existing(&pdir, name_p)?;
                // SAFETY: a valid dir fd and C strings.
                if unsafe { libc::symlinkat(link_c.as_ptr(), pdir.as_raw_fd(), cname.as_ptr()) }
                    != 0
                {
                    return Err(io_err(
                        "create symlink",
                        &pdir,
                        name_p,
                        io::Error::last_os_error(),
                    ));
                }
                pdir.chown(name_p, meta.uid, meta.gid).map_err(host)?;
                let _ = set_times_at(pdir.as_raw_fd(), &cname, meta.mtime);
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| bad_tar(layer, e))?
                    .ok_or_else(|| unsafe_entry(&shown, "hardlink without a target"))?;
                let bad_link = |r: &str| {
                    unsafe_entry(&shown, &format!("hardlink target {}: {r}", link.display()))
                };
                let link_rel = normalize(&link).map_err(bad_link)?;
                let Some(src_name) = link_rel.file_name() else {
                    return Err(bad_link("it is the layer root"));
                };
                if link_rel == rel {
                    continue;
                }
                let src_parent = link_rel.parent().unwrap_or(Path::new(""));
                // Resolved beneath the root with no symlink followed.
                let sdir = root.open_dir(src_parent).map_err(|e| {
                    bad_link(&format!("it is not in this layer or not reachable ({e})"))
                })?;
                match sdir.try_stat(src_name).map_err(host)? {
                    None => return Err(bad_link("it is not in this layer")),
                    Some(s) if s.kind == FileKind::Dir => {
                        return Err(bad_link("it is a directory"))
                    }
                    Some(_) => {}
                }
                let src_c = cstr(src_name).map_err(bad_link)?;
                remove_existing(&pdir, name_p)?;
                // Flags 0: a symlink source is linked as itself, not followed.
                // SAFETY: valid dir fds and C strings.
                let rc = unsafe {
                    libc::linkat(
                        sdir.as_raw_fd(),
                        src_c.as_ptr(),
                        pdir.as_raw_fd(),
                        cname.as_ptr(),
                        0,
                    )
                };
                if rc != 0 {
                    return Err(io_err(
                        "create hardlink",
                        &pdir,
                        name_p,
                        io::Error::last_os_error(),
                    ));
                }
            }
            EntryType::Fifo => {
                remove_existing(&pdir, name_p)?;
                mknodat(pdir.as_raw_fd(), &cname, libc::S_IFIFO, 0)
                    .map_err(|e| io_err("create fifo", &pdir, name_p, e))?;
                let fd = open_fifo(pdir.as_raw_fd(), &cname)
                    .map_err(|e| io_err("open fifo", &pdir, name_p, e))?;
                meta.apply_fd(fd.as_raw_fd())
                    .map_err(|e| io_err("set owner and mode of", &pdir, name_p, e))?;
            }
            // Device nodes are never taken from images; pax/GNU metadata
            // records are consumed by the tar reader already.
            _ => out.skipped += 1,
        }
    }
    // Deepest (latest) first; a path given twice gets its last entry's
    // metadata.
    let mut done = HashSet::new();
    for (rel, meta) in dirs.into_iter().rev() {
        if !done.insert(rel.clone()) {
            continue;
        }
        let dir = match root.open_dir(&rel) {
            Ok(d) => d,
            // Replaced by a later entry (a symlink, a file) or removed by a
            // whiteout: nothing is left to apply it to.
            Err(e) if e.is_refused() || e.is_not_found() || is_notdir(&e) => continue,
            Err(e) => return Err(host(e)),
        };
        meta.apply_fd(dir.as_raw_fd())
            .map_err(|e| io_err("set owner and mode of", &root, &rel, e))?;
    }
    Ok(out)
}

/// Owner, mode and mtime of an entry.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

impl Meta {
    /// Owner, then mode (chown clears set-id bits), then times, all on the
    /// open file `fd` (never a path).
    fn apply_fd(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: fd is an open descriptor owned by the caller.
        if unsafe { libc::fchown(fd, self.uid, self.gid) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::fchmod(fd, self.mode as libc::mode_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let t = times(self.mtime);
        // SAFETY: as above, and a two-element timespec array.
        let _ = unsafe { libc::futimens(fd, t.as_ptr()) };
        Ok(())
    }
}

fn times(mtime: i64) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    [ts, ts]
}

/// Set the times of `name` in `dir` without following a symlink.
fn set_times_at(dir: RawFd, name: &CString, mtime: i64) -> io::Result<()> {
    let t = times(mtime);
    // SAFETY: a valid dir fd, C string and two-element timespec array.
    if unsafe { libc::utimensat(dir, name.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Remove whatever `name` in `dir` is (a later entry replaces an earlier
/// one, a directory with its contents); nothing is followed and no mount is
/// crossed.
fn remove_existing(dir: &Beneath, name: &Path) -> Result<()> {
    match dir.try_stat(name).map_err(host)? {
        None => Ok(()),
        Some(_) => dir.remove_tree(name).map_err(host),
    }
}

/// The directory `parent` beneath `root`, each missing component created
/// (mode 0700 until its own entry, if any, sets it); a component that is a
/// symlink or not a directory is refused.
fn ensure_parent(root: &Beneath, parent: &Path) -> std::result::Result<Beneath, String> {
    let mut cur = root.open_dir("").map_err(|e| e.to_string())?;
    let mut so_far = PathBuf::new();
    for c in parent.components() {
        so_far.push(c);
        let name = Path::new(c.as_os_str());
        match cur.try_stat(name).map_err(|e| e.to_string())? {
            Some(s) if s.kind == FileKind::Dir => {}
            Some(s) if s.kind == FileKind::Symlink => {
                return Err(format!(
                    "its parent {} is a symlink; entries may not be written through symlinks",
                    so_far.display()
                ))
            }
            Some(_) => {
                return Err(format!(
                    "its parent {} is not a directory",
                    so_far.display()
                ))
            }
            None => cur.mkdir(name, 0o755).map_err(|e| e.to_string())?,
        }
        cur = cur.open_dir(name).map_err(|e| e.to_string())?;
    }
    Ok(cur)
}

fn set_opaque(dir: RawFd) -> io::Result<()> {
    let attr = c"trusted.overlay.opaque";
    // SAFETY: a valid fd, C string and one-byte value.
    if unsafe { libc::fsetxattr(dir, attr.as_ptr(), b"y".as_ptr().cast(), 1, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn mknodat(dir: RawFd, name: &CString, kind: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    // SAFETY: a valid dir fd and C string.
    if unsafe { libc::mknodat(dir, name.as_ptr(), kind | 0o600, dev) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Open the fifo `name` in `dir` without blocking or following a symlink,
/// checking that it is still a fifo.
fn open_fifo(dir: RawFd, name: &CString) -> io::Result<OwnedFd> {
    // SAFETY: a valid dir fd and C string.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let f = File::from(fd);
    if !std::os::unix::fs::FileTypeExt::is_fifo(&f.metadata()?.file_type()) {
        return Err(io::Error::other("not a fifo"));
    }
    Ok(OwnedFd::from(f))
}

fn cstr(s: &std::ffi::OsStr) -> std::result::Result<CString, &'static str> {
    CString::new(s.as_bytes()).map_err(|_| "it contains a NUL byte")
}

fn is_notdir(e: &dwell_hostfs::Error) -> bool {
    matches!(&e.reason, dwell_hostfs::Reason::Io(io) if io.raw_os_error() == Some(libc::ENOTDIR))
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

/// A refused or failed access beneath the destination.
fn host(e: dwell_hostfs::Error) -> StorageError {
    StorageError::Io {
        op: "extract",
        path: e.path.clone(),
        source: io::Error::from(e),
    }
}

fn io_err(op: &'static str, dir: &Beneath, name: &Path, source: io::Error) -> StorageError {
    StorageError::Io {
        op,
        path: dir.host_path(name),
        source,
    }
}

fn too_large(layer: &str, why: String) -> StorageError {
    StorageError::BadImage {
        source_path: PathBuf::from(layer),
        reason: format!(
            "layer {layer} is refused: {why} (the daemon's per-layer limit, against \
             decompression bombs); use a smaller image or split the layer"
        ),
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
    use super::{normalize, unpack, Limits};
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    #[test]
    fn normalize_refuses_escapes() {
        assert!(normalize(Path::new("../evil")).is_err());
        assert!(normalize(Path::new("a/../../evil")).is_err());
        assert!(normalize(Path::new("/etc/passwd")).is_err());
        assert_eq!(normalize(Path::new("./a/b")).unwrap(), Path::new("a/b"));
    }

    /// One tar entry to write: (path, kind, mode, uid, link target, data).
    enum E<'a> {
        Dir(&'a str, u32, u64),
        File(&'a str, u32, &'a [u8]),
        Sym(&'a str, &'a str),
        Hard(&'a str, &'a str),
    }

    /// A tar of `entries`, written with raw header names so that `..` and
    /// absolute paths go in as given.
    fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            let (name, data): (&str, &[u8]) = match e {
                E::Dir(n, mode, uid) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_uid(*uid);
                    (n, b"")
                }
                E::File(n, mode, d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    (n, d)
                }
                E::Sym(n, t) | E::Hard(n, t) => {
                    h.set_entry_type(if matches!(e, E::Sym(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    h.set_mode(0o777);
                    h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
                    (n, b"")
                }
            };
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// A temp dir holding `dest/` (empty) and `outside/victim` (0644, the
    /// test's owner, known content); returns (tmp, dest, victim).
    fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
        let victim = outside.join("victim");
        fs::write(&victim, b"host data").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        (tmp, dest, victim)
    }

    /// The victim, its directory and the directory of the temp dir are as
    /// `setup` left them.
    fn assert_untouched(victim: &Path) {
        let m = fs::metadata(victim).unwrap();
        assert_eq!(fs::read(victim).unwrap(), b"host data");
        assert_eq!(m.mode() & 0o7777, 0o644, "victim mode changed");
        assert_eq!(m.uid(), unsafe { libc::geteuid() }, "victim owner changed");
        let d = fs::metadata(victim.parent().unwrap()).unwrap();
        assert_eq!(d.mode() & 0o7777, 0o755, "victim's dir mode changed");
        assert_eq!(
            d.uid(),
            unsafe { libc::geteuid() },
            "victim's dir owner changed"
        );
    }

    fn run(entries: &[E], dest: &Path) -> crate::error::Result<super::Unpacked> {
        unpack(&tar_of(entries)[..], dest, "test", true, Limits::LAYER)
    }

    /// Review 14 F0: a directory with set-id bits and another owner, then a
    /// symlink in its place to a host file. The deferred metadata must not
    /// reach the host file (it did: chmod followed the symlink).
    #[test]
    fn dir_then_symlink_leaves_the_target_alone() {
        let (_t, dest, victim) = setup();
        let v = victim.to_str().unwrap();
        run(&[E::Dir("x/", 0o4777, 1000), E::Sym("x", v)], &dest).unwrap();
        assert_untouched(&victim);
        // The later entry replaced the directory (as Docker does).
        let m = fs::symlink_metadata(dest.join("x")).unwrap();
        assert!(m.file_type().is_symlink());
    }

    /// The three-entry form: a dir `a/` with a child dir whose metadata is
    /// deferred, then `a` replaced by a symlink to the victim's directory.
    #[test]
    fn nested_dir_then_parent_symlink_leaves_the_target_alone() {
        let (_t, dest, victim) = setup();
        let outside = victim.parent().unwrap().to_str().unwrap().to_string();
        run(
            &[
                E::Dir("a/", 0o755, 0),
                E::Dir("a/victim/", 0o6777, 1000),
                E::Sym("a", &outside),
            ],
            &dest,
        )
        .unwrap();
        assert_untouched(&victim);
        // Same with a hard link to a symlink taking the directory's place.
        let (_t2, dest2, victim2) = setup();
        let outside2 = victim2.parent().unwrap().to_str().unwrap().to_string();
        run(
            &[
                E::Dir("a/", 0o755, 0),
                E::Dir("a/victim/", 0o6777, 1000),
                E::Sym("l", &outside2),
                E::Hard("a", "l"),
            ],
            &dest2,
        )
        .unwrap();
        assert_untouched(&victim2);
    }

    /// A symlink parent, then an entry through it: refused, nothing written
    /// outside.
    #[test]
    fn entries_through_a_symlink_parent_are_refused() {
        let (_t, dest, victim) = setup();
        let outside = victim.parent().unwrap().to_str().unwrap().to_string();
        let err = run(
            &[E::Sym("a", &outside), E::File("a/victim", 0o4755, b"evil")],
            &dest,
        )
        .unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_untouched(&victim);
        let err = run(&[E::Dir("a/new/", 0o4777, 0)], &dest).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(!victim.parent().unwrap().join("new").exists());
        // A whiteout through the symlink must not delete the victim.
        let err = run(&[E::File("a/.wh.victim", 0o644, b"")], &dest).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_untouched(&victim);
    }

    /// Hard links to paths outside the destination, or through a symlink,
    /// are refused; a file named like the victim stays a new inode.
    #[test]
    fn hardlinks_outside_are_refused() {
        let (_t, dest, victim) = setup();
        let outside = victim.parent().unwrap().to_str().unwrap().to_string();
        for link in [
            "../outside/victim",
            "../../outside/victim",
            victim.to_str().unwrap(),
        ] {
            let err = run(&[E::Hard("h", link)], &dest).unwrap_err();
            assert!(err.to_string().contains("hardlink target"), "{link}: {err}");
        }
        let err = run(&[E::Sym("s", &outside), E::Hard("h", "s/victim")], &dest).unwrap_err();
        assert!(err.to_string().contains("hardlink target"), "{err}");
        // A hard link to an in-layer symlink links the symlink itself.
        let (_t2, dest2, victim2) = setup();
        run(
            &[
                E::Sym("s", victim2.to_str().unwrap()),
                E::Hard("h", "s"),
                E::File("h2", 0o644, b"x"),
            ],
            &dest2,
        )
        .unwrap();
        assert!(fs::symlink_metadata(dest2.join("h"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_untouched(&victim);
        assert_untouched(&victim2);
    }

    /// `..` components and absolute paths are refused, in entries and in
    /// whiteouts.
    #[test]
    fn escapes_are_refused() {
        let (_t, dest, victim) = setup();
        let v = victim.to_str().unwrap().to_string();
        for name in ["../outside/victim", "a/../../outside/victim", v.as_str()] {
            let err = run(&[E::File(name, 0o4777, b"evil")], &dest).unwrap_err();
            assert!(err.to_string().contains("unsafe entry"), "{name}: {err}");
        }
        let err = run(&[E::File("../outside/.wh.victim", 0o644, b"")], &dest).unwrap_err();
        assert!(err.to_string().contains("unsafe entry"), "{err}");
        assert_untouched(&victim);
    }

    /// A later entry replaces an earlier one; directories merge and keep
    /// the last metadata; set-id bits stay on files inside the layer.
    #[test]
    fn later_entries_replace_earlier_ones() {
        let (_t, dest, _victim) = setup();
        run(
            &[
                E::Dir("d/", 0o700, 0),
                E::File("d/f", 0o644, b"one"),
                E::File("d/f", 0o4755, b"two"),
                E::Dir("d/", 0o751, 0),
                E::Dir("g/", 0o755, 0),
                E::File("g/x", 0o644, b"x"),
                E::File("g", 0o644, b"now a file"),
            ],
            &dest,
        )
        .unwrap();
        assert_eq!(fs::read(dest.join("d/f")).unwrap(), b"two");
        assert_eq!(
            fs::metadata(dest.join("d/f")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert_eq!(fs::metadata(dest.join("d")).unwrap().mode() & 0o7777, 0o751);
        assert_eq!(fs::read(dest.join("g")).unwrap(), b"now a file");
    }

    /// The byte and entry caps stop an archive before it is all written.
    #[test]
    fn limits_are_enforced() {
        let (_t, dest, _victim) = setup();
        let small = Limits {
            bytes: 10,
            entries: 100,
        };
        let tar = tar_of(&[
            E::File("a", 0o644, b"0123456789"),
            E::File("b", 0o644, b"x"),
        ]);
        let err = unpack(&tar[..], &dest, "sha256:abc", false, small).unwrap_err();
        assert!(err.to_string().contains("sha256:abc"), "{err}");
        assert!(!dest.join("b").exists());
        let (_t2, dest2, _v2) = setup();
        let few = Limits {
            bytes: 1 << 20,
            entries: 2,
        };
        let tar = tar_of(&[
            E::Dir("a/", 0o755, 0),
            E::Dir("b/", 0o755, 0),
            E::Dir("c/", 0o755, 0),
        ]);
        let err = unpack(&tar[..], &dest2, "sha256:abc", false, few).unwrap_err();
        assert!(err.to_string().contains("more than 2 entries"), "{err}");
    }
}
