//! Archived volumes: a stopped sandbox's volume moved into the snapshot
//! store and freed locally, and brought back by `start`.
//!
//! The archive is an ordinary snapshot labelled `archive-of=<sandbox id>`
//! (hidden from `snapshot ls`). The sandbox points at it with a small file,
//! `<data-dir>/archives/<id>.json`, written atomically (temp file, fsync,
//! rename, fsync of the directory) only after the snapshot is published,
//! and the volume is deleted only after that file exists. So whatever
//! instant the daemon dies at, either the volume is intact or the pointer
//! names a published snapshot, and while the pointer exists the local
//! volume (if any) is never trusted: `start` restores over it (every chunk
//! verified) and removes the pointer only after the restore is durable.
//! A snapshot labelled as an archive that no pointer names (a crash between
//! publishing it and writing the pointer, or a deleted sandbox) is removed
//! by the sweep.
//!
//! A hibernated gVisor sandbox is archived warm: its saved memory and
//! processes go into the same snapshot (see [`crate::memory`]), are freed
//! locally after the volume, and come back with it, before the pointer
//! goes, so `start` or `resume` continues its processes.

use std::io::Write;
use std::path::PathBuf;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::SandboxSpec;

/// Label of archive snapshots; its value is the sandbox id.
pub const LABEL: &str = crate::snapshots::ARCHIVE_LABEL;

pub use crate::model::ArchiveRef;

impl ArchiveRef {
    pub(crate) fn of(m: &dwell_snapshot::Manifest) -> ArchiveRef {
        ArchiveRef {
            snapshot: m.id.clone(),
            volume_size: m.source.volume_size,
            data_bytes: m.sizes.data,
            stored_bytes: m.sizes.stored,
            archived_at: m.created_at.clone(),
            hibernated: crate::memory::has_memory(m),
        }
    }
}

fn path(inner: &Context, id: &str) -> PathBuf {
    inner.data_dir.join("archives").join(format!("{id}.json"))
}

/// The pointer of sandbox `id`, if it has one. An unreadable pointer is an
/// error: guessing "not archived" could start the sandbox on an empty
/// volume.
pub(crate) fn load_ref(inner: &Context, id: &str) -> Result<Option<ArchiveRef>> {
    let p = path(inner, id);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            Error::Internal(format!(
                "the archive pointer {} is corrupt ({e}); the volume is in the snapshot store: find it by its label {LABEL} and restore it by hand",
                p.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Internal(format!("cannot read {}: {e}", p.display()))),
    }
}

/// The pointer for display (errors are logged, not shown).
pub(crate) fn read_ref(inner: &Context, id: &str) -> Option<ArchiveRef> {
    load_ref(inner, id).unwrap_or_else(|e| {
        tracing::warn!(sandbox = id, "{e}");
        None
    })
}

fn sync_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::Internal(format!("cannot fsync {}: {e}", dir.display())))
}

/// Write the pointer durably and atomically.
pub(crate) fn write_ref(inner: &Context, id: &str, r: &ArchiveRef) -> Result<()> {
    let p = path(inner, id);
    let dir = p.parent().expect("archives dir").to_path_buf();
    let io = |e: std::io::Error| Error::Internal(format!("cannot write {}: {e}", p.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let tmp = dir.join(format!(".{id}.json.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&serde_json::to_vec_pretty(r).expect("serialises"))
        .and_then(|_| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, &p).map_err(io)?;
    sync_dir(&dir)
}

/// Remove the pointer durably.
pub(crate) fn remove_ref(inner: &Context, id: &str) -> Result<()> {
    let p = path(inner, id);
    match std::fs::remove_file(&p) {
        Ok(()) => sync_dir(p.parent().expect("archives dir")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Internal(format!(
            "cannot remove {}: {e}",
            p.display()
        ))),
    }
}

/// If sandbox `id` is archived, restore its volume (and its saved memory,
/// if it was hibernated) from the archive (every chunk verified; a missing
/// or corrupt chunk fails the start and leaves the pointer, so the sandbox
/// never runs on damaged or empty data), then drop the pointer and the
/// archive snapshot (not a backup: see [`crate::backup`]). Blocking. Returns whether it restored.
pub(crate) fn unarchive(inner: &Context, id: &str, tenant: &str) -> Result<bool> {
    let Some(r) = load_ref(inner, id)? else {
        return Ok(false);
    };
    let store = &*inner.snapshots;
    let m = dwell_snapshot::load(store, &r.snapshot, Some(tenant)).map_err(|e| {
        Error::Conflict(format!(
            "the archive {} of this sandbox cannot be read from {}: {e}; the sandbox stays archived (fix the store and start it again)",
            r.snapshot,
            store.describe()
        ))
    })?;
    let tracker = inner.progress.track(id, "unarchive");
    let _ = inner.volumes.unmount(id);
    let info = match inner.volumes.info(id) {
        Ok(i) if i.size_bytes == m.source.volume_size => i,
        Ok(_) => {
            inner.volumes.delete(id)?;
            inner.volumes.create(id, m.source.volume_size)?
        }
        Err(_) => inner.volumes.create(id, m.source.volume_size)?,
    };
    let image = info.image.ok_or_else(|| {
        Error::Conflict(
            "archives need loop-backed volumes; this host gives directory volumes".into(),
        )
    })?;
    let ctx = inner.snap_ctx(tenant, false, Some(&tracker))?;
    crate::snapshots::restore_into(store, &m, &image, &ctx)?;
    if crate::memory::has_memory(&m) {
        let agent = crate::memory::restore(inner, store, &m, id, &ctx)?;
        if crate::reconcile::config::config_of(inner, id).is_err() {
            // Archived on another node (a move, a recovery): this host's
            // runtime config, as a warm create from a snapshot makes it.
            write_config(inner, id, agent)?;
        }
    }
    crate::crashpoint::crashpoint("unarchive:after-restore");
    remove_ref(inner, id)?;
    crate::crashpoint::crashpoint("unarchive:after-unref");
    // A backup restored from (a lost node's sandbox) stays one of the
    // sandbox's backups.
    if !crate::snapshots::is_backup(&m) {
        drop_snapshot(inner, &m.id);
    }
    Ok(true)
}

/// The runtime config of sandbox `id` on this host (its image store, its
/// paths; the agent version its saved memory runs), for a warm archive
/// another node made.
fn write_config(inner: &Context, id: &str, agent: Option<PathBuf>) -> Result<()> {
    let rec = inner
        .store
        .get_sandbox::<SandboxSpec>(id)?
        .ok_or_else(|| Error::NotFound(id.to_string()))?;
    let img = inner.images.get(&rec.image)?;
    let upper = inner.volumes.mount_path(id);
    let mut cfg = crate::reconcile::config::build(inner, id, &rec.name, &rec.spec, &img, upper)?;
    if let Some(agent) = agent {
        cfg.agent_binary = agent;
    }
    crate::reconcile::config::save(inner, &cfg)
}

/// Delete an archive snapshot no pointer names any more (best effort: the
/// sweep retries).
pub(crate) fn drop_snapshot(inner: &Context, snapshot: &str) {
    let opts = dwell_snapshot::GcOptions::default();
    match dwell_snapshot::delete(&*inner.snapshots, snapshot, None, &opts) {
        Ok(_) | Err(dwell_snapshot::Error::SnapshotNotFound { .. }) => {}
        Err(e) => tracing::warn!("cannot delete archive snapshot {snapshot} yet: {e}"),
    }
}

/// Delete archive snapshots that no pointer names (crash leftovers, deleted
/// sandboxes), skipping sandboxes busy with a transition and those of
/// other daemons sharing the store. Blocking.
pub(crate) fn collect_orphans(inner: &Context) -> Result<usize> {
    let mut n = 0;
    for m in dwell_snapshot::list(&*inner.snapshots, None)? {
        let Some(sb) = m.labels.get(LABEL) else {
            continue;
        };
        // A sandbox this daemon never had: another daemon sharing the
        // object store archived it, and only that daemon has its pointer.
        let Some(rec) = inner.store.get_sandbox::<SandboxSpec>(sb)? else {
            continue;
        };
        // In a cluster: another node's sandbox (its pointer is there), or
        // one handed to this node whose pointer is still in its record.
        if let Some(me) = inner.cluster.get() {
            if !me.owns(rec.node.as_deref()) || inner.store.handoff_of(sb)?.is_some() {
                continue;
            }
        }
        let lock = inner.lock_for(sb);
        let Ok(_g) = lock.try_lock() else { continue };
        if load_ref(inner, sb)?.is_some_and(|r| r.snapshot == m.id) {
            continue;
        }
        // Again under the lock: in a cluster the sandbox may have been
        // handed to another node (or to this one) meanwhile; a snapshot
        // any handoff names is never collected.
        if inner.cluster.get().is_some() {
            let owner = inner.store.sandbox_node(sb)?;
            let handoff = inner.store.handoff_of(sb)?;
            let me = inner.cluster.get().expect("checked");
            if !me.owns(owner.as_deref()) || handoff.is_some_and(|h| h.contains(&m.id)) {
                continue;
            }
        }
        tracing::info!(sandbox = %sb, "deleting archive snapshot {} that nothing points at", m.id);
        drop_snapshot(inner, &m.id);
        n += 1;
    }
    Ok(n)
}
