//! `archive`: stop the sandbox, capture its volume into the snapshot store
//! (incremental against its latest snapshot), point the sandbox at that
//! snapshot, and only then delete the local volume (see
//! [`crate::archive`] for why every crash point is safe). Re-running it
//! after a crash finishes the job: a published pointer skips the capture.
//! A hibernated sandbox's saved memory goes into the archive with the
//! volume and is freed after it; [`resume`] brings both back and restores
//! the processes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::Record;

use super::journal::{record, step_event};
use super::{hibernate, stop};
use crate::archive::{self, ArchiveRef};
use crate::context::{blocking, Context};
use crate::error::{Error, Result};
use crate::model::{Mode, State};

pub(crate) async fn run(inner: &Arc<Context>, rec: &Record, why: &str) -> Result<()> {
    if rec.mode == Mode::Ephemeral {
        return Err(Error::Conflict(
            "an ephemeral sandbox cannot be archived (its data goes when it stops)".into(),
        ));
    }
    step_event(inner, &rec.id, "archiving: stopping processes")?;
    stop::release(inner, &rec.id).await?;
    let inner2 = inner.clone();
    let (id, tenant) = (rec.id.clone(), rec.tenant.clone());
    let rec2 = rec.clone();
    let store = inner.snapshots.describe();
    let r = blocking(move || -> Result<ArchiveRef> {
        let inner = inner2;
        if let Some(r) = archive::load_ref(&inner, &id)? {
            return Ok(r); // captured before a crash: only the freeing is left
        }
        // Only a hibernated sandbox's saved state is current (one left
        // behind by a crash is older than the volume).
        let warm = rec2.state == State::Hibernated && hibernate::saved(&inner, &id);
        let what = if warm {
            "the volume and the saved memory"
        } else {
            "the volume"
        };
        let _ = inner.store.add_event(
            &id,
            "step",
            &format!("archiving: capturing {what} into {store}"),
        );
        let info = inner.volumes.info(&id)?;
        let image = info.image.ok_or_else(|| {
            Error::Conflict(
                "only loop-backed volumes can be archived; this sandbox has a directory volume"
                    .into(),
            )
        })?;
        let parent = dwell_snapshot::list(&*inner.snapshots, Some(&tenant))?
            .into_iter()
            .filter(|m| m.source.sandbox.as_deref() == Some(id.as_str()))
            .max_by(|a, b| a.created_at.cmp(&b.created_at));
        let tracker = inner.progress.track(&id, "archive");
        let mut ctx = inner.snap_ctx(&tenant, true, Some(&tracker))?;
        ctx.labels = BTreeMap::from([(archive::LABEL.to_string(), id.clone())]);
        if warm {
            ctx.attachments = crate::memory::attachments(&inner, &rec2)?;
        }
        let m = crate::snapshots::capture(
            &*inner.snapshots,
            &image,
            &tenant,
            &id,
            None,
            parent.as_ref(),
            None,
            &ctx,
        );
        crate::memory::capture_done(&inner, &id);
        let m = m?;
        crate::crashpoint::crashpoint("archive:after-publish");
        let r = ArchiveRef::of(&m);
        archive::write_ref(&inner, &id, &r)?;
        crate::crashpoint::crashpoint("archive:after-pointer");
        Ok(r)
    })
    .await??;
    let memory = if r.hibernated {
        " and the saved memory"
    } else {
        ""
    };
    step_event(
        inner,
        &rec.id,
        &format!(
            "archiving: snapshot {} published; freeing the local volume{memory}",
            r.snapshot
        ),
    )?;
    let inner2 = inner.clone();
    let id = rec.id.clone();
    blocking(move || -> Result<()> {
        inner2.volumes.delete(&id)?;
        crate::crashpoint::crashpoint("archive:after-free-volume");
        // The memory is in the archive, or (a cold archive) any saved
        // state here is stale: either way none stays.
        hibernate::discard(&inner2, &id)
    })
    .await??;
    crate::crashpoint::crashpoint("archive:after-free");
    record(
        inner,
        &rec.id,
        State::Archived,
        &format!(
            "{why} (snapshot {}, {} of data, {} stored{})",
            r.snapshot,
            crate::size::format_size(r.data_bytes),
            crate::size::format_size(r.stored_bytes),
            if r.hibernated {
                ", memory included: resumes warm"
            } else {
                ""
            }
        ),
    )
}

/// Whether sandbox `id` is archived with its saved memory (it resumes
/// warm). An unreadable pointer is an error, as for a cold start.
pub(crate) fn warm(inner: &Context, id: &str) -> Result<bool> {
    Ok(archive::load_ref(inner, id)?.is_some_and(|r| r.hibernated))
}

/// Bring a sandbox archived while hibernated back: its volume and saved
/// memory from the archive (verified; on failure it stays archived), then
/// its processes from the memory image.
pub(crate) async fn resume(inner: &Arc<Context>, rec: &Record) -> Result<()> {
    step_event(
        inner,
        &rec.id,
        "restoring the volume and the saved memory from the archive",
    )?;
    let inner2 = inner.clone();
    let (id, tenant) = (rec.id.clone(), rec.tenant.clone());
    let t0 = std::time::Instant::now();
    blocking(move || crate::archive::unarchive(&inner2, &id, &tenant)).await??;
    step_event(
        inner,
        &rec.id,
        &format!(
            "volume and saved memory restored from the archive in {} ms",
            t0.elapsed().as_millis()
        ),
    )?;
    hibernate::restore(inner, rec).await
}
