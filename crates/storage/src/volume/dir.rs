//! The fallback volume: a plain directory, used where loop devices are
//! impossible (not root, no `/dev/loop-control`). Usage is accounted by
//! walking the tree; the size limit is recorded but NOT enforced.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// Creates the data directory of a directory volume.
pub(crate) fn create(mnt: &Path) -> Result<()> {
    fs::create_dir(mnt).ctx("create volume directory", mnt)?;
    fs::set_permissions(mnt, fs::Permissions::from_mode(0o755)).ctx("chmod", mnt)
}

/// Bytes allocated by the files of a directory volume. The sandbox writes
/// the tree: it is walked through [`dwell_hostfs::Beneath`] (no symlink
/// followed, even one swapped in during the walk; other filesystems not
/// entered), iteratively (the sandbox chooses the depth).
pub(crate) fn used_bytes(mnt: &Path) -> u64 {
    let Ok(root) = dwell_hostfs::Beneath::open(mnt) else {
        return 0;
    };
    let Ok(top) = root.stat("") else {
        return 0;
    };
    let mut total = 0u64;
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let Ok(rd) = root.read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if e.stat.dev != top.dev {
                continue;
            }
            total = total.saturating_add(e.stat.allocated);
            if e.stat.kind == dwell_hostfs::FileKind::Dir {
                dirs.push(dir.join(&e.name));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_the_tree_and_never_what_a_symlink_points_at() {
        let t = tempfile::tempdir().unwrap();
        let big = t.path().join("host");
        fs::create_dir(&big).unwrap();
        fs::write(big.join("data"), vec![1u8; 1 << 20]).unwrap();
        let mnt = t.path().join("mnt");
        create(&mnt).unwrap();
        fs::create_dir_all(mnt.join("a/b")).unwrap();
        fs::write(mnt.join("a/b/f"), vec![1u8; 64 << 10]).unwrap();
        let before = used_bytes(&mnt);
        assert!(before >= 64 << 10, "{before}");
        std::os::unix::fs::symlink(&big, mnt.join("a/to-host")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root", mnt.join("root")).unwrap();
        let after = used_bytes(&mnt);
        assert!(
            after < before + (512 << 10),
            "{before} -> {after}: followed a symlink"
        );
    }
}
