//! Mounting and unmounting volume filesystems, and asking the kernel what
//! is mounted where (`/proc/self/mountinfo`).

use std::fs;
use std::io;
use std::path::Path;

use crate::error::{Result, StorageError};
use crate::fsutil::cpath;

/// Mounts block device `dev` (ext4) on `target` with `nodev`, and with
/// `nosuid` when `nosuid` is set (named volumes, whose host-side mount must
/// not make a sandbox's set-id files usable by host users). Sandbox root
/// volumes keep set-id programs usable (a sandbox may install sudo): they
/// are only reached through the sandbox's own overlay.
pub(crate) fn mount_ext4(dev: &Path, target: &Path, options: &str, nosuid: bool) -> Result<()> {
    let err = |source| StorageError::Mount {
        op: "mount ext4 volume on",
        path: target.to_path_buf(),
        source,
    };
    let src = cpath(dev).map_err(err)?;
    let tgt = cpath(target).map_err(err)?;
    let opts = std::ffi::CString::new(options).expect("static mount options have no NUL");
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            c"ext4".as_ptr(),
            libc::MS_NODEV | if nosuid { libc::MS_NOSUID } else { 0 },
            opts.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

/// Lazily unmounts everything stacked on `target` (MNT_DETACH), so that a
/// copy of the mount held in another mount namespace does not block us.
/// Not being mounted is not an error.
pub(crate) fn unmount_all(target: &Path) -> Result<()> {
    let err = |source| StorageError::Mount {
        op: "unmount volume at",
        path: target.to_path_buf(),
        source,
    };
    let tgt = cpath(target).map_err(err)?;
    // Bounded: each round removes one stacked mount.
    for _ in 0..64 {
        if !is_mountpoint(target) {
            return Ok(());
        }
        // SAFETY: valid C string.
        let rc = unsafe { libc::umount2(tgt.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(());
            }
            return Err(err(e));
        }
    }
    Ok(())
}

/// Whether `path` is a mount point in this process's mount namespace.
/// Asked of `path` itself (statx's mount-root attribute, not following a
/// symlink): constant time, where a scan of `/proc/self/mountinfo` grows
/// with every sandbox on the host (and callers such as the loop-device
/// sweep ask once per volume: quadratic at a thousand sandboxes). The
/// scan remains for kernels without the attribute (before 5.8).
pub(crate) fn is_mountpoint(path: &Path) -> bool {
    match is_mount_root(path) {
        Some(answer) => answer,
        None => listed_in_mountinfo(path),
    }
}

/// statx's answer, or None when this kernel does not report it.
fn is_mount_root(path: &Path) -> Option<bool> {
    let c = cpath(path).ok()?;
    // SAFETY: statx only writes the struct it is given.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a struct of the right type.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT,
            0,
            &mut stx,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error().raw_os_error();
        return matches!(e, Some(libc::ENOENT) | Some(libc::ENOTDIR)).then_some(false);
    }
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    (stx.stx_attributes_mask & bit != 0).then_some(stx.stx_attributes & bit != 0)
}

fn listed_in_mountinfo(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_encoded_bytes();
    info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape(mp).as_slice() == want)
    })
}

/// Decodes the octal escapes (`\040` for space, ...) used in mountinfo.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push(((d[0] - b'0') << 6) | ((d[1] - b'0') << 3) | (d[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{is_mountpoint, listed_in_mountinfo, unescape};
    use std::path::Path;

    #[test]
    fn a_mount_point_is_told_by_statx_as_by_mountinfo() {
        for p in ["/", "/proc", "/sys", "/etc", "/no/such/path", "/proc/self"] {
            let p = Path::new(p);
            assert_eq!(is_mountpoint(p), listed_in_mountinfo(p), "{}", p.display());
        }
        assert!(is_mountpoint(Path::new("/proc")));
        assert!(!is_mountpoint(Path::new("/etc/hostname/x")));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b"), b"/a b");
        assert_eq!(unescape("/plain"), b"/plain");
        assert_eq!(unescape(r"/x\"), b"/x\\");
    }
}
