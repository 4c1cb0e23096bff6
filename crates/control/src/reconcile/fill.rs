//! A sandbox being filled: `create --from` copies a snapshot's volume (and
//! saved memory), or a hibernated template's, into the new sandbox before
//! it first starts. A marker file in its state dir is made durable before
//! the first byte is copied and removed once the fill is complete. The fill
//! holds the sandbox's lock throughout, so a reconcile that finds the
//! marker (under that lock) finds a fill whose daemon died: the sandbox is
//! deleted, never started cold on a half-filled volume.

use std::path::{Path, PathBuf};

use crate::controller::Inner;
use crate::error::{Error, Result};

/// The marker's name in the sandbox's state dir.
const MARKER: &str = "filling";

fn marker(inner: &Inner, id: &str) -> PathBuf {
    inner.state_dir(id).join(MARKER)
}

/// Record that sandbox `id` is about to be filled (durably: it must
/// survive a power loss as long as the copied data may).
pub(crate) fn begin(inner: &Inner, id: &str) -> Result<()> {
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

/// The fill of `id` is complete: what was copied (the volume image, the
/// files of the state dir) is made durable first, then the marker goes.
pub(crate) fn end(inner: &Inner, id: &str) -> Result<()> {
    let sync = |path: &Path| {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::Internal(format!("syncing {}: {e}", path.display())))
    };
    if let Some(image) = inner.volumes.info(id).ok().and_then(|i| i.image) {
        sync(&image)?;
    }
    let dir = inner.state_dir(id);
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => sync(&e.path())?,
                _ => {}
            }
        }
        sync(&d)?;
    }
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
pub(crate) fn interrupted(inner: &Inner, id: &str) -> bool {
    marker(inner, id).exists()
}
