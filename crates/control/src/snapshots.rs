//! Snapshots of sandboxes: capture a volume into the content-addressed
//! store (`dwell-snapshot`), list and delete them, restore a sandbox in
//! place, and create new sandboxes from one.
//!
//! Capture is crash-consistent: a running sandbox's processes are frozen
//! (cgroup freezer) and its volume's filesystem frozen (`FIFREEZE`) while
//! the image is read, then thawed. The freeze lasts as long as the read of
//! the volume's data (holes are skipped); the time is recorded in the
//! manifest. Snapshots are named per tenant (label `name`), and a tenant
//! never sees another's.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use dwell_snapshot::{ChunkStore, CreateOptions, GcOptions, Manifest, RestoreOptions, TenantKey};

use crate::error::{Error, Result};

/// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)`.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

impl From<dwell_snapshot::Error> for Error {
    fn from(e: dwell_snapshot::Error) -> Self {
        match e {
            dwell_snapshot::Error::SnapshotNotFound { id, .. } => Error::NotFound(id),
            e @ (dwell_snapshot::Error::CorruptChunk { .. }
            | dwell_snapshot::Error::MissingChunk { .. }
            | dwell_snapshot::Error::WrongKey { .. }) => {
                Error::Conflict(format!("snapshot cannot be restored: {e}"))
            }
            e => Error::Internal(format!("snapshot store: {e}")),
        }
    }
}

/// Freeze the filesystem mounted at `mnt` until the guard drops.
pub(crate) struct FsFreeze(Option<std::fs::File>);

impl FsFreeze {
    pub fn new(mnt: &Path) -> Result<FsFreeze> {
        let f = std::fs::File::open(mnt)
            .map_err(|e| Error::Internal(format!("{}: {e}", mnt.display())))?;
        let mut arg: libc::c_int = 0;
        // SAFETY: FIFREEZE on a directory fd we own; arg is unused.
        if unsafe { libc::ioctl(f.as_raw_fd(), FIFREEZE, &mut arg) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(Error::Internal(format!(
                "cannot freeze the volume at {}: {e}",
                mnt.display()
            )));
        }
        Ok(FsFreeze(Some(f)))
    }
}

impl Drop for FsFreeze {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            let mut arg: libc::c_int = 0;
            // SAFETY: FITHAW on the fd frozen above.
            unsafe { libc::ioctl(f.as_raw_fd(), FITHAW, &mut arg) };
        }
    }
}

/// What a capture or restore needs besides the store and the image: the
/// tenant's encryption key (captures encrypt only when the daemon was told
/// to; restores use it whenever a snapshot is encrypted), a progress
/// tracker, extra labels and a fixed snapshot id.
#[derive(Default)]
pub(crate) struct Ctx<'a> {
    pub key: Option<TenantKey>,
    pub progress: Option<&'a crate::progress::Tracker>,
    pub labels: BTreeMap<String, String>,
    pub id: Option<String>,
}

/// Capture `image` (frozen by the caller if it is in use).
#[allow(clippy::too_many_arguments)]
pub(crate) fn capture(
    store: &dyn ChunkStore,
    image: &Path,
    tenant: &str,
    sandbox: &str,
    name: Option<&str>,
    parent: Option<&Manifest>,
    freeze: Option<Duration>,
    ctx: &Ctx,
) -> Result<Manifest> {
    let mut labels = ctx.labels.clone();
    if let Some(n) = name {
        labels.insert("name".to_string(), n.to_string());
    }
    let report = |p: dwell_snapshot::Progress| {
        if let Some(t) = ctx.progress {
            t.report(p)
        }
    };
    let opts = CreateOptions {
        id: ctx.id.clone(),
        tenant: tenant.into(),
        sandbox: Some(sandbox.into()),
        labels,
        parent,
        freeze,
        key: ctx.key.as_ref(),
        progress: Some(&report),
        ..Default::default()
    };
    Ok(dwell_snapshot::create(image, store, &opts)?)
}

/// A snapshot of `tenant` by id or name.
pub(crate) fn find(store: &dyn ChunkStore, tenant: &str, id_or_name: &str) -> Result<Manifest> {
    if dwell_snapshot::validate_id(id_or_name).is_ok() {
        if let Ok(m) = dwell_snapshot::load(store, id_or_name, Some(tenant)) {
            if !m.labels.contains_key(crate::archive::LABEL) {
                return Ok(m);
            }
        }
    }
    let mut all = dwell_snapshot::list(store, Some(tenant))?;
    all.retain(|m| m.labels.get("name").map(String::as_str) == Some(id_or_name));
    all.retain(|m| !m.labels.contains_key(crate::archive::LABEL));
    all.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    all.pop().ok_or_else(|| {
        Error::NotFound(format!(
            "{id_or_name} (no snapshot has that id or name; list them with `dwell snapshot ls`)"
        ))
    })
}

/// Restore `m` into the image file `target` (replaced atomically), every
/// chunk verified; on any error the target is left as it was.
pub(crate) fn restore_into(
    store: &dyn ChunkStore,
    m: &Manifest,
    target: &Path,
    ctx: &Ctx,
) -> Result<()> {
    let report = |p: dwell_snapshot::Progress| {
        if let Some(t) = ctx.progress {
            t.report(p)
        }
    };
    Ok(dwell_snapshot::restore(
        m,
        store,
        target,
        &RestoreOptions {
            key: ctx.key.as_ref(),
            progress: Some(&report),
            ..Default::default()
        },
    )?)
}

pub(crate) fn delete(
    store: &dyn ChunkStore,
    tenant: &str,
    id: &str,
) -> Result<dwell_snapshot::GcReport> {
    Ok(dwell_snapshot::delete(
        store,
        id,
        Some(tenant),
        &GcOptions::default(),
    )?)
}

pub(crate) fn list(store: &dyn ChunkStore, tenant: &str) -> Result<Vec<Manifest>> {
    Ok(dwell_snapshot::list(store, Some(tenant))?)
}
