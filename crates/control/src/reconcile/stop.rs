//! `stop`: end every process of the sandbox and release what the runtime
//! holds, then unmount the volume. The volume itself stays (persistent
//! sandboxes) until `delete`.

use std::sync::Arc;

use crate::model::Record;

use super::config::config_of;
use super::journal::{record, step_event};
use crate::context::{blocking, Context};
use crate::error::Result;
use crate::model::State;

pub(crate) async fn run(inner: &Arc<Context>, rec: &Record, why: &str) -> Result<()> {
    step_event(inner, &rec.id, "stopping processes")?;
    release(inner, &rec.id).await?;
    // A stopped sandbox starts cold: saved memory of a hibernation goes.
    super::hibernate::discard(inner, &rec.id)?;
    record(inner, &rec.id, State::Stopped, why)
}

/// Kill processes, free runtime resources, unmount the volume. Idempotent.
pub(crate) async fn release(inner: &Arc<Context>, id: &str) -> Result<()> {
    crate::connections::forget(inner, id).await;
    crate::service::forget(inner, id);
    crate::egress::detach(inner, id);
    let inner2 = inner.clone();
    let id = id.to_string();
    blocking(move || -> Result<()> {
        if let Ok(cfg) = config_of(&inner2, &id) {
            inner2.runtime_of(&id)?.stop(&cfg)?;
        }
        match inner2.volumes.unmount(&id) {
            // An archived sandbox has no local volume.
            Err(dwell_storage::StorageError::VolumeNotFound(_)) => Ok(()),
            r => Ok(r?),
        }
    })
    .await?
}
