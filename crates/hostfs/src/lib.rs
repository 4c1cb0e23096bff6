//! Host-side file access beneath a root the daemon does not trust.
//!
//! The daemon runs as host root; a sandbox is root inside and can write its
//! volume's upper dirs (and anything else bound into it). Whatever it
//! plants there — a symlink to `/etc/shadow`, to `/dev/zero`, to
//! `/proc/self/root`, a fifo, a device node, a file of 100 GiB — must not
//! turn a host-side read, list, chown, rename or delete into one of a host
//! file, a hang or an out-of-memory. Every such access goes through a
//! [`Beneath`]: a directory fd for the root, and paths resolved beneath it
//! by the kernel with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)`, or, where `openat2` is missing (ENOSYS), one
//! `openat(O_NOFOLLOW)` per component. Rules:
//!
//! - no symlink is followed, anywhere in a path (not even one that would
//!   stay beneath the root): the error says so;
//! - paths are relative and hold no `..`;
//! - files are opened `O_NONBLOCK | O_NOCTTY` and checked with `fstat`
//!   before a byte is read: fifos, sockets and devices are refused;
//! - every read has a size cap ([`Beneath::read_capped`]);
//! - operations on a last component (stat, remove, rename, chown, mkdir)
//!   work on a resolved parent dir fd with the `*at` calls and
//!   `AT_SYMLINK_NOFOLLOW`, so a symlink is acted on as itself;
//! - [`Beneath::remove_tree`] never crosses a mount point.
//!
//! The root itself is opened with `O_NOFOLLOW` and must be a path the
//! daemon owns (e.g. `<volume>/root/upper`, not anything inside it).

mod dir;
mod error;
mod resolve;

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

pub use dir::{Entry, ReadDir};
pub use error::{Error, Reason, Result};
pub use resolve::Resolver;

/// What kind of file a path is (never following a symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    fn of(mode: libc::mode_t) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            _ => FileKind::BlockDevice,
        }
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::File => "regular file",
            FileKind::Dir => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::CharDevice => "character device",
            FileKind::BlockDevice => "block device",
        })
    }
}

/// The metadata of a path, as `lstat` sees it.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub kind: FileKind,
    /// Permission bits (without the file type).
    pub mode: u32,
    pub size: u64,
    /// Bytes allocated on disk.
    pub allocated: u64,
    pub uid: u32,
    pub gid: u32,
    pub dev: u64,
    pub ino: u64,
    /// The device number of a device node (0 for an overlay whiteout).
    pub rdev: u64,
    /// Last modification, seconds since the Unix epoch.
    pub mtime: i64,
}

impl Stat {
    fn from(st: &libc::stat) -> Stat {
        Stat {
            kind: FileKind::of(st.st_mode),
            mode: st.st_mode & 0o7777,
            size: st.st_size as u64,
            allocated: st.st_blocks as u64 * 512,
            uid: st.st_uid,
            gid: st.st_gid,
            dev: st.st_dev,
            ino: st.st_ino,
            rdev: st.st_rdev,
            mtime: st.st_mtime,
        }
    }

    /// Whether this is an overlayfs whiteout (a 0:0 character device).
    pub fn is_whiteout(&self) -> bool {
        self.kind == FileKind::CharDevice && self.rdev == 0
    }
}

/// The most directories [`Beneath::remove_tree`] holds open at once.
pub const MAX_OPEN_DIRS: usize = 32;

/// A root directory and every access beneath it, symlinks never followed.
#[derive(Debug)]
pub struct Beneath {
    fd: OwnedFd,
    root: PathBuf,
    resolver: Resolver,
}

impl Beneath {
    /// Open the root `root` (its last component must not be a symlink).
    pub fn open(root: impl AsRef<Path>) -> Result<Beneath> {
        Beneath::open_with(root, Resolver::detect())
    }

    /// [`Beneath::open`] with a chosen resolver (tests run both).
    pub fn open_with(root: impl AsRef<Path>, resolver: Resolver) -> Result<Beneath> {
        let root = root.as_ref().to_path_buf();
        let fail = |r| Error::new("open", root.clone(), r);
        let c = resolve::cstr(root.as_os_str()).map_err(fail)?;
        // SAFETY: a valid C string.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let errno = resolve::errno();
            let link = std::fs::symlink_metadata(&root).is_ok_and(|m| m.file_type().is_symlink());
            return Err(fail(if link {
                Reason::Symlink
            } else {
                resolve::reason(errno)
            }));
        }
        // SAFETY: a new descriptor we own.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Beneath { fd, root, resolver })
    }

    /// The host path of the root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The resolver in use.
    pub fn resolver(&self) -> Resolver {
        self.resolver
    }

    /// The host path of `rel` (for messages).
    pub fn host_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        if rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    fn err(&self, op: &'static str, rel: &Path, reason: Reason) -> Error {
        Error::new(op, self.host_path(rel), reason)
    }

    fn resolve(
        &self,
        op: &'static str,
        rel: &Path,
        flags: libc::c_int,
        mode: libc::mode_t,
    ) -> Result<OwnedFd> {
        let names = resolve::components(rel).map_err(|r| self.err(op, rel, r))?;
        resolve::open(self.resolver, self.fd.as_raw_fd(), &names, flags, mode)
            .map_err(|r| self.err(op, rel, r))
    }

    /// The dir fd holding the last component of `rel`, and that component.
    fn parent(&self, op: &'static str, rel: &Path) -> Result<(OwnedFd, CString)> {
        let mut names = resolve::components(rel).map_err(|r| self.err(op, rel, r))?;
        let Some(last) = names.pop() else {
            return Err(self.err(op, rel, Reason::Escape));
        };
        let dir = resolve::open(
            self.resolver,
            self.fd.as_raw_fd(),
            &names,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .map_err(|r| self.err(op, rel, r))?;
        Ok((dir, last))
    }

    /// Flush the root directory itself to disk (`fsync` of its fd).
    pub fn sync(&self) -> Result<()> {
        // SAFETY: fsync of a directory fd we own.
        if unsafe { libc::fsync(self.fd.as_raw_fd()) } != 0 {
            return Err(self.err("sync", Path::new(""), last_io()));
        }
        Ok(())
    }

    /// The directory `rel` as a root of its own.
    pub fn open_dir(&self, rel: impl AsRef<Path>) -> Result<Beneath> {
        let rel = rel.as_ref();
        let fd = self.resolve("open", rel, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        Ok(Beneath {
            fd,
            root: self.host_path(rel),
            resolver: self.resolver,
        })
    }

    /// An `O_PATH` descriptor of `rel`, whatever its kind (a socket, say),
    /// reached without following a symlink (a trailing symlink gives the
    /// link itself): for checking with `fstat` and using through
    /// `/proc/self/fd/N`, never for reading.
    pub fn open_path(&self, rel: impl AsRef<Path>) -> Result<OwnedFd> {
        self.resolve("open", rel.as_ref(), libc::O_PATH, 0)
    }

    /// Open the regular file `rel` for reading. Fifos, sockets and devices
    /// are refused before anything is read (the open itself cannot block:
    /// `O_NONBLOCK | O_NOCTTY`).
    pub fn open_file(&self, rel: impl AsRef<Path>) -> Result<File> {
        let rel = rel.as_ref();
        let fd = self.resolve(
            "open",
            rel,
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
            0,
        )?;
        let st = fstat(fd.as_raw_fd()).map_err(|r| self.err("open", rel, r))?;
        match st.kind {
            FileKind::File => Ok(File::from(fd)),
            FileKind::Dir => Err(self.err(
                "open",
                rel,
                Reason::WrongKind {
                    want: "regular file",
                    got: FileKind::Dir,
                },
            )),
            k => Err(self.err("open", rel, Reason::Special(k))),
        }
    }

    /// The contents of the regular file `rel`, refused when larger than
    /// `cap` bytes (the file may grow while read: at most `cap` bytes are
    /// ever held).
    pub fn read_capped(&self, rel: impl AsRef<Path>, cap: u64) -> Result<Vec<u8>> {
        let rel = rel.as_ref();
        let f = self.open_file(rel)?;
        let mut out = Vec::new();
        f.take(cap.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| self.err("read", rel, Reason::Io(e)))?;
        if out.len() as u64 > cap {
            return Err(self.err("read", rel, Reason::TooLarge { cap }));
        }
        Ok(out)
    }

    /// [`Beneath::read_capped`] as UTF-8 (invalid sequences replaced).
    pub fn read_string_capped(&self, rel: impl AsRef<Path>, cap: u64) -> Result<String> {
        let bytes = self.read_capped(rel, cap)?;
        Ok(String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// The entries of the directory `rel` (without `.` and `..`), each with
    /// its `lstat`.
    pub fn read_dir(&self, rel: impl AsRef<Path>) -> Result<ReadDir> {
        let rel = rel.as_ref();
        let fd = self.resolve("list", rel, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        ReadDir::new(fd, self.host_path(rel)).map_err(|r| self.err("list", rel, r))
    }

    /// `lstat` of `rel` (the root itself for an empty path).
    pub fn stat(&self, rel: impl AsRef<Path>) -> Result<Stat> {
        let rel = rel.as_ref();
        if resolve::components(rel).is_ok_and(|c| c.is_empty()) {
            return fstat(self.fd.as_raw_fd()).map_err(|r| self.err("stat", rel, r));
        }
        let (dir, name) = self.parent("stat", rel)?;
        fstatat(dir.as_raw_fd(), &name).map_err(|r| self.err("stat", rel, r))
    }

    /// `lstat` of `rel`, `None` when it (or a directory on the way) does not
    /// exist.
    pub fn try_stat(&self, rel: impl AsRef<Path>) -> Result<Option<Stat>> {
        match self.stat(rel) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Remove the file, symlink or empty directory `rel` (a symlink itself,
    /// never its target).
    pub fn remove(&self, rel: impl AsRef<Path>) -> Result<()> {
        let rel = rel.as_ref();
        let (dir, name) = self.parent("remove", rel)?;
        let st = fstatat(dir.as_raw_fd(), &name).map_err(|r| self.err("remove", rel, r))?;
        let flags = if st.kind == FileKind::Dir {
            libc::AT_REMOVEDIR
        } else {
            0
        };
        unlinkat(dir.as_raw_fd(), &name, flags).map_err(|r| self.err("remove", rel, r))
    }

    /// Remove `rel` and everything beneath it, never following a symlink
    /// and never crossing into another filesystem (a mount point below is
    /// an error, and nothing of it is touched).
    pub fn remove_tree(&self, rel: impl AsRef<Path>) -> Result<()> {
        let rel = rel.as_ref();
        let st = self.stat(rel)?;
        if st.kind != FileKind::Dir {
            return self.remove(rel);
        }
        let top = fstat(self.fd.as_raw_fd()).map_err(|r| self.err("remove", rel, r))?;
        if st.dev != top.dev {
            return Err(self.err("remove", rel, Reason::MountPoint));
        }
        let sub = self.open_dir(rel)?;
        sub.empty_dir(top.dev)?;
        self.remove(rel)
    }

    /// Remove everything in this root, staying on device `dev`. Iterative,
    /// with at most [`MAX_OPEN_DIRS`] dirs open: a sandbox chooses the depth
    /// of its trees, so a dir deeper than that is first moved up to this
    /// root (a rename between two open dir fds, no path resolved) and
    /// emptied from there.
    fn empty_dir(&self, dev: u64) -> Result<()> {
        // (dir, its name in the dir below it on the stack)
        let mut stack: Vec<(Beneath, std::ffi::OsString)> =
            vec![(self.open_dir("")?, std::ffi::OsString::new())];
        let mut moved = 0u64;
        while let Some((top, _)) = stack.last() {
            let mut descend = None;
            let mut removed = false;
            for e in top.read_dir("")? {
                let e = e?;
                let name = Path::new(&e.name);
                if e.stat.dev != dev {
                    return Err(top.err("remove", name, Reason::MountPoint));
                }
                if e.stat.kind == FileKind::Dir {
                    descend = Some(e.name);
                    break;
                }
                top.remove(name)?;
                removed = true;
            }
            match descend {
                Some(name) if stack.len() >= MAX_OPEN_DIRS => {
                    moved += 1;
                    self.move_up(top, &name, moved)?;
                }
                Some(name) => {
                    let sub = top.open_dir(&name)?;
                    stack.push((sub, name));
                }
                // Entries removed while listing may hide others: list again.
                None if removed => {}
                None => {
                    let (_, name) = stack.pop().expect("not empty");
                    if let Some((parent, _)) = stack.last() {
                        parent.remove(&name)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Move the dir `name` of `from` to this root under a fresh name.
    fn move_up(&self, from: &Beneath, name: &std::ffi::OsStr, n: u64) -> Result<()> {
        let src = resolve::cstr(name).map_err(|r| from.err("remove", Path::new(name), r))?;
        let dst = CString::new(format!(".dwell-deep-{}-{n}", std::process::id()))
            .expect("no NUL in a number");
        // SAFETY: two open dir fds and valid C strings.
        let rc = unsafe {
            libc::renameat(
                from.as_raw_fd(),
                src.as_ptr(),
                self.as_raw_fd(),
                dst.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(from.err("remove", Path::new(name), last_io()));
        }
        Ok(())
    }

    /// Rename `from` to `to` (both beneath this root); a symlink is moved as
    /// itself.
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        let (fd, fname) = self.parent("rename", from)?;
        let (td, tname) = self.parent("rename", to)?;
        // SAFETY: valid dir fds and C strings.
        let rc = unsafe {
            libc::renameat(
                fd.as_raw_fd(),
                fname.as_ptr(),
                td.as_raw_fd(),
                tname.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(self.err("rename", from, last_io()));
        }
        Ok(())
    }

    /// Change the owner of `rel` (a symlink itself, never its target).
    pub fn chown(&self, rel: impl AsRef<Path>, uid: u32, gid: u32) -> Result<()> {
        let rel = rel.as_ref();
        let (dir, name) = self.parent("chown", rel)?;
        // SAFETY: a valid dir fd and C string.
        let rc = unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                name.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(self.err("chown", rel, last_io()));
        }
        Ok(())
    }

    /// The target of the symlink `rel` (read as text, never followed),
    /// refused when longer than `cap` bytes.
    pub fn read_link(&self, rel: impl AsRef<Path>, cap: usize) -> Result<std::ffi::OsString> {
        use std::os::unix::ffi::OsStringExt;
        let rel = rel.as_ref();
        let (dir, name) = self.parent("readlink", rel)?;
        let mut buf = vec![0u8; cap.saturating_add(1)];
        // SAFETY: a valid dir fd, C string and buffer of the given length.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(self.err("readlink", rel, last_io()));
        }
        let n = n as usize;
        if n > cap {
            return Err(self.err("readlink", rel, Reason::TooLarge { cap: cap as u64 }));
        }
        buf.truncate(n);
        Ok(std::ffi::OsString::from_vec(buf))
    }

    /// The extended attribute `attr` of the directory `rel` (the root for
    /// an empty path), `None` when it has none; values over 4 KiB are
    /// refused. A symlink or a special file is refused, never followed.
    pub fn dir_xattr(&self, rel: impl AsRef<Path>, attr: &str) -> Result<Option<Vec<u8>>> {
        let rel = rel.as_ref();
        let fd = self.resolve("getxattr", rel, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let attr_c = CString::new(attr).map_err(|_| self.err("getxattr", rel, Reason::Escape))?;
        let mut buf = vec![0u8; 4096];
        // SAFETY: a valid fd, C string and buffer of the given length.
        let n = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                attr_c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
                Some(libc::ERANGE) => {
                    Err(self.err("getxattr", rel, Reason::TooLarge { cap: 4096 }))
                }
                _ => Err(self.err("getxattr", rel, Reason::Io(e))),
            };
        }
        buf.truncate(n as usize);
        Ok(Some(buf))
    }

    /// Create the directory `rel` (its parent must exist).
    pub fn mkdir(&self, rel: impl AsRef<Path>, mode: u32) -> Result<()> {
        let rel = rel.as_ref();
        let (dir, name) = self.parent("create", rel)?;
        // SAFETY: a valid dir fd and C string.
        if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) } != 0 {
            return Err(self.err("create", rel, last_io()));
        }
        Ok(())
    }

    /// Create the new regular file `rel` for writing with `mode`; fails when
    /// anything (a symlink included) already has that name.
    pub fn create(&self, rel: impl AsRef<Path>, mode: u32) -> Result<File> {
        let rel = rel.as_ref();
        let fd = self.resolve(
            "create",
            rel,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY,
            mode,
        )?;
        Ok(File::from(fd))
    }
}

/// Remove the tree at `path` like [`Beneath::remove_tree`]: no symlink in
/// it followed, no mount point crossed. The parent of `path` must be a
/// directory the daemon owns (e.g. `<data-dir>/sandboxes` for a state dir).
pub fn remove_tree(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::new("remove", path.to_path_buf(), Reason::Escape));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    Beneath::open(parent)?.remove_tree(name)
}

impl AsRawFd for Beneath {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn fstat(fd: RawFd) -> std::result::Result<Stat, Reason> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid fd and a buffer the kernel fills.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return Err(last_io());
    }
    // SAFETY: fstat succeeded.
    Ok(Stat::from(unsafe { &st.assume_init() }))
}

fn last_io() -> Reason {
    Reason::Io(std::io::Error::last_os_error())
}

pub(crate) fn fstatat(dir: RawFd, name: &CString) -> std::result::Result<Stat, Reason> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid dir fd, C string and buffer.
    let rc = unsafe {
        libc::fstatat(
            dir,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(last_io());
    }
    // SAFETY: fstatat succeeded.
    Ok(Stat::from(unsafe { &st.assume_init() }))
}

fn unlinkat(dir: RawFd, name: &CString, flags: libc::c_int) -> std::result::Result<(), Reason> {
    // SAFETY: a valid dir fd and C string.
    if unsafe { libc::unlinkat(dir, name.as_ptr(), flags) } != 0 {
        return Err(last_io());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
