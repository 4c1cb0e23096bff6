//! Directory watches on inotify: `watch` sends `Watching`, then one `fs`
//! event per change (names relative to the watched directory) until the
//! client cancels the stream. With `recursive`, every subdirectory is
//! watched too, including ones created later. The watch ends by itself
//! (an `ok` End) when the watched directory is deleted or moved.

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

    /// Watches `rel` and every directory below it (best effort below the top).
    fn add_tree(&mut self, rel: &Path) -> io::Result<()> {
        self.add(rel)?;
        let Ok(rd) = std::fs::read_dir(self.root.join(rel)) else {
            return Ok(());
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = self.add_tree(&rel.join(e.file_name()));
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
        tree.add(Path::new(""))
    };
    r.map_err(|e| RemoteError::from_io(&format!("watch {path}"), &e))?;
    Ok((owned, tree))
}

/// Runs a watch until the client cancels it or the directory goes away.
pub async fn watch(mut ctx: StreamCtx, path: String, recursive: bool) {
    let (owned, mut tree) = match setup(&path, recursive) {
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
                let _ = tree.add_tree(&rel);
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
