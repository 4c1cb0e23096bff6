//! The sandbox's root filesystem, assembled on the host for runsc: the
//! same overlays the namespace runtime builds inside its sandboxes (image
//! layers plus the volume's upper dir at `/`, one overlay per host dir), but
//! mounted at `state_dir/rootfs` in the host's mount namespace, because
//! runsc takes the root as a host path. gVisor's gofer then serves it to
//! the sandbox; the sandbox itself never sees a host mount.
//!
//! Unmounted on stop (deepest first).

use std::path::{Path, PathBuf};

use crate::ns::{layout, mounts, sys};
use crate::{Error, Result, SandboxConfig};

/// Where the merged root is mounted on the host.
pub fn path(config: &SandboxConfig) -> PathBuf {
    layout::state_file(config, layout::ROOTFS_DIR)
}

fn overlay(lower: &str, upper: &Path, work: &Path, target: &Path) -> Result<()> {
    for d in [upper, work, target] {
        std::fs::create_dir_all(d).map_err(|e| Error::Io {
            context: format!("creating {}", d.display()),
            source: e,
        })?;
    }
    let data = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    sys::mount(
        Some(Path::new("overlay")),
        target,
        Some("overlay"),
        libc::MS_NODEV | libc::MS_NOSUID,
        Some(&data),
    )
    .map_err(|e| Error::Io {
        context: format!("mounting the overlay {data} at {}", target.display()),
        source: e,
    })
}

/// Mount the root overlay and the host-dir overlays. On error, whatever
/// was mounted is unmounted again.
pub fn mount(config: &SandboxConfig) -> Result<PathBuf> {
    let root = path(config);
    let upper_root = &config.rootfs.upper_root;
    let lower = config
        .rootfs
        .layers
        .iter()
        .map(|l| l.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    overlay(
        &lower,
        &upper_root.join("root/upper"),
        &upper_root.join("root/work"),
        &root,
    )?;
    let host_dirs = || -> Result<()> {
        for dir in &config.rootfs.host_dirs {
            let name = layout::host_dir_name(dir);
            let target =
                mounts::in_root(&root, &dir.to_string_lossy(), true).map_err(Error::Start)?;
            overlay(
                &dir.display().to_string(),
                &upper_root.join("host").join(&name).join("upper"),
                &upper_root.join("host").join(&name).join("work"),
                &target,
            )?;
        }
        Ok(())
    };
    if let Err(e) = host_dirs() {
        unmount(config);
        return Err(e);
    }
    Ok(root)
}

/// Mount points at or below `dir` in the host's mount namespace, deepest
/// first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

/// Unmount everything below the root mount point (best effort: lazily, so
/// a busy mount cannot fail a stop).
pub fn unmount(config: &SandboxConfig) {
    for m in mounts_below(&path(config)) {
        let _ = sys::umount2(&m, libc::MNT_DETACH);
    }
}
