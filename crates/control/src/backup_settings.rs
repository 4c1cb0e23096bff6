//! The daemon's backup settings (`serve --min-backup-every`,
//! `--on-node-loss`), as data: what [`crate::backup`] and
//! [`crate::cluster::recovery`] read from the context.

use std::sync::Mutex;
use std::time::Duration;

/// The shortest `backup_every` unless `serve --min-backup-every` says
/// otherwise.
pub const DEFAULT_MIN_EVERY: Duration = Duration::from_secs(60);

/// What becomes of a lost node's sandboxes (`serve --on-node-loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnNodeLoss {
    /// Those with a backup or an archive run again on another node from
    /// the newest of them.
    #[default]
    Restart,
    /// They wait for their node to come back.
    Keep,
}

impl OnNodeLoss {
    pub fn parse(s: &str) -> std::result::Result<OnNodeLoss, String> {
        match s {
            "restart" => Ok(OnNodeLoss::Restart),
            "keep" => Ok(OnNodeLoss::Keep),
            other => Err(format!(
                "{other:?} is not a node-loss policy; use restart (run a lost node's backed-up \
                 sandboxes elsewhere) or keep (wait for the node)"
            )),
        }
    }
}

/// The daemon's backup settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackupSettings {
    /// The shortest `backup_every` a create may ask for.
    pub min_every: Duration,
    pub on_node_loss: OnNodeLoss,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            min_every: DEFAULT_MIN_EVERY,
            on_node_loss: OnNodeLoss::Restart,
        }
    }
}

/// The settings as the daemon holds them.
#[derive(Default)]
pub(crate) struct Backups {
    settings: Mutex<BackupSettings>,
}

impl Backups {
    pub(crate) fn get(&self) -> BackupSettings {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set(&self, s: BackupSettings) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}
