//! The sandbox's root filesystem, assembled on the host for runsc: the
//! same overlays the namespace runtime builds inside its sandboxes (image
//! layers plus the volume's upper dir at `/`, one overlay per host dir), but
//! mounted at `state_dir/rootfs` in the host's mount namespace, because
//! runsc takes the root as a host path. gVisor's gofer then serves it to
//! the sandbox; the sandbox itself never sees a host mount.
//!
//! Unmounted on stop (deepest first).

use std::path::{Path, PathBuf};

use crate::host::{layout, mounts, sys};
use crate::{Error, Result, SandboxConfig};

/// Where the merged root is mounted on the host.
pub fn path(config: &SandboxConfig) -> PathBuf {
    layout::state_file(config, layout::ROOTFS_DIR)
}

/// Mount the root overlay and the host-dir overlays (the same ones the
/// namespace runtime builds). On error, whatever was mounted is unmounted
/// again.
pub fn mount(config: &SandboxConfig) -> Result<PathBuf> {
    let root = path(config);
    std::fs::create_dir_all(&root).map_err(|e| Error::Io {
        context: format!("creating {}", root.display()),
        source: e,
    })?;
    if let Err(e) = mounts::mount_overlays(config, &root) {
        unmount(config);
        return Err(Error::Start(e));
    }
    Ok(root)
}

/// Mount points at or below `dir` in the host's mount namespace, deepest
/// first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    crate::host::mounts::mounts_below(dir)
}

/// Unmount everything below the root mount point (best effort: lazily, so
/// a busy mount cannot fail a stop).
pub fn unmount(config: &SandboxConfig) {
    for m in mounts_below(&path(config)) {
        let _ = sys::umount2(&m, libc::MNT_DETACH);
    }
}
