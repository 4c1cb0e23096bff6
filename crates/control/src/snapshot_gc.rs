//! Garbage collection of the snapshot store from the daemon: chunks that no
//! manifest references are removed (the engine's `gc`, which coordinates
//! with snapshots being written through leases, so a concurrent capture
//! never loses a chunk), after archive snapshots that nothing points at.
//! Runs on request (`dwell snapshot gc`) and from the sweep every
//! `--snapshot-gc-every`, never twice at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::context::{blocking, Context};
use crate::error::{Error, Result};

/// What one collection did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct GcSummary {
    /// Archive snapshots deleted because no sandbox points at them.
    pub orphan_archives_deleted: usize,
    pub manifests: usize,
    pub chunks_examined: usize,
    pub chunks_deleted: usize,
    pub bytes_freed: u64,
    /// Unreferenced chunks kept because a snapshot being written uses them.
    pub kept_leased: usize,
    /// Unreferenced chunks kept because they are younger than the grace period.
    pub kept_young: usize,
}

struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn collect(inner: &Context) -> Result<GcSummary> {
    if inner.gc_state.running.swap(true, Ordering::SeqCst) {
        return Err(Error::Conflict(
            "a snapshot garbage collection is already running; try again when it ends".into(),
        ));
    }
    let _running = Running(&inner.gc_state.running);
    inner
        .gc_state
        .last_ms
        .store(inner.clock.now_ms(), Ordering::SeqCst);
    let orphans = crate::archive::collect_orphans(inner)? + crate::backup::collect_orphans(inner)?;
    crate::crashpoint::crashpoint("gc:after-orphans");
    let r = dwell_snapshot::gc(&*inner.snapshots, &dwell_snapshot::GcOptions::default())?;
    Ok(GcSummary {
        orphan_archives_deleted: orphans,
        manifests: r.manifests,
        chunks_examined: r.chunks_examined,
        chunks_deleted: r.chunks_deleted,
        bytes_freed: r.bytes_freed,
        kept_leased: r.kept_leased,
        kept_young: r.kept_young,
    })
}

/// Collect now.
pub(crate) async fn run_now(inner: &Arc<Context>) -> Result<GcSummary> {
    let inner = inner.clone();
    blocking(move || collect(&inner)).await?
}

/// Start a collection in the background if one is due.
pub(crate) fn maybe_spawn(inner: &Arc<Context>) {
    let Some(every) = inner.snapshot_settings.gc_every else {
        return;
    };
    let last = inner.gc_state.last_ms.load(Ordering::SeqCst);
    if last == 0 {
        // The first collection is one period after the daemon starts.
        inner
            .gc_state
            .last_ms
            .store(inner.clock.now_ms(), Ordering::SeqCst);
        return;
    }
    if inner.clock.now_ms() - last < every.as_millis() as i64
        || inner.gc_state.running.load(Ordering::SeqCst)
    {
        return;
    }
    let inner = inner.clone();
    tokio::task::spawn_blocking(move || match collect(&inner) {
        Ok(s) if s.chunks_deleted > 0 || s.orphan_archives_deleted > 0 => tracing::info!(
            "snapshot gc: deleted {} chunks ({} bytes) and {} orphan archives",
            s.chunks_deleted,
            s.bytes_freed,
            s.orphan_archives_deleted
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("snapshot gc: {e}"),
    });
}
