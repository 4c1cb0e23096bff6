//! Directory watches on inotify: `watch` sends `Watching`, then one `fs`
//! event per change (names relative to the watched directory) until the
//! client cancels the stream. With `recursive`, every subdirectory is
//! watched too, including ones created later; the tree is walked on the
//! blocking pool (never on the agent's event loop), pseudo filesystems
//! (`/proc`, `/sys`, `/dev` and the like) are not descended into, and one
//! watch covers at most [`MAX_WATCHES`] directories. The watch ends by
//! itself (an `ok` End) when the watched directory is deleted or moved, and
//! with an error when the kernel's event queue overflowed (events were
//! lost) or the tree outgrew [`MAX_WATCHES`].

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use dwell_proto::{ErrorKind, Event, FsChange, RemoteError};
use tokio::io::Interest;

use crate::conn::StreamCtx;
use crate::fdio::Fd;

const MASK: u32 = libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// Directories one watch may cover.
pub const MAX_WATCHES: usize = 8192;

/// Paths under which a recursive watch does not descend.
const PSEUDO_PATHS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Whether the directory at `p` is on a pseudo file system (proc, sysfs,
/// cgroup, devpts, debugfs, tracefs, securityfs).
fn is_pseudo(p: &Path) -> bool {
    if PSEUDO_PATHS
        .iter()
        .any(|x| p == Path::new(x) || p.starts_with(x))
    {
        return true;
    }
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid path; st is written by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    matches!(
        st.f_type as i64,
        0x9fa0 // proc
            | 0x6265_6572 // sysfs
            | 0x0027_e0eb // cgroup
            | 0x6367_7270 // cgroup2
            | 0x1cd1 // devpts
            | 0x6462_6720 // debugfs
            | 0x7472_6163 // tracefs
            | 0x7363_6673 // securityfs
    )
}

/// Why a tree could not be (fully) watched.
enum AddError {
    Io(io::Error),
    TooMany,
}

/// Watch descriptors and the directory (relative to the root) each watches.
struct Tree {
    fd: RawFd,
    root: PathBuf,
    dirs: HashMap<i32, PathBuf>,
}

impl Tree {
    fn add(&mut self, rel: &Path) -> io::Result<()> {
        let full = self.root.join(rel);
        let c = CString::new(full.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: c is a valid NUL-terminated path; fd is our inotify instance.
        let wd = unsafe { libc::inotify_add_watch(self.fd, c.as_ptr(), MASK | libc::IN_ONLYDIR) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        self.dirs.insert(wd, rel.to_path_buf());
        Ok(())
    }

    /// Watches `rel` and every directory below it (best effort below the
    /// top), iteratively; fails once [`MAX_WATCHES`] directories are watched.
    fn add_tree(&mut self, rel: &Path) -> Result<(), AddError> {
        let mut todo = vec![rel.to_path_buf()];
        let mut top = true;
        while let Some(rel) = todo.pop() {
            if self.dirs.len() >= MAX_WATCHES {
                return Err(AddError::TooMany);
            }
            let full = self.root.join(&rel);
            if !top && is_pseudo(&full) {
                continue;
            }
            match self.add(&rel) {
                Ok(()) => {}
                Err(e) if top => return Err(AddError::Io(e)),
                Err(_) => continue,
            }
            top = false;
            let Ok(rd) = std::fs::read_dir(&full) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(rel.join(e.file_name()));
                }
            }
        }
        Ok(())
    }
}

fn change_of(mask: u32) -> Option<FsChange> {
    if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
        Some(FsChange::Create)
    } else if mask & libc::IN_MODIFY != 0 {
        Some(FsChange::Write)
    } else if mask & libc::IN_DELETE != 0 {
        Some(FsChange::Remove)
    } else if mask & libc::IN_MOVED_FROM != 0 {
        Some(FsChange::Rename)
    } else if mask & libc::IN_ATTRIB != 0 {
        Some(FsChange::Chmod)
    } else {
        None
    }
}

fn setup(path: &str, recursive: bool) -> Result<(OwnedFd, Tree), RemoteError> {
    let md =
        std::fs::metadata(path).map_err(|e| RemoteError::from_io(&format!("watch {path}"), &e))?;
    if !md.is_dir() {
        return Err(RemoteError::new(
            ErrorKind::NotADirectory,
            format!("watch {path}: not a directory"),
        ));
    }
    // SAFETY: plain syscall; the descriptor is owned below.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(RemoteError::from_io("inotify_init1", &e));
    }
    // SAFETY: fd was just returned by inotify_init1 and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut tree = Tree {
        fd,
        root: PathBuf::from(path),
        dirs: HashMap::new(),
    };
    let r = if recursive {
        tree.add_tree(Path::new(""))
    } else {
        tree.add(Path::new("")).map_err(AddError::Io)
    };
    match r {
        Ok(()) => Ok((owned, tree)),
        Err(AddError::Io(e)) => Err(RemoteError::from_io(&format!("watch {path}"), &e)),
        Err(AddError::TooMany) => Err(too_many(path)),
    }
}

fn too_many(path: &str) -> RemoteError {
    RemoteError::new(
        ErrorKind::InvalidArgument,
        format!("watch {path}: more than {MAX_WATCHES} directories to watch; watch a subdirectory, or not recursively"),
    )
}

/// Runs a watch until the client cancels it or the directory goes away.
pub async fn watch(mut ctx: StreamCtx, path: String, recursive: bool) {
    // Walking a large tree takes long: not on the agent's event loop.
    let p = path.clone();
    let (owned, mut tree) = match crate::files::blocking(move || setup(&p, recursive)).await {
        Ok(v) => v,
        Err(e) => return ctx.end::<()>(Err(e)).await,
    };
    let fd = match Fd::new(owned, Interest::READABLE) {
        Ok(f) => f,
        Err(e) => {
            return ctx
                .end::<()>(Err(RemoteError::from_io("inotify", &e)))
                .await
        }
    };
    if ctx.event(&Event::Watching).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            m = ctx.inbound.recv() => match m {
                None => return, // cancelled or disconnected
                Some(_) => continue,
            },
            r = fd.read(&mut buf) => match r {
                Ok(n) => n,
                Err(e) => return ctx.end::<()>(Err(RemoteError::from_io("read inotify events", &e))).await,
            },
        };
        let mut off = 0;
        let hdr = std::mem::size_of::<libc::inotify_event>();
        while off + hdr <= n {
            // SAFETY: the kernel wrote a whole inotify_event at `off`; read_unaligned copes with alignment.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            let name_bytes = &buf[off + hdr..(off + hdr + ev.len as usize).min(n)];
            off += hdr + ev.len as usize;
            let end = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let name = std::ffi::OsStr::from_bytes(&name_bytes[..end]);
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                let e = RemoteError::new(
                    ErrorKind::Other,
                    format!("watch {path}: the kernel's event queue overflowed and events were lost; watch again (fewer changes at once, or a smaller tree)"),
                );
                return ctx.end::<()>(Err(e)).await;
            }
            let Some(dir) = tree.dirs.get(&ev.wd).cloned() else {
                continue;
            };
            if ev.mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0
                && dir.as_os_str().is_empty()
            {
                return ctx.end(Ok(())).await; // the watched directory itself went away
            }
            if ev.mask & libc::IN_IGNORED != 0 {
                tree.dirs.remove(&ev.wd);
                continue;
            }
            if name.is_empty() {
                continue;
            }
            let rel = dir.join(name);
            if recursive
                && ev.mask & libc::IN_ISDIR != 0
                && ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0
            {
                let sub = rel.clone();
                let r = crate::files::blocking(move || {
                    let r = tree.add_tree(&sub);
                    Ok((tree, r))
                })
                .await;
                let (t, r) = match r {
                    Ok(v) => v,
                    Err(e) => return ctx.end::<()>(Err(e)).await,
                };
                tree = t;
                if let Err(AddError::TooMany) = r {
                    return ctx.end::<()>(Err(too_many(&path))).await;
                }
            }
            let Some(change) = change_of(ev.mask) else {
                continue;
            };
            let e = Event::Fs {
                name: rel.to_string_lossy().into_owned(),
                change,
            };
            if ctx.event(&e).await.is_err() {
                return;
            }
        }
    }
}
