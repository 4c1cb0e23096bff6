//! The sandbox's root filesystem, assembled on the host for runsc: the
//! same overlays the namespace runtime builds inside its sandboxes (image
//! layers plus the volume's upper dir at `/`, one overlay per host dir), but
//! mounted at `state_dir/rootfs` in the host's mount namespace, because
//! runsc takes the root as a host path. gVisor's gofer then serves it to
//! the sandbox; the sandbox itself never sees a host mount.
//!
//! Unmounted on stop (deepest first).

use std::path::{Path, PathBuf};

use crate::host::{layout, mounts, Host, Kernel};
use crate::{Error, Result, SandboxConfig};

/// Where the merged root is mounted on the host.
pub fn path(config: &SandboxConfig) -> PathBuf {
    layout::state_file(config, layout::ROOTFS_DIR)
}

/// Mount the root overlay and the host-dir overlays (the same ones the
/// namespace runtime builds). On error, whatever was mounted is unmounted
/// again.
pub fn mount(host: &dyn Host, config: &SandboxConfig) -> Result<PathBuf> {
    let root = path(config);
    std::fs::create_dir_all(&root).map_err(|e| Error::Io {
        context: format!("creating {}", root.display()),
        source: e,
    })?;
    if let Err(e) = mounts::mount_overlays(host, config, &root) {
        unmount(host, config);
        return Err(Error::Start(e));
    }
    Ok(root)
}

/// Mount points at or below `dir` in the host's mount namespace, deepest
/// first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    Kernel.mounts_below(dir)
}

/// Unmount the root and everything below it (best effort: lazily, so a
/// busy mount cannot fail a stop; no path below the root is resolved).
pub fn unmount(host: &dyn Host, config: &SandboxConfig) {
    crate::host::mounts::unmount_tree(host, &path(config));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::recording::{config, Recording};

    #[test]
    fn the_root_overlay_goes_first_and_comes_off_last() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let host = Recording::new();
        let root = mount(&host, &config).unwrap();
        let r = root.display();
        assert_eq!(
            host.calls(),
            [
                format!("mount overlay on {r}"),
                format!("mount overlay on {r}/usr")
            ]
        );
        // The upper dirs the overlays write to are on the volume.
        let vol = &config.rootfs.upper_root;
        assert!(vol.join("root/upper").is_dir() && vol.join("host/usr/work").is_dir());
        host.clear();
        unmount(&host, &config);
        assert_eq!(
            host.calls(),
            // The root's lazy unmount takes `usr` with it; the second
            // finds nothing mounted. No path below the root is named.
            [format!("unmount {r}"), format!("unmount {r}")]
        );
        assert!(host.mounted().is_empty());
    }

    #[test]
    fn a_mount_failing_midway_unmounts_what_was_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let host = Recording::new();
        let root = path(&config);
        host.fail_on(&format!("mount overlay on {}/usr", root.display()));
        let e = mount(&host, &config).unwrap_err().to_string();
        assert!(e.contains("/usr"), "{e}");
        assert_eq!(
            host.calls().last().unwrap(),
            &format!("unmount {}", root.display())
        );
        assert!(host.mounted().is_empty());
    }
}
