//! A minimal /dev for the sandbox: a tmpfs holding bind mounts of the
//! harmless host character devices, a private devpts instance, /dev/shm and
//! the usual symlinks.

use std::os::unix::fs::symlink;
use std::path::Path;

use crate::host::sys;

/// Host devices made available inside the sandbox.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn mnt(
    src: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), String> {
    sys::mount(Some(Path::new(src)), target, fstype, flags, data)
        .map_err(|e| format!("mounting {src} at {}: {e}", target.display()))
}

pub fn mount_dev(rootfs: &Path) -> Result<(), String> {
    let dev = crate::host::mounts::in_root(rootfs, "/dev", true)?;
    // nodev: device nodes created later (CAP_MKNOD) cannot be opened; the
    // bind-mounted host nodes below keep their own mount's flags.
    mnt(
        "tmpfs",
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let target = dev.join(name);
        std::fs::write(&target, b"").map_err(|e| format!("creating {}: {e}", target.display()))?;
        mnt(&host.to_string_lossy(), &target, None, libc::MS_BIND, None)?;
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).map_err(|e| format!("creating {}: {e}", pts.display()))?;
    mnt(
        "devpts",
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).map_err(|e| format!("creating {}: {e}", shm.display()))?;
    mnt(
        "shm",
        &shm,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link)).map_err(|e| format!("creating /dev/{link}: {e}"))?;
    }
    Ok(())
}
