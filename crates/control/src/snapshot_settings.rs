//! How the daemon uses its snapshot store: whether new snapshots are
//! encrypted with a per-tenant key (derived from the daemon key, see
//! [`crate::secrets::Sealer::snapshot_key`]), and how often the sweep
//! collects chunks no snapshot references.

use std::time::Duration;

use dwell_snapshot::TenantKey;

use crate::controller::Inner;

/// Snapshot settings of a daemon.
#[derive(Debug, Clone, Default)]
pub struct SnapshotSettings {
    /// Encrypt new snapshots (and archives) with the tenant's key.
    pub encrypt: bool,
    /// Collect unreferenced chunks this often from the sweep (`None`: only
    /// on request, `dwell snapshot gc`).
    pub gc_every: Option<Duration>,
}

impl Inner {
    /// The tenant's snapshot key, for reading encrypted snapshots (`None`
    /// when the daemon key is unusable; restores of encrypted snapshots
    /// then fail with a wrong-key error naming the key they need).
    pub(crate) fn tenant_key(&self, tenant: &str) -> Option<TenantKey> {
        self.sealer.as_ref().ok().map(|s| s.snapshot_key(tenant))
    }

    /// The key new snapshots of `tenant` are sealed with, if encryption is
    /// on. Fails if it is on but the daemon key is unusable: never write
    /// in clear what was meant to be encrypted.
    pub(crate) fn write_key(&self, tenant: &str) -> crate::Result<Option<TenantKey>> {
        if !self.snapshot_settings.encrypt {
            return Ok(None);
        }
        match &self.sealer {
            Ok(s) => Ok(Some(s.snapshot_key(tenant))),
            Err(e) => Err(crate::Error::Internal(format!(
                "snapshots are to be encrypted (--encrypt-snapshots) but {e}"
            ))),
        }
    }

    /// The capture/restore context for `tenant`: its key for writing
    /// (encrypt on) or for reading (always), and a progress tracker.
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
                self.tenant_key(tenant)
            },
            progress,
            ..Default::default()
        })
    }
}
