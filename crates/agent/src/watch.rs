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

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use dwell_proto::{Control, ErrorKind, Event, FsChange, RemoteError};
use tokio::io::Interest;

use crate::conn::{ClientMsg, StreamCtx};
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

/// Events made up for what a directory that joins a recursive watch
/// already holds (see [`Tree::add_tree`]); beyond this it is not reported.
pub const MAX_SCANNED: usize = 4096;

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
    /// With `scan`, also collects what the new directories already hold
    /// (listed after their watch is added, so nothing falls between the
    /// listing and the watch): `create` for every entry and `write` for
    /// every non-empty regular file, at most [`MAX_SCANNED`] events.
    fn add_tree(
        &mut self,
        rel: &Path,
        mut scan: Option<&mut Vec<(PathBuf, FsChange)>>,
    ) -> Result<(), AddError> {
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
                let Ok(t) = e.file_type() else { continue };
                let child = rel.join(e.file_name());
                if let Some(out) = scan.as_deref_mut() {
                    if out.len() + 2 <= MAX_SCANNED {
                        out.push((child.clone(), FsChange::Create));
                        if t.is_file() && e.metadata().is_ok_and(|m| m.len() > 0) {
                            out.push((child.clone(), FsChange::Write));
                        }
                    }
                }
                if t.is_dir() {
                    todo.push(child);
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
        tree.add_tree(Path::new(""), None)
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

/// Why a watch loop stops: the client went away, or the stream ends with
/// this outcome.
enum Stop {
    Gone,
    End(Result<(), RemoteError>),
}

/// A running watch: its tree, and the `create` events a scan made up
/// whose real twin may still be in the kernel's queue.
struct Watch {
    path: String,
    recursive: bool,
    tree: Tree,
    scanned: HashSet<PathBuf>,
}

impl Watch {
    async fn send(
        &mut self,
        ctx: &mut StreamCtx,
        rel: &Path,
        change: FsChange,
    ) -> Result<(), Stop> {
        let e = Event::Fs {
            name: rel.to_string_lossy().into_owned(),
            change,
        };
        ctx.event(&e).await.map_err(|_| Stop::Gone)
    }

    /// Handles one read of inotify events.
    async fn batch(&mut self, ctx: &mut StreamCtx, buf: &[u8]) -> Result<(), Stop> {
        let n = buf.len();
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
                return Err(Stop::End(Err(RemoteError::new(
                    ErrorKind::Other,
                    format!("watch {}: the kernel's event queue overflowed and events were lost; watch again (fewer changes at once, or a smaller tree)", self.path),
                ))));
            }
            let Some(dir) = self.tree.dirs.get(&ev.wd).cloned() else {
                continue;
            };
            if ev.mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0
                && dir.as_os_str().is_empty()
            {
                return Err(Stop::End(Ok(()))); // the watched directory itself went away
            }
            if ev.mask & libc::IN_IGNORED != 0 {
                self.tree.dirs.remove(&ev.wd);
                continue;
            }
            if name.is_empty() {
                continue;
            }
            let rel = dir.join(name);
            let Some(change) = change_of(ev.mask) else {
                continue;
            };
            match change {
                // A scan already reported it (and watched it, if a directory).
                FsChange::Create if self.scanned.remove(&rel) => continue,
                FsChange::Remove | FsChange::Rename => {
                    self.scanned.remove(&rel);
                }
                _ => {}
            }
            let mut found = Vec::new();
            if self.recursive
                && ev.mask & libc::IN_ISDIR != 0
                && ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0
            {
                // Files may have been made in the new directory before its
                // watch was added: report what it holds once it is watched.
                let sub = rel.clone();
                let placeholder = Tree {
                    fd: self.tree.fd,
                    root: PathBuf::new(),
                    dirs: HashMap::new(),
                };
                let mut tree = std::mem::replace(&mut self.tree, placeholder);
                let r = crate::files::blocking(move || {
                    let mut found = Vec::new();
                    let r = tree.add_tree(&sub, Some(&mut found));
                    Ok((tree, r, found))
                })
                .await;
                let (t, r, f) = r.map_err(|e| Stop::End(Err(e)))?;
                self.tree = t;
                if let Err(AddError::TooMany) = r {
                    return Err(Stop::End(Err(too_many(&self.path))));
                }
                found = f;
            }
            self.send(ctx, &rel, change).await?;
            for (p, c) in found {
                if c == FsChange::Create {
                    self.scanned.insert(p.clone());
                }
                self.send(ctx, &p, c).await?;
            }
        }
        Ok(())
    }

    /// Handles every event the kernel has queued, without waiting. Any
    /// real twin of a made-up `create` was queued before this returns, so
    /// the made-up ones are forgotten.
    async fn drain(&mut self, ctx: &mut StreamCtx, fd: &Fd, buf: &mut [u8]) -> Result<(), Stop> {
        loop {
            match fd.read_now(buf) {
                Ok(None | Some(0)) => break,
                Ok(Some(n)) => self.batch(ctx, &buf[..n]).await?,
                Err(e) => {
                    return Err(Stop::End(Err(RemoteError::from_io(
                        "read inotify events",
                        &e,
                    ))))
                }
            }
        }
        self.scanned.clear();
        Ok(())
    }
}

/// Runs a watch until the client cancels it or the directory goes away.
/// With `flush`, the client may send `Control::Flush`, answered (after
/// every event the kernel queued before it) by `Event::Flushed`.
pub async fn watch(mut ctx: StreamCtx, path: String, recursive: bool, flush: bool) {
    // Walking a large tree takes long: not on the agent's event loop.
    let p = path.clone();
    let (owned, tree) = match crate::files::blocking(move || setup(&p, recursive)).await {
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
    if ctx.event(&Event::Watching { flush }).await.is_err() {
        return;
    }
    let mut w = Watch {
        path,
        recursive,
        tree,
        scanned: HashSet::new(),
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let r = tokio::select! {
            m = ctx.inbound.recv() => match m {
                None => return, // cancelled or disconnected
                Some(ClientMsg::Control(Control::Flush { seq })) if flush => {
                    match w.drain(&mut ctx, &fd, &mut buf).await {
                        Ok(()) => ctx.event(&Event::Flushed { seq }).await.map_err(|_| Stop::Gone),
                        Err(s) => Err(s),
                    }
                }
                Some(_) => continue,
            },
            r = fd.read(&mut buf) => match r {
                Ok(n) => {
                    let r = w.batch(&mut ctx, &buf[..n]).await;
                    match r {
                        Ok(()) => w.drain(&mut ctx, &fd, &mut buf).await,
                        Err(s) => Err(s),
                    }
                }
                Err(e) => Err(Stop::End(Err(RemoteError::from_io("read inotify events", &e)))),
            },
        };
        match r {
            Ok(()) => {}
            Err(Stop::Gone) => return,
            Err(Stop::End(o)) => return ctx.end(o).await,
        }
    }
}
