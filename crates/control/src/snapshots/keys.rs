//! The snapshot keys of a tenant, from the daemon's snapshot settings (see
//! [`crate::snapshot_settings`]), and the capture/restore context built
//! with them.

use dwell_snapshot::TenantKey;

use super::Ctx;
use crate::context::Context;

impl Context {
    /// The tenant's snapshot key derived from the master key, if there is one.
    fn master_tenant_key(&self, tenant: &str) -> Option<TenantKey> {
        self.snapshot_settings
            .master
            .as_ref()
            .map(|m| m.tenant(tenant))
    }

    /// The tenant's key of format versions 1 and 2 (from the daemon key),
    /// for reading snapshots sealed before the master key (`None` when the
    /// daemon key is unusable).
    fn legacy_tenant_key(&self, tenant: &str) -> Option<TenantKey> {
        self.sealer.as_ref().ok().map(|s| s.snapshot_key(tenant))
    }

    /// The key new snapshots of `tenant` are sealed with, if encryption is
    /// on. Fails if it is on but there is no master key: never write in
    /// clear what was meant to be encrypted.
    pub(crate) fn write_key(&self, tenant: &str) -> crate::Result<Option<TenantKey>> {
        if !self.snapshot_settings.encrypt {
            return Ok(None);
        }
        match self.master_tenant_key(tenant) {
            Some(k) => Ok(Some(k)),
            None => Err(crate::Error::Internal(
                "snapshots are to be encrypted but the daemon has no snapshot master key; \
                 give it one (--snapshot-key) or start it with --no-encrypt-snapshots"
                    .into(),
            )),
        }
    }

    /// The capture/restore context for `tenant`: its key for writing
    /// (encrypt on) or its keys for reading (always), and a progress tracker.
    pub(crate) fn snap_ctx<'a>(
        &self,
        tenant: &str,
        write: bool,
        progress: Option<&'a crate::progress::Tracker>,
    ) -> crate::Result<Ctx<'a>> {
        Ok(Ctx {
            key: if write {
                self.write_key(tenant)?
            } else {
                self.master_tenant_key(tenant)
            },
            legacy_key: if write {
                None
            } else {
                self.legacy_tenant_key(tenant)
            },
            progress,
            ..Default::default()
        })
    }
}
