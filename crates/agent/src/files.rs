//! File operations, executed inside the sandbox so that every path names one
//! of the sandbox's own files. Blocking file system calls run on tokio's
//! blocking pool; reads and writes are streamed in chunks.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use bytes::Bytes;
use dwell_proto::frame::{Kind, DATA_CHUNK};
use dwell_proto::{ErrorKind, Event, FileInfo, FileKind, RemoteError, WriteOptions, XattrSet};

use crate::conn::{ClientMsg, StreamCtx};

/// Runs `f` on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RemoteError> + Send + 'static,
) -> Result<T, RemoteError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(RemoteError::new(
            ErrorKind::Io,
            format!("file operation task failed: {e}"),
        ))
    })
}

fn ctx_err(op: &str, path: &str, e: std::io::Error) -> RemoteError {
    RemoteError::from_io(&format!("{op} {path}"), &e)
}

fn file_info(path: &Path, md: &fs::Metadata, xattrs: Option<&str>) -> FileInfo {
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into()),
        path: path.to_string_lossy().into_owned(),
        kind,
        size: md.len(),
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        modified_ms: md.mtime() * 1000 + md.mtime_nsec() / 1_000_000,
        symlink_target: ft.is_symlink().then(|| {
            fs::read_link(path)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        target_kind: if ft.is_symlink() {
            fs::metadata(path).ok().map(|t| {
                let t = t.file_type();
                if t.is_dir() {
                    FileKind::Dir
                } else if t.is_file() {
                    FileKind::File
                } else {
                    FileKind::Other
                }
            })
        } else {
            None
        },
        xattrs: match xattrs {
            Some(prefix) if !ft.is_symlink() => crate::xattr::read(path, prefix),
            _ => Default::default(),
        },
    }
}

/// Metadata of `path` (not following symlinks), with its extended
/// attributes under `xattrs` when asked.
pub fn stat(path: &str, xattrs: Option<&str>) -> Result<FileInfo, RemoteError> {
    let md = fs::symlink_metadata(path).map_err(|e| ctx_err("stat", path, e))?;
    Ok(file_info(Path::new(path), &md, xattrs))
}

/// Bytes of entries one listing may return: its answer must fit in one
/// frame ([`dwell_proto::frame::MAX_PAYLOAD`]) with room to spare.
pub const MAX_LIST_BYTES: usize = 900 << 10;

/// A listing being built, with its encoded size so far.
struct Listing {
    entries: Vec<FileInfo>,
    bytes: usize,
    root: String,
    /// The extended attribute prefix to report, if any.
    xattrs: Option<String>,
}

impl Listing {
    fn push(&mut self, fi: FileInfo) -> Result<(), RemoteError> {
        self.bytes += serde_json::to_vec(&fi).map_or(256, |v| v.len()) + 1;
        if self.bytes > MAX_LIST_BYTES {
            return Err(RemoteError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "list {}: too many entries ({} listed so far, over {} KiB); list a subdirectory or lower the depth",
                    self.root,
                    self.entries.len(),
                    MAX_LIST_BYTES >> 10
                ),
            ));
        }
        self.entries.push(fi);
        Ok(())
    }
}

fn walk(dir: &Path, depth: u32, out: &mut Listing) -> Result<(), RemoteError> {
    let shown = dir.to_string_lossy();
    let rd = fs::read_dir(dir).map_err(|e| ctx_err("list", &shown, e))?;
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue; // vanished while listing
        };
        let is_dir = md.file_type().is_dir();
        let fi = file_info(&p, &md, out.xattrs.as_deref());
        out.push(fi)?;
        if is_dir && depth > 1 {
            // Unreadable subdirectories are listed but not descended into;
            // a listing that grows too large fails as a whole.
            match walk(&p, depth - 1, out) {
                Err(e) if out.bytes > MAX_LIST_BYTES => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Entries of a directory, `depth` levels deep (0 counts as 1), with
/// their extended attributes under `xattrs` when asked.
pub fn list_dir(
    path: &str,
    depth: u32,
    xattrs: Option<String>,
) -> Result<Vec<FileInfo>, RemoteError> {
    let md = fs::metadata(path).map_err(|e| ctx_err("list", path, e))?;
    if !md.is_dir() {
        return Err(RemoteError::new(
            ErrorKind::NotADirectory,
            format!("list {path}: not a directory"),
        ));
    }
    let mut out = Listing {
        entries: Vec::new(),
        bytes: 0,
        root: path.to_string(),
        xattrs,
    };
    walk(Path::new(path), depth.max(1), &mut out)?;
    Ok(out.entries)
}

/// Creates a directory; with `parents`, missing parents too and no error if it exists.
pub fn mkdir(path: &str, parents: bool) -> Result<(), RemoteError> {
    let r = if parents {
        fs::create_dir_all(path)
    } else {
        fs::create_dir(path)
    };
    r.map_err(|e| ctx_err("mkdir", path, e))
}

/// Changes the owner of `path` (a symlink itself, not its target).
pub fn chown(path: &str, uid: u32, gid: u32) -> Result<(), RemoteError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| ctx_err("chown", path, e))
}

/// Removes a file, symlink or (empty, unless `recursive`) directory.
pub fn remove(path: &str, recursive: bool) -> Result<(), RemoteError> {
    let md = fs::symlink_metadata(path).map_err(|e| ctx_err("remove", path, e))?;
    let r = if md.is_dir() {
        if recursive {
            fs::remove_dir_all(path)
        } else {
            fs::remove_dir(path)
        }
    } else {
        fs::remove_file(path)
    };
    r.map_err(|e| ctx_err("remove", path, e))
}

/// Renames `from` to `to`.
pub fn rename(from: &str, to: &str) -> Result<(), RemoteError> {
    fs::rename(from, to).map_err(|e| ctx_err("rename", &format!("{from} -> {to}:"), e))
}

/// Streams a file to the client.
pub async fn read(ctx: StreamCtx, path: String) {
    let p = path.clone();
    let opened = blocking(move || {
        let f = File::open(&p).map_err(|e| ctx_err("open", &p, e))?;
        let md = f.metadata().map_err(|e| ctx_err("stat", &p, e))?;
        if md.is_dir() {
            return Err(RemoteError::new(
                ErrorKind::IsADirectory,
                format!("read {p}: is a directory; use list_dir"),
            ));
        }
        Ok((f, md.len()))
    })
    .await;
    let (mut file, size) = match opened {
        Ok(v) => v,
        Err(e) => return ctx.end::<()>(Err(e)).await,
    };
    if ctx.event(&Event::Opened { size }).await.is_err() {
        return;
    }
    loop {
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; DATA_CHUNK];
            let r = file.read(&mut buf).map(|n| {
                buf.truncate(n);
                buf
            });
            (file, r.map_err(|e| ctx_err("read", &p, e)))
        })
        .await;
        let (f, chunk) = match r {
            Ok(v) => v,
            Err(e) => {
                let err = RemoteError::new(ErrorKind::Io, format!("read task failed: {e}"));
                return ctx.end::<()>(Err(err)).await;
            }
        };
        file = f;
        match chunk {
            Err(e) => return ctx.end::<()>(Err(e)).await,
            Ok(b) if b.is_empty() => return ctx.end(Ok(())).await,
            Ok(b) => {
                if ctx.data(Kind::Data, Bytes::from(b)).await.is_err() {
                    return; // cancelled or disconnected
                }
            }
        }
    }
}

/// Receives a file from the client; with `user`, the file is opened (and
/// its parents made) with that user's permissions. A file it creates gets
/// exactly `opts.mode` (whatever the umask). With `xattrs`, the file's
/// extended attributes under the prefix are replaced before it is
/// truncated; when that fails, a file this request created is removed and
/// an existing one is left as it was.
pub async fn write(
    mut ctx: StreamCtx,
    path: String,
    opts: WriteOptions,
    user: Option<String>,
    xattrs: Option<XattrSet>,
) {
    let p = path.clone();
    let opened = blocking(move || {
        crate::as_user::run(user, move || {
            if opts.create_parents {
                if let Some(parent) = Path::new(&p).parent() {
                    if !parent.as_os_str().is_empty() {
                        fs::create_dir_all(parent)
                            .map_err(|e| ctx_err("create parent directories of", &p, e))?;
                    }
                }
            }
            let mode = opts.mode.unwrap_or(0o644) & 0o7777;
            let mut o = OpenOptions::new();
            o.write(true).create_new(true).mode(mode);
            if opts.append {
                o.append(true);
            }
            let (f, created) = match o.open(&p) {
                Ok(f) => (f, true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // Also a dangling symlink, whose target is created as
                    // before (with the umask's say on its mode).
                    let mut o = OpenOptions::new();
                    o.write(true).create(true).mode(mode).append(opts.append);
                    (
                        o.open(&p).map_err(|e| ctx_err("open for writing", &p, e))?,
                        false,
                    )
                }
                Err(e) => return Err(ctx_err("open for writing", &p, e)),
            };
            let prepared = (|| {
                if created {
                    f.set_permissions(fs::Permissions::from_mode(mode))
                        .map_err(|e| ctx_err("set the mode of", &p, e))?;
                }
                if let Some(x) = &xattrs {
                    crate::xattr::apply(f.as_fd(), &p, x)?;
                }
                if !opts.append && !created {
                    f.set_len(0).map_err(|e| ctx_err("truncate", &p, e))?;
                }
                Ok(())
            })();
            if let Err(e) = prepared {
                if created {
                    let _ = fs::remove_file(&p);
                }
                return Err(e);
            }
            Ok(f)
        })
    })
    .await;
    let mut file = match opened {
        Ok(f) => f,
        Err(e) => return ctx.end::<()>(Err(e)).await,
    };
    if ctx.event(&Event::Ready).await.is_err() {
        return;
    }
    let mut written: u64 = 0;
    loop {
        match ctx.inbound.recv().await {
            // Cancelled or disconnected: the file keeps what arrived so far.
            None => return,
            Some(ClientMsg::Data(b)) => {
                let len = b.len();
                let p = path.clone();
                let r = tokio::task::spawn_blocking(move || {
                    let r = file.write_all(&b).map_err(|e| ctx_err("write", &p, e));
                    (file, r)
                })
                .await;
                let (f, res) = match r {
                    Ok(v) => v,
                    Err(e) => {
                        let err =
                            RemoteError::new(ErrorKind::Io, format!("write task failed: {e}"));
                        return ctx.end::<()>(Err(err)).await;
                    }
                };
                file = f;
                if let Err(e) = res {
                    return ctx.end::<()>(Err(e)).await;
                }
                written += len as u64;
                ctx.credit(len).release().await;
            }
            Some(ClientMsg::Eof) => {
                let p = path.clone();
                let r = blocking(move || file.flush().map_err(|e| ctx_err("close", &p, e))).await;
                return ctx.end(r.map(|_| written)).await;
            }
            Some(ClientMsg::Control(_)) => {
                return ctx
                    .end::<()>(Err(RemoteError::new(
                        ErrorKind::InvalidArgument,
                        "resize/signal controls make no sense on a file write",
                    )))
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_listings_fail_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..6000 {
            File::create(
                dir.path()
                    .join(format!("a-rather-long-file-name-{i:05}.txt")),
            )
            .unwrap();
        }
        let e = list_dir(dir.path().to_str().unwrap(), 1, None).unwrap_err();
        assert!(e.message.contains("too many entries"), "{}", e.message);
        assert!(e.message.contains("list a subdirectory or lower the depth"));
        std::fs::create_dir(dir.path().join("small")).unwrap();
        File::create(dir.path().join("small/x")).unwrap();
        let l = list_dir(dir.path().join("small").to_str().unwrap(), 5, None).unwrap();
        assert_eq!(l.len(), 1);
    }
}
