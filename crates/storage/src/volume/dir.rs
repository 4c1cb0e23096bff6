//! The fallback volume: a plain directory, used where loop devices are
//! impossible (not root, no `/dev/loop-control`). Usage is accounted by
//! walking the tree; the size limit is recorded but NOT enforced.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::fsutil::disk_usage;

/// Creates the data directory of a directory volume.
pub(crate) fn create(mnt: &Path) -> Result<()> {
    fs::create_dir(mnt).ctx("create volume directory", mnt)?;
    fs::set_permissions(mnt, fs::Permissions::from_mode(0o755)).ctx("chmod", mnt)
}

/// Bytes allocated by the files of a directory volume.
pub(crate) fn used_bytes(mnt: &Path) -> u64 {
    disk_usage(mnt).saturating_sub(
        fs::symlink_metadata(mnt).map_or(0, |m| std::os::unix::fs::MetadataExt::blocks(&m) * 512),
    )
}
