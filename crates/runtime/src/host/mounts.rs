//! Mounting on the host, shared by both runtimes: the overlays of a
//! sandbox's root filesystem ([`mount_overlays`], mounted by the namespace
//! runtime's boot child in the sandbox's mount namespace and by the gVisor
//! runtime on the host), in-root paths that never follow an image's
//! symlinks ([`in_root`]), what is below a mount point ([`mounts_below`]),
//! and the kernel paths every sandbox gets masked or read-only.

use std::path::{Component, Path, PathBuf};

use super::kernel::{Host, Kernel, Mount};
use crate::SandboxConfig;

/// Files and directories hidden from the sandbox (OCI defaults).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths the sandbox may read but not write.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub(crate) type R<T> = Result<T, String>;

pub(crate) fn mnt(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> R<()> {
    let m = Mount {
        source,
        target,
        fstype,
        flags,
        data,
    };
    mnt_on(&Kernel, &m)
}

/// `host.mount(m)`, its error naming what was mounted where.
fn mnt_on(host: &dyn Host, m: &Mount<'_>) -> R<()> {
    let Mount {
        source,
        target,
        fstype,
        ..
    } = *m;
    host.mount(m).map_err(|e| {
        format!(
            "mounting {} ({}) at {}: {e}",
            source.map_or("none".into(), |s| s.display().to_string()),
            fstype.unwrap_or("bind"),
            target.display()
        )
    })
}

pub(crate) fn mkdir_p(p: &Path) -> R<()> {
    std::fs::create_dir_all(p).map_err(|e| format!("creating {}: {e}", p.display()))
}

/// The mode of a directory the sandbox sees: an overlay's upper dir (the
/// merged root takes its mode) or a mount point made inside the root.
const VISIBLE_DIR_MODE: u32 = 0o755;

/// Create the directory `p` (its parents with [`mkdir_p`]) and, only if
/// this call created it, give it [`VISIBLE_DIR_MODE`] whatever the umask:
/// the gVisor runtime mounts the root in the daemon, whose umask is 077,
/// and a 0700 upper dir would make e.g. `/usr` unreadable to every user
/// but root inside. A directory that exists keeps its mode (the sandbox
/// may have changed it).
pub(crate) fn mkdir_visible(p: &Path) -> R<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = p.parent() {
        mkdir_p(parent)?;
    }
    match std::fs::create_dir(p) {
        Ok(()) => std::fs::set_permissions(p, std::fs::Permissions::from_mode(VISIBLE_DIR_MODE))
            .map_err(|e| format!("setting the mode of {}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("creating {}: {e}", p.display())),
    }
}

/// `root` joined with the absolute in-sandbox path `path`, creating missing
/// directories and refusing symlinks on the way, so that an image cannot
/// redirect a mount onto the host (e.g. `/run -> /etc` absolute symlinks
/// would otherwise be followed relative to the host's root).
pub fn in_root(root: &Path, path: &str, create_dirs: bool) -> R<PathBuf> {
    let mut cur = root.to_path_buf();
    for c in Path::new(path).components() {
        let Component::Normal(name) = c else {
            continue;
        };
        cur.push(name);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{path} inside the sandbox goes through the symlink {}; the image must \
                     have a real directory there",
                    cur.display()
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create_dirs => {
                mkdir_visible(&cur)?;
            }
            Err(e) => return Err(format!("{}: {e}", cur.display())),
        }
    }
    Ok(cur)
}

fn overlay(
    host: &dyn Host,
    lower: &str,
    upper: &Path,
    work: &Path,
    target: &Path,
    userxattr: bool,
) -> R<()> {
    // The merged dir takes the upper dir's mode; the work dir stays private.
    mkdir_visible(upper)?;
    mkdir_p(work)?;
    let mut data = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    if userxattr {
        data.push_str(",userxattr");
    }
    // nodev: with CAP_MKNOD a sandbox could create a node for a host disk;
    // on a nodev mount such a node cannot be opened. nosuid: gVisor mounts
    // this on the host, where a setuid file the sandbox made must stay inert.
    mnt_on(
        host,
        &Mount {
            source: Some(Path::new("overlay")),
            target,
            fstype: Some("overlay"),
            flags: libc::MS_NODEV | libc::MS_NOSUID,
            data: Some(&data),
        },
    )
}

/// The root overlay (image layers under the volume's upper dir) and one
/// overlay per host dir, at `rootfs`. Shared with the gVisor runtime, which
/// mounts the same root on the host.
pub fn mount_overlays(host: &dyn Host, config: &SandboxConfig, rootfs: &Path) -> R<()> {
    let upper_root = &config.rootfs.upper_root;
    // A volume once used in a user namespace keeps user.overlay.* marks.
    let userxattr = super::userxattr::volume_converted(upper_root);
    for o in config.rootfs.overlays() {
        let lower = o
            .lowers
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        // The root overlay first: the host dirs' targets are inside it.
        let target = in_root(rootfs, &o.at.to_string_lossy(), true)?;
        overlay(host, &lower, &o.upper, &o.work, &target, userxattr)?;
    }
    Ok(())
}

/// Unmount whatever is mounted on `dir` and below it, without reading the
/// mount table or resolving any path below `dir` (a sandbox may write
/// there): a lazy unmount of `dir` detaches every mount under it with it,
/// and `UMOUNT_NOFOLLOW` refuses a `dir` that is a symlink. Repeats while
/// mounts are stacked on `dir`; best effort and idempotent.
pub fn unmount_tree(host: &dyn Host, dir: &Path) {
    for _ in 0..16 {
        if host
            .unmount(dir, libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW)
            .is_err()
        {
            break;
        }
    }
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    // Deepest first.
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// Runs `f` in a forked child under umask 077 (the daemon's), so the
    /// test process keeps its own umask; the child's exit code says
    /// whether `f` succeeded.
    fn under_umask_077(f: impl FnOnce() -> R<()>) {
        // SAFETY: the child makes a few file system calls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: umask and _exit in the child only.
            unsafe {
                libc::umask(0o077);
                libc::_exit(if f().is_ok() { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }

    #[test]
    fn upper_dirs_and_mount_points_are_0755_under_the_daemons_umask() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("vol/host/usr/upper");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let (u, r) = (upper.clone(), root.clone());
        under_umask_077(move || {
            mkdir_visible(&u)?;
            in_root(&r, "/opt/tool", true).map(|_| ())
        });
        assert_eq!(mode(&upper), 0o755);
        assert_eq!(mode(&root.join("opt")), 0o755);
        assert_eq!(mode(&root.join("opt/tool")), 0o755);
        // Parents stay as the umask made them: only what the sandbox sees
        // is opened up.
        assert_eq!(mode(&dir.path().join("vol/host")), 0o700);
    }

    #[test]
    fn an_existing_upper_dir_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("upper");
        std::fs::create_dir(&upper).unwrap();
        std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o750)).unwrap();
        mkdir_visible(&upper).unwrap();
        assert_eq!(mode(&upper), 0o750);
    }
}
