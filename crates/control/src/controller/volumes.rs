//! Named volume requests: create (empty or from a volume snapshot), list,
//! inspect, resize, snapshot, restore and remove a tenant's volumes (see
//! [`crate::volumes`]). Snapshots go to the snapshot store like a
//! sandbox's (chunked, deduplicated, encrypted with the tenant's key),
//! labelled as the volume's; one of a volume in use is taken with its
//! filesystem frozen (FIFREEZE) for a consistent image. Sizes count towards the
//! tenant's storage quota from create on; a volume some sandbox uses
//! (running or not) is not removed, and another tenant's is not found.

use dwell_store::NamedVolume;

use super::Controller;
use crate::context::blocking;
use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::volumes::{self, NamedVolumeView};

impl Controller {
    fn volume_record(&self, tenant: &str, name: &str) -> Result<NamedVolume> {
        self.inner
            .store
            .find_volume(tenant, name)?
            .ok_or_else(|| Error::VolumeNotFound(name.to_string()))
    }

    fn volume_view(&self, v: &NamedVolume) -> Result<NamedVolumeView> {
        let info = self.inner.named.info(&v.id)?;
        Ok(NamedVolumeView {
            id: v.id.clone(),
            name: v.name.clone(),
            size_bytes: v.size_bytes,
            used_bytes: info.used_bytes,
            mounted: info.mounted,
            used_by: volumes::users(&self.inner, &v.tenant, &v.name)?,
            created_at: v.created_at,
        })
    }

    /// Create a named volume of `size` bytes for `tenant`.
    pub async fn create_volume(
        &self,
        tenant: &str,
        name: &str,
        size: u64,
    ) -> Result<NamedVolumeView> {
        self.create_volume_from(tenant, name, Some(size), None)
            .await
    }

    /// Create a named volume for `tenant`: empty, of `size` bytes, or a
    /// copy of the volume snapshot `from` (its size; `size` must then be
    /// absent or equal).
    pub async fn create_volume_from(
        &self,
        tenant: &str,
        name: &str,
        size: Option<u64>,
        from: Option<&str>,
    ) -> Result<NamedVolumeView> {
        volumes::validate_name(name)?;
        let snap = match from {
            Some(f) => Some(self.volume_snapshot_of(tenant, f).await?),
            None => None,
        };
        let size = match (&snap, size) {
            (Some(m), None) => m.source.volume_size,
            (Some(m), Some(s)) if s.div_ceil(4096) * 4096 == m.source.volume_size => s,
            (Some(m), Some(_)) => {
                return Err(Error::invalid(
                    "size",
                    format!(
                        "snapshot {} is of a {} volume: leave --size out (grow the new volume \
                         afterwards with `dwell volume resize`)",
                        m.id,
                        crate::size::format_size(m.source.volume_size)
                    ),
                ))
            }
            (None, Some(s)) => s,
            (None, None) => {
                return Err(Error::invalid(
                    "size",
                    "give the volume's size (e.g. --size 20G), or --from a volume snapshot",
                ))
            }
        };
        volumes::check_size(size)?;
        let size = size.div_ceil(4096) * 4096;
        // The quota check and a reservation in one step: two creates
        // cannot both take the last free bytes. The slow part (making the
        // file system, a restore) runs without the lock every tenant's
        // create and start wait on; the reservation counts meanwhile.
        let q = self.quota_guard(tenant).await?;
        let key = format!("create:{tenant}/{name}");
        if self.inner.store.find_volume(tenant, name)?.is_some()
            || volumes::Pending::running(&self.inner, &key)
        {
            return Err(Error::VolumeNameTaken(name.to_string()));
        }
        self.check_quota(
            tenant,
            &crate::quota::Held {
                storage: size,
                ..Default::default()
            },
        )
        .await?;
        let reserved = volumes::Pending::reserve(&self.inner, key, tenant, size)
            .ok_or_else(|| Error::VolumeNameTaken(name.to_string()))?;
        drop(q);
        let v = NamedVolume {
            id: new_id(),
            tenant: tenant.to_string(),
            name: name.to_string(),
            size_bytes: size,
            created_at: self.inner.clock.now_ms(),
        };
        // The data first: a crash in between leaves a volume no record
        // explains (removed by the next daemon start), never a record
        // without data.
        let inner = self.inner.clone();
        let id = v.id.clone();
        let t = tenant.to_string();
        blocking(move || -> Result<()> {
            let info = inner.named.create(&id, size)?;
            let Some(m) = snap else { return Ok(()) };
            let filled = (|| -> Result<()> {
                let image = info.image.ok_or_else(|| {
                    Error::Conflict(
                        "volume snapshots need loop-backed volumes; this host gives directory \
                         volumes"
                            .into(),
                    )
                })?;
                let ctx = inner.snap_ctx(&t, false, None)?;
                crate::snapshots::restore_into(&*inner.snapshots, &m, &image, &ctx)
            })();
            if filled.is_err() {
                let _ = inner.named.delete(&id);
            }
            filled
        })
        .await??;
        // The record takes over from the reservation under the lock, so
        // the bytes count all along.
        let q = self.quota_guard(tenant).await?;
        if let Err(e) = self.inner.store.insert_volume(&v) {
            drop(reserved);
            drop(q);
            let inner = self.inner.clone();
            let id = v.id.clone();
            let _ = blocking(move || inner.named.delete(&id)).await;
            return Err(e.into());
        }
        drop(reserved);
        drop(q);
        self.volume_view(&v)
    }

    /// The tenant's named volumes, by name.
    pub fn volumes(&self, tenant: &str) -> Result<Vec<NamedVolumeView>> {
        self.inner
            .store
            .list_volumes(Some(tenant))?
            .iter()
            .map(|v| self.volume_view(v))
            .collect()
    }

    /// One named volume.
    pub fn volume(&self, tenant: &str, name: &str) -> Result<NamedVolumeView> {
        self.volume_view(&self.volume_record(tenant, name)?)
    }

    /// Grow a named volume to `size` bytes: online while sandboxes use it
    /// (where the daemon may: CAP_SYS_RESOURCE), offline otherwise.
    /// Shrinking is refused.
    pub async fn resize_volume(
        &self,
        tenant: &str,
        name: &str,
        size: u64,
    ) -> Result<NamedVolumeView> {
        volumes::check_size(size)?;
        let size = size.div_ceil(4096) * 4096;
        let q = self.quota_guard(tenant).await?;
        let v = self.volume_record(tenant, name)?;
        if size < v.size_bytes {
            return Err(Error::invalid(
                "size",
                format!(
                    "volume {} is {}; volumes only grow (shrinking an ext4 in use is not \
                     supported): create a smaller volume and copy the data over instead",
                    v.name,
                    crate::size::format_size(v.size_bytes)
                ),
            ));
        }
        if size == v.size_bytes {
            return self.volume_view(&v);
        }
        let extra = size - v.size_bytes;
        self.check_quota(
            tenant,
            &crate::quota::Held {
                storage: extra,
                ..Default::default()
            },
        )
        .await?;
        let busy = || {
            Error::Conflict(format!(
                "volume {} is already being resized or restored; wait for that to finish",
                v.name
            ))
        };
        // The growth is held by a reservation while e2fsck/resize2fs run,
        // without the lock every tenant's create and start wait on.
        let reserved =
            volumes::Pending::reserve(&self.inner, format!("resize:{}", v.id), tenant, extra)
                .ok_or_else(busy)?;
        drop(q);
        // No sandbox that uses it starts meanwhile (the volume is marked
        // busy under the users lock, which is not held during the work).
        let inner = self.inner.clone();
        let id = v.id.clone();
        let grown = blocking(move || {
            let marked = {
                let _users = inner.named_users.lock().unwrap_or_else(|p| p.into_inner());
                volumes::Busy::mark(&inner, &id)
            };
            let Some(_marked) = marked else {
                return Ok(false);
            };
            inner.named.resize(&id, size).map(|_| true)
        })
        .await?
        .map_err(|e| match e {
            // In use where it cannot grow online: the caller's to settle.
            dwell_storage::StorageError::Loop(m) => Error::Conflict(m),
            e => e.into(),
        })?;
        if !grown {
            return Err(busy());
        }
        let q = self.quota_guard(tenant).await?;
        self.inner.store.set_volume_size(&v.id, size)?;
        drop(reserved);
        drop(q);
        self.volume(tenant, &v.name)
    }

    /// A volume snapshot of `tenant` by id or name.
    async fn volume_snapshot_of(
        &self,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<dwell_snapshot::Manifest> {
        let store = self.inner.snapshots.clone();
        let (t, s) = (tenant.to_string(), id_or_name.to_string());
        let m = blocking(move || crate::snapshots::find(&*store, &t, &s)).await??;
        if !m.labels.contains_key(volumes::SNAPSHOT_LABEL) {
            return Err(Error::invalid(
                "snapshot",
                format!(
                    "snapshot {id_or_name} is of a sandbox, not of a named volume; `dwell create \
                     --from {id_or_name}` makes a sandbox from it"
                ),
            ));
        }
        Ok(m)
    }

    /// Snapshot a named volume into the snapshot store. A volume in use is
    /// frozen (FIFREEZE) while its image is read; its users' starts and
    /// stops wait meanwhile.
    pub async fn snapshot_volume(
        &self,
        tenant: &str,
        name: &str,
        snapshot_name: Option<String>,
    ) -> Result<dwell_snapshot::Manifest> {
        if let Some(n) = &snapshot_name {
            crate::model::validate_name(n).map_err(|_| {
                Error::invalid(
                    "name",
                    format!("{n:?}: use 1-63 lowercase letters, digits, '-', '_' or '.'"),
                )
            })?;
        }
        let v = self.volume_record(tenant, name)?;
        let used = self
            .inner
            .named
            .info(&v.id)
            .map(|i| i.used_bytes)
            .unwrap_or(0);
        self.check_quota(
            tenant,
            &crate::quota::Held {
                storage: used,
                ..Default::default()
            },
        )
        .await?;
        let inner = self.inner.clone();
        let t = tenant.to_string();
        blocking(move || -> Result<dwell_snapshot::Manifest> {
            let _users = inner.named_users.lock().unwrap_or_else(|p| p.into_inner());
            let info = inner.named.info(&v.id)?;
            let image = info.image.clone().ok_or_else(|| {
                Error::Conflict(
                    "volume snapshots need loop-backed volumes; this host gives directory volumes"
                        .into(),
                )
            })?;
            let parent = crate::snapshots::list(&*inner.snapshots, &t)?
                .into_iter()
                .filter(|m| m.labels.get(volumes::SNAPSHOT_LABEL) == Some(&v.id))
                .max_by(|a, b| a.created_at.cmp(&b.created_at));
            let mut ctx = inner.snap_ctx(&t, true, None)?;
            ctx.labels
                .insert(volumes::SNAPSHOT_LABEL.to_string(), v.id.clone());
            ctx.labels.insert("volume".to_string(), v.name.clone());
            let t0 = std::time::Instant::now();
            let _frozen = if info.mounted {
                crate::snapshots::preflush(&info.path, &image);
                Some(crate::snapshots::FsFreeze::new(&info.path)?)
            } else {
                None
            };
            let freeze = info.mounted.then(|| t0.elapsed());
            crate::snapshots::capture(
                &*inner.snapshots,
                &image,
                &t,
                &v.id,
                snapshot_name.as_deref(),
                parent.as_ref(),
                freeze,
                &ctx,
            )
        })
        .await?
    }

    /// Put a named volume back to a snapshot of it (any volume snapshot of
    /// the tenant of the same size). Refused while a sandbox that uses it
    /// runs: its files would change under it.
    pub async fn restore_volume(
        &self,
        tenant: &str,
        name: &str,
        snapshot: &str,
    ) -> Result<NamedVolumeView> {
        let v = self.volume_record(tenant, name)?;
        let m = self.volume_snapshot_of(tenant, snapshot).await?;
        if m.source.volume_size != v.size_bytes {
            return Err(Error::invalid(
                "snapshot",
                format!(
                    "snapshot {} is of a {} volume and {} is {}; make a new volume from it with \
                     `dwell volume create NAME --from {}`",
                    m.id,
                    crate::size::format_size(m.source.volume_size),
                    v.name,
                    crate::size::format_size(v.size_bytes),
                    m.id
                ),
            ));
        }
        let inner = self.inner.clone();
        let t = tenant.to_string();
        let vid = v.id.clone();
        let vname = v.name.clone();
        blocking(move || -> Result<()> {
            // Marked busy under the users lock (no sandbox mounts it
            // meanwhile), which is not held through the restore.
            let marked = {
                let users = inner.named_users.lock().unwrap_or_else(|p| p.into_inner());
                let info = inner.named.info(&vid)?;
                if info.mounted || users.get(&vid).is_some_and(|u| !u.is_empty()) {
                    return Err(Error::Conflict(format!(
                        "volume {vname} is in use by running sandboxes; stop them, then restore"
                    )));
                }
                volumes::Busy::mark(&inner, &vid).ok_or_else(|| {
                    Error::Conflict(format!(
                        "volume {vname} is being resized or restored; wait for that to finish"
                    ))
                })?
            };
            let _marked = marked;
            let info = inner.named.info(&vid)?;
            let image = info.image.ok_or_else(|| {
                Error::Conflict("volume snapshots need loop-backed volumes".into())
            })?;
            let ctx = inner.snap_ctx(&t, false, None)?;
            crate::snapshots::restore_into(&*inner.snapshots, &m, &image, &ctx)
        })
        .await??;
        self.volume_view(&v)
    }

    /// Remove a named volume and its data; refused while any live sandbox
    /// of the tenant (running or stopped) uses it.
    pub async fn delete_volume(&self, tenant: &str, name: &str) -> Result<()> {
        // Creates record their volumes under this lock too: no sandbox
        // can start using it between the check and the removal.
        let _q = self.quota_guard(tenant).await?;
        let v = self.volume_record(tenant, name)?;
        if volumes::Pending::running(&self.inner, &format!("resize:{}", v.id))
            || self
                .inner
                .named_busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&v.id)
        {
            return Err(Error::Conflict(format!(
                "volume {} is being resized or restored; remove it when that finishes",
                v.name
            )));
        }
        let users = volumes::users(&self.inner, tenant, &v.name)?;
        if !users.is_empty() {
            return Err(Error::VolumeInUse {
                volume: v.name.clone(),
                users,
            });
        }
        // The record first: a crash after it leaves data no record
        // explains, which the next start removes.
        self.inner.store.delete_volume(&v.id)?;
        let inner = self.inner.clone();
        let id = v.id.clone();
        blocking(move || {
            inner
                .named_users
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            inner.named.delete(&id)
        })
        .await??;
        Ok(())
    }
}
