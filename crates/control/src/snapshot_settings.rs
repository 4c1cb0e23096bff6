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

use dwell_snapshot::MasterKey;

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
