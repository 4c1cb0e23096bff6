//! `archive`: stop the sandbox, capture its volume into the snapshot store
//! (incremental against its latest snapshot), point the sandbox at that
//! snapshot, and only then delete the local volume (see
//! [`crate::archive`] for why every crash point is safe). Re-running it
//! after a crash finishes the job: a published pointer skips the capture.

use std::collections::BTreeMap;
use std::sync::Arc;

use dwell_store::SandboxRecord;

use super::{record, step_event, stop};
use crate::archive::{self, ArchiveRef};
use crate::controller::{blocking, Inner};
use crate::error::{Error, Result};
use crate::model::State;

pub(crate) async fn run(inner: &Arc<Inner>, rec: &SandboxRecord, why: &str) -> Result<()> {
    if rec.mode == "ephemeral" {
        return Err(Error::Conflict(
            "an ephemeral sandbox cannot be archived (its data goes when it stops)".into(),
        ));
    }
    step_event(inner, &rec.id, "archiving: stopping processes")?;
    stop::release(inner, &rec.id).await?;
    let inner2 = inner.clone();
    let (id, tenant) = (rec.id.clone(), rec.tenant.clone());
    let store = inner.snapshots.describe();
    let r = blocking(move || -> Result<ArchiveRef> {
        let inner = inner2;
        if let Some(r) = archive::load_ref(&inner, &id)? {
            return Ok(r); // captured before a crash: only the freeing is left
        }
        let _ = inner.store.add_event(
            &id,
            "step",
            &format!("archiving: capturing the volume into {store}"),
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
        let m = crate::snapshots::capture(
            &*inner.snapshots,
            &image,
            &tenant,
            &id,
            None,
            parent.as_ref(),
            None,
            &ctx,
        )?;
        crate::crashpoint::crashpoint("archive:after-publish");
        let r = ArchiveRef::of(&m);
        archive::write_ref(&inner, &id, &r)?;
        crate::crashpoint::crashpoint("archive:after-pointer");
        Ok(r)
    })
    .await??;
    step_event(
        inner,
        &rec.id,
        &format!(
            "archiving: snapshot {} published; freeing the local volume",
            r.snapshot
        ),
    )?;
    let inner2 = inner.clone();
    let id = rec.id.clone();
    blocking(move || inner2.volumes.delete(&id)).await??;
    crate::crashpoint::crashpoint("archive:after-free");
    record(
        inner,
        &rec.id,
        State::Archived,
        &format!(
            "{why} (snapshot {}, {} of data, {} stored)",
            r.snapshot,
            crate::size::format_size(r.data_bytes),
            crate::size::format_size(r.stored_bytes)
        ),
    )
}
