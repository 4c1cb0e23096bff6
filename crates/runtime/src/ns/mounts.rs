//! The sandbox's mount namespace: the root overlay, one overlay per host
//! directory, /proc, a read-only /sys with the sandbox's cgroup2 view,
//! masked and read-only kernel paths, the agent and its socket directory,
//! a boot id of the sandbox's own, and finally pivot_root into the new root.
//!
//! Runs in the boot child, inside the new mount namespace, before
//! capabilities are dropped.

use std::path::{Path, PathBuf};

use super::dev;
use super::layout;
use crate::host::mounts::{in_root, mkdir_p, mnt, mount_overlays, MASKED_PATHS, R, READONLY_PATHS};
use crate::host::sys;
use crate::SandboxConfig;

/// Mount everything under `state_dir/rootfs` and pivot into it.
pub fn build_root(config: &SandboxConfig) -> R<()> {
    mnt(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    let rootfs = layout::state_file(config, layout::ROOTFS_DIR);
    mkdir_p(&rootfs)?;
    mount_overlays(&crate::host::Kernel, config, &rootfs)?;
    mount_binds(&rootfs, &config.binds)?;
    let sources = DwellSources {
        agent: config.agent_binary.clone(),
    };
    finish_root(&rootfs, &sources)
}

/// Named volumes (without user namespaces): a bind of each at its target,
/// whose directories are made in the sandbox's root without following a
/// symlink, then remounted nosuid, nodev and, when asked, read-only.
fn mount_binds(rootfs: &Path, binds: &[crate::Bind]) -> R<()> {
    for b in binds {
        let at = in_root(rootfs, &b.target, true)?;
        mnt(Some(&b.source), &at, None, libc::MS_BIND, None)?;
        let ro = if b.read_only { libc::MS_RDONLY } else { 0 };
        mnt(
            None,
            &at,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV | ro,
            None,
        )?;
    }
    Ok(())
}

/// Where the host-side source of the sandbox's agent binary is: a host
/// path, or (in a user namespace, where the data dir cannot be looked up)
/// the `/proc/self/fd/N` link of a descriptor opened beforehand.
pub(crate) struct DwellSources {
    pub agent: PathBuf,
}

/// Everything after the overlays: kernel filesystems, /dev, the dwell
/// dirs, masked paths, and the pivot into `rootfs`.
pub(crate) fn finish_root(rootfs: &Path, src: &DwellSources) -> R<()> {
    mount_kernel_fs(rootfs)?;
    dev::mount_dev(rootfs)?;
    mount_dwell_dirs(rootfs, src)?;
    mask_paths(rootfs)?;
    pivot(rootfs)
}

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

fn mount_kernel_fs(rootfs: &Path) -> R<()> {
    let proc_dir = in_root(rootfs, "/proc", true)?;
    mnt(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        NOSUID_NODEV_NOEXEC,
        None,
    )?;
    let sys_dir = in_root(rootfs, "/sys", true)?;
    mnt(
        Some(Path::new("sysfs")),
        &sys_dir,
        Some("sysfs"),
        NOSUID_NODEV_NOEXEC | libc::MS_RDONLY,
        None,
    )?;
    // The child unshared its cgroup namespace once inside the sandbox's
    // cgroups, so this shows the sandbox's own subtree only.
    let cg = sys_dir.join("fs/cgroup");
    if cg.is_dir() {
        let flags = NOSUID_NODEV_NOEXEC | libc::MS_RDONLY;
        if sys::mount(
            Some(Path::new("cgroup2")),
            &cg,
            Some("cgroup2"),
            flags,
            None,
        )
        .is_err()
        {
            // No cgroup2 on this host (pure v1): hide the directory.
            mnt(
                Some(Path::new("tmpfs")),
                &cg,
                Some("tmpfs"),
                flags,
                Some("size=4k"),
            )?;
        }
    }
    Ok(())
}

fn mount_dwell_dirs(rootfs: &Path, src: &DwellSources) -> R<()> {
    // /run/dwell is the sandbox's own small tmpfs (charged to its memory
    // cgroup), not a host dir: nothing written there lands on the host, and
    // the agent's socket is not there (it is passed as a descriptor).
    let run_dst = in_root(rootfs, layout::SANDBOX_RUN_DIR, true)?;
    mnt(
        Some(Path::new("tmpfs")),
        &run_dst,
        Some("tmpfs"),
        NOSUID_NODEV_NOEXEC,
        Some(layout::SANDBOX_RUN_TMPFS),
    )?;
    boot_id(rootfs, &run_dst)?;

    // The agent lives on a small tmpfs so nothing of it lands in the
    // sandbox's writable layer.
    let agent_dir = in_root(rootfs, layout::SANDBOX_AGENT_DIR, true)?;
    mnt(
        Some(Path::new("tmpfs")),
        &agent_dir,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("size=16k,mode=755"),
    )?;
    let agent = agent_dir.join("agent");
    std::fs::write(&agent, b"").map_err(|e| format!("creating {}: {e}", agent.display()))?;
    mnt(Some(&src.agent), &agent, None, libc::MS_BIND, None)?;
    mnt(
        None,
        &agent,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )?;
    mnt(
        None,
        &agent_dir,
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        Some("size=16k,mode=755"),
    )
}

/// Where a sandbox's kernel boot id is read.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// Give the sandbox a boot id of its own, new at every start (as a VM's
/// kernel would), instead of the host's: what runs inside tells a restart
/// (a stop and start) from a pause and resume by it. Written to the
/// sandbox's `/run/dwell` tmpfs and bound read-only over
/// `/proc/sys/kernel/random/boot_id`.
fn boot_id(rootfs: &Path, run_dir: &Path) -> R<()> {
    let target = rootfs.join(BOOT_ID.trim_start_matches('/'));
    if !target.exists() {
        return Ok(()); // a kernel without one: nothing to replace
    }
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return Err(format!(
            "reading random bytes for the boot id: {}",
            std::io::Error::last_os_error()
        ));
    }
    // A version 4 UUID, as the kernel writes it.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let uuid = format!(
        "{}-{}-{}-{}-{}\n",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    let file = run_dir.join("boot_id");
    std::fs::write(&file, uuid).map_err(|e| format!("writing {}: {e}", file.display()))?;
    mnt(Some(&file), &target, None, libc::MS_BIND, None)?;
    mnt(
        None,
        &target,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | NOSUID_NODEV_NOEXEC,
        None,
    )
}

fn mask_paths(rootfs: &Path) -> R<()> {
    let null = rootfs.join("dev/null");
    for p in MASKED_PATHS {
        let target = rootfs.join(p.trim_start_matches('/'));
        match std::fs::metadata(&target) {
            Ok(m) if m.is_dir() => mnt(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                NOSUID_NODEV_NOEXEC | libc::MS_RDONLY,
                Some("size=0"),
            )?,
            Ok(_) => mnt(Some(&null), &target, None, libc::MS_BIND, None)?,
            Err(_) => {} // not present on this kernel: nothing to hide
        }
    }
    for p in READONLY_PATHS {
        let target = rootfs.join(p.trim_start_matches('/'));
        if !target.exists() {
            continue;
        }
        mnt(
            Some(&target),
            &target,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )?;
        mnt(
            None,
            &target,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | NOSUID_NODEV_NOEXEC,
            None,
        )?;
    }
    Ok(())
}

/// pivot_root into `rootfs` and detach the old root, so no path inside the
/// sandbox names a host file.
fn pivot(rootfs: &Path) -> R<()> {
    std::env::set_current_dir(rootfs).map_err(|e| format!("entering {}: {e}", rootfs.display()))?;
    // pivot_root(".", "."): the old root ends up stacked on the new one
    // and is detached right away; no directory is needed for it.
    sys::pivot_root(Path::new("."), Path::new("."))
        .map_err(|e| format!("pivot_root into {}: {e}", rootfs.display()))?;
    sys::umount2(Path::new("."), libc::MNT_DETACH)
        .map_err(|e| format!("detaching the old root: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))
}
