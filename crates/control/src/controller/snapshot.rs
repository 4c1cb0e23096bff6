//! Snapshot operations: take one (the capture itself is
//! [`crate::snapshots`]), list, look up and delete them, roll a sandbox back
//! to one, and collect unreferenced chunks.

use super::Controller;
use crate::context::blocking;
use crate::error::{Error, Result};
use crate::model::{validate_name, Sandbox, State};
use crate::reconcile;
use crate::transitions::{refused, Request, Rules};

impl Controller {
    /// Snapshot a sandbox's volume. A running sandbox is frozen (processes
    /// and filesystem) while its data is read.
    pub async fn snapshot_create(
        &self,
        tenant: &str,
        id_or_name: &str,
        name: Option<String>,
    ) -> Result<dwell_snapshot::Manifest> {
        let sb = self.get(tenant, id_or_name)?;
        self.here(sb.node.as_deref(), &sb.name)?;
        if !sb.state.allows(Request::Snapshot) {
            return Err(refused(&sb, Request::Snapshot, format!(
                "sandbox {} is archived: its files are already in the snapshot store; start it to bring it back, then snapshot it",
                sb.name
            )));
        }
        if let Some(n) = &name {
            validate_name(n).map_err(|_| {
                Error::invalid(
                    "name",
                    format!("{n:?}: use 1-63 lowercase letters, digits, '-', '_' or '.'"),
                )
            })?;
        }
        // A snapshot adds at most the volume's data (and saved memory):
        // refuse one that cannot fit.
        let used = self
            .inner
            .volumes
            .info(&sb.id)
            .map(|v| v.used_bytes)
            .unwrap_or(0)
            + reconcile::hibernate::saved_bytes(&self.inner, &sb.id).unwrap_or(0);
        self.check_quota(
            tenant,
            &crate::quota::Held {
                storage: used,
                ..Default::default()
            },
        )
        .await?;
        let lock = self.inner.lock_for(&sb.id);
        let _g = lock.lock().await;
        // Re-read under the lock: a transition (a resume, an archive) may
        // have finished since, and the capture depends on the state.
        let sb = self.get_by_id(&sb.id)?;
        if !sb.state.allows(Request::Snapshot) {
            return Err(refused(
                &sb,
                Request::Snapshot,
                format!(
                    "sandbox {} was archived meanwhile: start it to bring it back, then \
                     snapshot it",
                    sb.name
                ),
            ));
        }
        let inner = self.inner.clone();
        let (tenant, id, state) = (tenant.to_string(), sb.id.clone(), sb.state);
        let m = blocking(move || {
            crate::snapshots::take::capture_now(
                &inner,
                &tenant,
                &id,
                state,
                name.as_deref(),
                Default::default(),
            )
        })
        .await??;
        self.inner.store.add_event(
            &sb.id,
            "snapshot",
            &format!(
                "snapshot {} taken ({} bytes new{})",
                m.id,
                m.sizes.uploaded,
                m.freeze_us
                    .map(|us| format!(", frozen {:.1} ms", us as f64 / 1000.0))
                    .unwrap_or_default()
            ),
        )?;
        Ok(m)
    }

    /// Snapshots of a tenant, oldest first, optionally of one sandbox.
    pub async fn snapshots(
        &self,
        tenant: &str,
        sandbox: Option<&str>,
    ) -> Result<Vec<dwell_snapshot::Manifest>> {
        let filter = match sandbox {
            Some(s) => Some(self.get(tenant, s)?.id),
            None => None,
        };
        let store = self.inner.snapshots.clone();
        let t = tenant.to_string();
        let mut all = blocking(move || crate::snapshots::list(&*store, &t)).await??;
        if let Some(id) = filter {
            all.retain(|m| m.source.sandbox.as_deref() == Some(id.as_str()));
        }
        // Archives and backups belong to their sandbox (`inspect` shows
        // them).
        all.retain(|m| !crate::snapshots::hidden(m));
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(all)
    }

    /// A snapshot by id or name.
    pub async fn snapshot(
        &self,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<dwell_snapshot::Manifest> {
        let store = self.inner.snapshots.clone();
        let (t, s) = (tenant.to_string(), id_or_name.to_string());
        blocking(move || crate::snapshots::find(&*store, &t, &s)).await?
    }

    /// Delete a snapshot and the chunks no other snapshot uses.
    pub async fn snapshot_delete(
        &self,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<dwell_snapshot::GcReport> {
        let m = self.snapshot(tenant, id_or_name).await?;
        let store = self.inner.snapshots.clone();
        let t = tenant.to_string();
        blocking(move || crate::snapshots::delete(&*store, &t, &m.id)).await?
    }

    /// Roll a sandbox back to a snapshot: stop it, replace its volume with
    /// the snapshot's content (verified chunk by chunk), and start it again
    /// if it was running.
    pub async fn restore(&self, tenant: &str, id_or_name: &str, snapshot: &str) -> Result<Sandbox> {
        let sb = self.get(tenant, id_or_name)?;
        self.here(sb.node.as_deref(), &sb.name)?;
        if !sb.state.allows(Request::Restore) {
            return Err(refused(
                &sb,
                Request::Restore,
                if sb.state == State::Archived {
                    format!(
                        "sandbox {} is archived; start it first, then restore",
                        sb.name
                    )
                } else {
                    // Hibernated: its saved memory holds the state of its
                    // current files.
                    format!(
                        "sandbox {} is hibernated and its saved memory belongs to its current \
                         files; resume it (or stop it, which discards the memory) first, then \
                         restore; a sandbox created from the snapshot starts its memory warm",
                        sb.name
                    )
                },
            ));
        }
        let m = self.snapshot(tenant, snapshot).await?;
        crate::volumes::not_a_volume_snapshot(&m)?;
        let was_running = sb.state.has_processes();
        if was_running {
            self.stop(tenant, &sb.id).await?;
        }
        {
            let lock = self.inner.lock_for(&sb.id);
            let _g = lock.lock().await;
            // Checked again under the lock: hibernated (or running) since.
            let now = self.get_by_id(&sb.id)?;
            if !matches!(now.state, State::Stopped | State::Error) {
                return Err(Error::Conflict(format!(
                    "sandbox {} became {} during the restore; restore it again",
                    now.name,
                    now.state.as_str()
                )));
            }
            let inner = self.inner.clone();
            let id = sb.id.clone();
            let m2 = m.clone();
            let tenant2 = tenant.to_string();
            blocking(move || -> Result<()> {
                if crate::reconcile::hibernate::saved(&inner, &id) {
                    return Err(Error::Conflict(
                        "the sandbox has saved memory that belongs to its current files; \
                         resume or stop it first"
                            .into(),
                    ));
                }
                inner.volumes.unmount(&id)?;
                let info = inner.volumes.info(&id)?;
                if info.size_bytes != m2.source.volume_size {
                    return Err(Error::Conflict(format!(
                        "snapshot {} is of a {} volume, this sandbox has {}; create a new sandbox from it instead",
                        m2.id,
                        crate::size::format_size(m2.source.volume_size),
                        crate::size::format_size(info.size_bytes),
                    )));
                }
                let image = info.image.ok_or_else(|| Error::Conflict("snapshots need loop-backed volumes".into()))?;
                let tracker = inner.progress.track(&id, "restore");
                let ctx = inner.snap_ctx(&tenant2, false, Some(&tracker))?;
                crate::snapshots::restore_into(&*inner.snapshots, &m2, &image, &ctx)
            })
            .await??;
            self.inner.store.add_event(
                &sb.id,
                "snapshot",
                &format!("volume restored from snapshot {}", m.id),
            )?;
        }
        if was_running {
            self.start(tenant, &sb.id).await
        } else {
            self.get(tenant, &sb.id)
        }
    }

    /// Collect unreferenced chunks (and archive snapshots nothing points
    /// at) in the snapshot store. Admin only: it spans every tenant.
    pub async fn snapshot_gc(&self) -> Result<crate::snapshot_gc::GcSummary> {
        crate::snapshot_gc::run_now(&self.inner).await
    }
}
