//! `delete`: stop whatever still runs, wipe and remove the volume, remove
//! the state dir, and mark the record `deleted` (kept for the audit trail;
//! its name is free again). It leaves its private networks, and their
//! running members forget its name.

use std::sync::Arc;

use crate::model::Record;

use super::journal::{record, step_event};
use super::stop;
use crate::context::{blocking, Context};
use crate::error::{Error, Result};
use crate::model::State;

pub(crate) async fn run(inner: &Arc<Context>, rec: &Record, reason: &str) -> Result<()> {
    step_event(inner, &rec.id, "deleting: stopping processes")?;
    stop::release(inner, &rec.id).await?;
    crate::crashpoint::crashpoint("delete:after-stop");
    step_event(inner, &rec.id, "deleting: wiping volume and state")?;
    let inner2 = inner.clone();
    let id = rec.id.clone();
    let nets: Vec<String> = inner
        .store
        .networks_of(&rec.id)?
        .into_iter()
        .map(|(n, _)| n.id)
        .collect();
    let backups = rec.spec.backup_every_ms.is_some();
    blocking(move || -> Result<()> {
        inner2.volumes.delete(&id)?;
        // Its files are gone: the uid range may go to another sandbox.
        inner2.store.release_id_range(&id)?;
        // Its ports are no longer served.
        inner2.store.delete_exposures(&id)?;
        // Its address on each private network is free again.
        inner2.store.leave_all_networks(&id)?;
        // An archived sandbox's data is its archive snapshot.
        let archived = crate::archive::load_ref(&inner2, &id).ok().flatten();
        crate::archive::remove_ref(&inner2, &id)?;
        if let Some(r) = archived {
            crate::archive::drop_snapshot(&inner2, &r.snapshot);
        }
        if backups {
            crate::backup::drop_all(&inner2, &id);
        }
        super::config::forget(&inner2, &id);
        let dir = inner2.state_dir(&id);
        // The run dir inside is the sandbox's to write: no symlink in it
        // is followed and no mount point crossed.
        match dwell_hostfs::remove_tree(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(Error::Internal(format!(
                "cannot remove {}: {e}; something still uses it (`fuser -vm {}` tells what)",
                dir.display(),
                dir.display()
            ))),
        }
    })
    .await??;
    record(inner, &rec.id, State::Deleted, reason)?;
    // Its peers forget its name.
    if !nets.is_empty() {
        let inner = inner.clone();
        tokio::spawn(async move { crate::networks::refresh_members(&inner, &nets).await });
    }
    Ok(())
}
