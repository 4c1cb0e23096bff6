//! Taking a snapshot of a sandbox now (a snapshot request, a backup):
//! its volume as it is when nothing runs (with the saved memory of a
//! hibernated sandbox), or frozen while read when something runs.

use crate::error::{Error, Result};
use crate::model::State;
use crate::transitions::Rules;

/// Capture sandbox `id` (of `tenant`, in `state`) now, as snapshot `name`
/// with `labels`: frozen while read if something runs. Blocking; the
/// caller holds the sandbox's lock (a snapshot request, a backup).
pub(crate) fn capture_now(
    inner: &crate::context::Context,
    tenant: &str,
    id: &str,
    state: State,
    name: Option<&str>,
    labels: std::collections::BTreeMap<String, String>,
) -> Result<dwell_snapshot::Manifest> {
    let info = inner.volumes.info(id)?;
    let image = info.image.clone().ok_or_else(|| {
        Error::Conflict(
            "snapshots need loop-backed volumes; this sandbox has a directory volume".into(),
        )
    })?;
    let parent = crate::snapshots::list(&*inner.snapshots, tenant)?
        .into_iter()
        .filter(|m| m.source.sandbox.as_deref() == Some(id))
        .max_by(|a, b| a.created_at.cmp(&b.created_at));
    let tracker = inner.progress.track(id, "snapshot");
    let mut ctx = inner.snap_ctx(tenant, true, Some(&tracker))?;
    ctx.labels = labels;
    if !state.has_processes() {
        // Nothing runs: the volume is read as it is. A hibernated
        // sandbox's saved memory goes with it, so the snapshot
        // starts warm (`create --from`), here or on another host.
        let warm = state == State::Hibernated && crate::reconcile::hibernate::saved(inner, id);
        if warm {
            let rec = inner
                .store
                .get_sandbox(id)?
                .ok_or_else(|| Error::NotFound(id.to_string()))?;
            ctx.attachments = crate::memory::attachments(inner, &rec)?;
        }
        let m = crate::snapshots::capture(
            &*inner.snapshots,
            &image,
            tenant,
            id,
            name,
            parent.as_ref(),
            None,
            &ctx,
        );
        if warm {
            crate::memory::capture_done(inner, id);
        }
        return m;
    }
    // Something runs: frozen for the capture (see
    // `crate::snapshots::capture_live`).
    let config = crate::reconcile::config::config_of(inner, id)?;
    let runtime = inner.runtime_of(id)?;
    let processes = crate::snapshots::Processes {
        runtime: &*runtime,
        config: &config,
        running: state == State::Running,
    };
    crate::snapshots::capture_live(
        &*inner.snapshots,
        &processes,
        &info.path,
        &image,
        tenant,
        id,
        name,
        parent.as_ref(),
        ctx,
    )
}
