//! Named volume requests: create, list, inspect, resize and remove a
//! tenant's volumes (see [`crate::volumes`]). Sizes count towards the
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
        volumes::validate_name(name)?;
        volumes::check_size(size)?;
        let size = size.div_ceil(4096) * 4096;
        // The quota check and the record in one step: two creates cannot
        // both take the last free bytes.
        let _q = self.inner.quota_lock.lock().await;
        if self.inner.store.find_volume(tenant, name)?.is_some() {
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
        blocking(move || inner.named.create(&id, size)).await??;
        if let Err(e) = self.inner.store.insert_volume(&v) {
            let inner = self.inner.clone();
            let id = v.id.clone();
            let _ = blocking(move || inner.named.delete(&id)).await;
            return Err(e.into());
        }
        drop(_q);
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
        let _q = self.inner.quota_lock.lock().await;
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
        self.check_quota(
            tenant,
            &crate::quota::Held {
                storage: size - v.size_bytes,
                ..Default::default()
            },
        )
        .await?;
        // Not while a sandbox that uses it starts or stops (its mount
        // comes and goes under the users lock).
        let inner = self.inner.clone();
        let id = v.id.clone();
        blocking(move || {
            let _users = inner.named_users.lock().unwrap_or_else(|p| p.into_inner());
            inner.named.resize(&id, size)
        })
        .await?
        .map_err(|e| match e {
            // In use where it cannot grow online: the caller's to settle.
            dwell_storage::StorageError::Loop(m) => Error::Conflict(m),
            e => e.into(),
        })?;
        self.inner.store.set_volume_size(&v.id, size)?;
        drop(_q);
        self.volume(tenant, &v.name)
    }

    /// Remove a named volume and its data; refused while any live sandbox
    /// of the tenant (running or stopped) uses it.
    pub async fn delete_volume(&self, tenant: &str, name: &str) -> Result<()> {
        // Creates record their volumes under this lock too: no sandbox
        // can start using it between the check and the removal.
        let _q = self.inner.quota_lock.lock().await;
        let v = self.volume_record(tenant, name)?;
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
