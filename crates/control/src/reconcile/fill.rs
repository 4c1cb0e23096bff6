//! A sandbox being filled: `create --from` copies a snapshot's volume (and
//! saved memory), or a hibernated template's, into the new sandbox before
//! it first starts. A marker file in its state dir is made durable before
//! the first byte is copied and removed once the fill is complete. The fill
//! holds the sandbox's lock throughout, so a reconcile that finds the
//! marker (under that lock) finds a fill whose daemon died: the sandbox is
//! deleted, never started cold on a half-filled volume.

use std::path::{Path, PathBuf};

use crate::context::Context;
use crate::error::{Error, Result};

/// The marker's name in the sandbox's state dir.
const MARKER: &str = "filling";

fn marker(inner: &Context, id: &str) -> PathBuf {
    inner.state_dir(id).join(MARKER)
}

/// Record that sandbox `id` is about to be filled (durably: it must
/// survive a power loss as long as the copied data may).
pub(crate) fn begin(inner: &Context, id: &str) -> Result<()> {
    let dir = inner.state_dir(id);
    let io =
        |what: &str, e: std::io::Error| Error::Internal(format!("{what} {}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(|e| io("creating", e))?;
    std::fs::File::create(marker(inner, id))
        .and_then(|f| f.sync_all())
        .map_err(|e| io("marking a fill in", e))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing", e))
}

/// Flush the regular files and dirs of the state dir `dir`. It holds the
/// run dir, the sandbox's to write: walked beneath it (no symlink followed,
/// a fifo or device never opened, no other filesystem entered).
fn sync_tree(dir: &Path) -> Result<()> {
    let err = |e: dwell_hostfs::Error| Error::Internal(format!("syncing: {e}"));
    let root = match dwell_hostfs::Beneath::open(dir) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    let dev = root.stat("").map_err(err)?.dev;
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(d) = stack.pop() {
        let sub = root.open_dir(&d).map_err(err)?;
        for e in sub.read_dir("").map_err(err)? {
            let e = e.map_err(err)?;
            match e.stat.kind {
                dwell_hostfs::FileKind::Dir if e.stat.dev == dev => stack.push(d.join(&e.name)),
                dwell_hostfs::FileKind::File => {
                    let f = sub.open_file(&e.name).map_err(err)?;
                    f.sync_all().map_err(|er| {
                        Error::Internal(format!(
                            "syncing {}: {er}",
                            sub.host_path(&e.name).display()
                        ))
                    })?;
                }
                _ => {}
            }
        }
        sub.sync().map_err(err)?;
    }
    Ok(())
}

/// The fill of `id` is complete: what was copied (the volume image, the
/// files of the state dir) is made durable first, then the marker goes.
pub(crate) fn end(inner: &Context, id: &str) -> Result<()> {
    let sync = |path: &Path| {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::Internal(format!("syncing {}: {e}", path.display())))
    };
    if let Some(image) = inner.volumes.info(id).ok().and_then(|i| i.image) {
        sync(&image)?;
    }
    let dir = inner.state_dir(id);
    sync_tree(&dir)?;
    match std::fs::remove_file(marker(inner, id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::Internal(format!(
                "removing the fill marker of {id}: {e}"
            )))
        }
        _ => {}
    }
    sync(&dir)
}

/// Whether a fill of `id` began and never ended (its daemon died).
pub(crate) fn interrupted(inner: &Context, id: &str) -> bool {
    marker(inner, id).exists()
}
