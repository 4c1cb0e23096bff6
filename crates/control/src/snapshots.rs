//! Snapshots of sandboxes: capture a volume into the content-addressed
//! store (`dwell-snapshot`), list and delete them, restore a sandbox in
//! place, and create new sandboxes from one.
//!
//! Capture is crash-consistent: a running sandbox's processes are frozen
//! (cgroup freezer) and its volume's filesystem frozen (`FIFREEZE`, which
//! flushes it). Where the data dir's filesystem can share extents (XFS,
//! btrfs), the frozen image is reflinked (`FICLONE`, constant time) and
//! thawed at once: the freeze lasts milliseconds and the clone is read
//! afterwards. The clone is then kept beside the volume as the *base* of
//! the next snapshot: blocks the next clone still shares with it are
//! unchanged (`FIEMAP`), so an incremental snapshot reads only what changed.
//! The base costs disk space only for blocks overwritten since. Elsewhere
//! (ext4) the image is read while frozen, so the freeze lasts as long as
//! the read of the volume's data (holes are skipped). The freeze time is
//! recorded in the manifest. Snapshots are named per tenant (label `name`),
//! and a tenant never sees another's.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use dwell_snapshot::{ChunkStore, CreateOptions, GcOptions, Manifest, RestoreOptions, TenantKey};

use crate::error::{Error, Result};

mod keys;
mod live;
pub(crate) use live::{capture_live, Processes};
pub(crate) mod take;

/// The label that marks a snapshot as the archive of a sandbox (its id):
/// such snapshots belong to their sandbox and are not listed as the
/// tenant's (see [`crate::archive`]).
pub const ARCHIVE_LABEL: &str = "archive-of";

/// The label that marks a snapshot as a backup of a sandbox (its id; see
/// [`crate::backup`]).
pub const BACKUP_LABEL: &str = "backup-of";

/// Whether `m` is a backup.
pub(crate) fn is_backup(m: &Manifest) -> bool {
    m.labels.contains_key(BACKUP_LABEL)
}

/// Whether `m` belongs to its sandbox rather than to the tenant's list:
/// an archive or a backup.
pub(crate) fn hidden(m: &Manifest) -> bool {
    m.labels.contains_key(ARCHIVE_LABEL) || is_backup(m)
}

/// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)`.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

impl From<dwell_snapshot::Error> for Error {
    fn from(e: dwell_snapshot::Error) -> Self {
        match e {
            dwell_snapshot::Error::SnapshotNotFound { id, .. } => Error::SnapshotNotFound(id),
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

/// `_IOW(0x94, 9, int)`: make the destination share the source's extents.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Name of the reflinked copy, next to the volume's image.
const CLONE: &str = "snapshot-clone.img";

/// A reflinked copy of a volume image, removed when dropped.
pub(crate) struct ImageClone(Option<std::path::PathBuf>);

impl ImageClone {
    pub fn path(&self) -> &Path {
        self.0.as_deref().expect("a clone has a path until kept")
    }

    /// Keep the clone as the base of the next incremental snapshot: it is
    /// the image of snapshot `id`. Older bases are removed.
    fn keep_as_base(mut self, id: &str) -> Result<()> {
        let path = self.0.take().expect("a clone has a path until kept");
        let base = path.with_file_name(format!("{BASE_PREFIX}{id}.img"));
        std::fs::rename(&path, &base)
            .map_err(|e| Error::Internal(format!("{}: {e}", base.display())))?;
        for (other, _) in bases(&path) {
            if other != base {
                let _ = std::fs::remove_file(other);
            }
        }
        Ok(())
    }
}

impl Drop for ImageClone {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Bases are named by the snapshot they are the image of.
const BASE_PREFIX: &str = "snapshot-base-";

/// The base files next to `image` and the snapshot id each names.
fn bases(image: &Path) -> Vec<(std::path::PathBuf, String)> {
    let Some(dir) = image.parent() else {
        return Vec::new();
    };
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_prefix(BASE_PREFIX)?.strip_suffix(".img")?;
            Some((e.path(), id.to_string()))
        })
        .collect()
}

/// Snapshot a reflinked clone of a sandbox's frozen image. If the previous
/// snapshot left its clone behind (the *base*), the ranges where the two
/// clones share blocks are unchanged and are taken from that snapshot
/// unread, so the cost is what changed since. The clone then becomes the
/// next base. A base whose snapshot is gone is removed and ignored.
#[allow(clippy::too_many_arguments)]
pub(crate) fn capture_clone(
    store: &dyn ChunkStore,
    clone: ImageClone,
    tenant: &str,
    sandbox: &str,
    name: Option<&str>,
    parent: Option<&Manifest>,
    freeze: Duration,
    mut ctx: Ctx,
) -> Result<Manifest> {
    let mut base: Option<(std::path::PathBuf, Manifest)> = None;
    for (path, id) in bases(clone.path()) {
        match dwell_snapshot::load(store, &id, Some(tenant)) {
            Ok(m)
                if base
                    .as_ref()
                    .is_none_or(|(_, b)| b.created_at < m.created_at) =>
            {
                base = Some((path, m));
            }
            Ok(_) => {}
            Err(dwell_snapshot::Error::SnapshotNotFound { .. }) => {
                let _ = std::fs::remove_file(path);
            }
            Err(e) => tracing::warn!("snapshot base {id} not used: {e}"),
        }
    }
    if let Some((path, _)) = &base {
        ctx.same_as_parent = Some(dwell_snapshot::same_ranges(path, clone.path())?);
    }
    let parent = base.as_ref().map(|(_, m)| m).or(parent);
    let m = capture(
        store,
        clone.path(),
        tenant,
        sandbox,
        name,
        parent,
        Some(freeze),
        &ctx,
    )?;
    if let Err(e) = clone.keep_as_base(&m.id) {
        tracing::warn!("the next snapshot will read the whole volume: {e}");
    }
    Ok(m)
}

/// Write a running sandbox's dirty data out before it is frozen: the
/// volume's filesystem (`syncfs`) and then the image file beneath it, so
/// the flush inside the freeze (`FIFREEZE`, and `FICLONE` of the image)
/// only has what changed in between. Best effort: the freeze flushes
/// everything anyway.
pub(crate) fn preflush(mnt: &Path, image: &Path) {
    if let Ok(d) = std::fs::File::open(mnt) {
        // SAFETY: syncfs on a directory fd we own.
        unsafe { libc::syncfs(d.as_raw_fd()) };
    }
    if let Ok(f) = std::fs::File::open(image) {
        let _ = f.sync_data();
    }
}

/// Reflink `image` into a sibling file, in constant time. `Ok(None)` when
/// the filesystem cannot share extents (ext4, or a different filesystem),
/// so the caller reads the image itself instead. A clone left by a crash
/// is replaced.
pub(crate) fn reflink_clone(image: &Path) -> Result<Option<ImageClone>> {
    let dst = image.with_file_name(CLONE);
    let io = |e: std::io::Error| {
        Error::Internal(format!("{}: {e}", image.with_file_name(CLONE).display()))
    };
    let src = std::fs::File::open(image)
        .map_err(|e| Error::Internal(format!("{}: {e}", image.display())))?;
    let _ = std::fs::remove_file(&dst);
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&dst)
        .map_err(io)?;
    let clone = ImageClone(Some(dst));
    // SAFETY: FICLONE with two fds we own.
    if unsafe { libc::ioctl(out.as_raw_fd(), FICLONE, src.as_raw_fd()) } == 0 {
        return Ok(Some(clone));
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::EXDEV | libc::EINVAL) => Ok(None),
        _ => Err(io(e)),
    }
}

/// What a capture or restore needs besides the store and the image: the
/// tenant's encryption key (captures encrypt unless the daemon was told not
/// to; restores use it whenever a snapshot is encrypted), a progress
/// tracker, extra labels and a fixed snapshot id.
#[derive(Default)]
pub(crate) struct Ctx<'a> {
    /// The tenant key captures seal with, and restores try first.
    pub key: Option<TenantKey>,
    /// Restores only: the tenant's key of format versions 1 and 2 (derived
    /// from `secret.key`), for snapshots sealed before the master key.
    pub legacy_key: Option<TenantKey>,
    pub progress: Option<&'a crate::progress::Tracker>,
    pub labels: BTreeMap<String, String>,
    pub id: Option<String>,
    /// Ranges known unchanged since `parent` (see `capture_clone`).
    pub same_as_parent: Option<Vec<std::ops::Range<u64>>>,
    /// Files stored with the volume (a hibernated sandbox's saved memory,
    /// see [`crate::memory`]).
    pub attachments: Vec<(String, std::path::PathBuf)>,
}

impl Ctx<'_> {
    /// The key that opens `m`: the one whose fingerprint the manifest
    /// names (the master-derived key unless `m` was sealed with the legacy
    /// one); restore reports a wrong key with both fingerprints otherwise.
    pub(crate) fn read_key(&self, m: &Manifest) -> Option<&TenantKey> {
        let wanted = m.encryption.as_ref().map(|e| e.key_id.as_str());
        match &self.legacy_key {
            Some(l) if wanted == Some(l.fingerprint()) => Some(l),
            _ => self.key.as_ref().or(self.legacy_key.as_ref()),
        }
    }
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
        same_as_parent: ctx.same_as_parent.as_deref(),
        attachments: ctx.attachments.clone(),
        ..Default::default()
    };
    Ok(dwell_snapshot::create(image, store, &opts)?)
}

/// A snapshot of `tenant` by id or name.
pub(crate) fn find(store: &dyn ChunkStore, tenant: &str, id_or_name: &str) -> Result<Manifest> {
    if dwell_snapshot::validate_id(id_or_name).is_ok() {
        if let Ok(m) = dwell_snapshot::load(store, id_or_name, Some(tenant)) {
            if !hidden(&m) {
                return Ok(m);
            }
        }
    }
    let mut all = dwell_snapshot::list(store, Some(tenant))?;
    all.retain(|m| m.labels.get("name").map(String::as_str) == Some(id_or_name));
    all.retain(|m| !hidden(m));
    all.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    all.pop()
        .ok_or_else(|| Error::SnapshotNotFound(id_or_name.to_string()))
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
            key: ctx.read_key(m),
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

#[cfg(test)]
mod tests;
