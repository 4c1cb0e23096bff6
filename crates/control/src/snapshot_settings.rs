//! How the daemon uses its snapshot store: whether new snapshots are
//! encrypted (by default they are) with a per-tenant key derived from the
//! snapshot master key (`<data-dir>/snapshot.key`, or the file that
//! `--snapshot-key` names so daemons sharing a store share it), and how
//! often the sweep collects chunks no snapshot references.
//!
//! Snapshots sealed before the master key existed (format versions 1 and 2)
//! used a tenant key derived from the daemon key; they still restore, see
//! [`crate::secrets::Sealer::snapshot_key`].

use std::time::Duration;

use dwell_snapshot::{MasterKey, TenantKey};

use crate::controller::Inner;

/// Snapshot settings of a daemon.
#[derive(Debug, Clone, Default)]
pub struct SnapshotSettings {
    /// Encrypt new snapshots (and archives) with the tenant's key.
    pub encrypt: bool,
    /// Collect unreferenced chunks this often from the sweep (`None`: only
    /// on request, `dwell snapshot gc`).
    pub gc_every: Option<Duration>,
    /// The master key tenant keys are derived from. Required to encrypt;
    /// without it only plaintext and legacy-keyed snapshots restore.
    pub master: Option<MasterKey>,
}

impl Inner {
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
    ) -> crate::Result<crate::snapshots::Ctx<'a>> {
        Ok(crate::snapshots::Ctx {
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
