//! User namespaces: each sandbox's root is an unprivileged host id range.
//!
//! PID 1 is cloned with `CLONE_NEWUSER` together with its other namespaces,
//! so they belong to its user namespace, by a boot process whose effective
//! uid is the range's base at that moment (see [`as_owner`]): the kernel
//! charges per-user counts (inotify instances, user namespaces, ...) up the
//! namespace chain to the namespace's owner, which must not be host root.
//! Then:
//!
//! - the boot parent (host root) writes `uid_map`/`gid_map` (`0 <base>
//!   <count>`), makes an idmapped detached mount (open_tree +
//!   mount_setattr(MOUNT_ATTR_IDMAP)) of the volume's upper root, of every
//!   image layer and of every host dir, and sends them to the child over a
//!   socketpair made before the clone (SCM_RIGHTS);
//! - the parent also opens, through /proc/<pid>/root, the host paths the
//!   child needs (rootfs mount point, agent binary) and sends
//!   them first: the child cannot reach the data dir;
//! - the child becomes root of its namespace, attaches the received mounts on a private staging tmpfs and mounts the
//!   overlays with `userxattr` from inside its namespace, with the layers,
//!   upper and work dirs given by descriptor. Mounted by host root the work
//!   dir would get EOVERFLOW; an overlay mount itself cannot be idmapped.
//!
//! On disk, files stay owned by 0-based ids: sandbox root writes uid 0,
//! uid 1000 inside writes 1000. Snapshots and copies restore into any range.

use std::ffi::CString;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::layout;
use super::mountapi::{self, FsContext, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID};
use super::mounts::{self, DwellSources};
use crate::host::userxattr;
use crate::{Error, IdMap, Result, SandboxConfig};

/// Ids per sandbox: 0..65535 inside.
pub const RANGE: u32 = 65_536;
/// First host id handed to sandboxes: 2^31, far above any host user or
/// the /etc/subuid ranges (100000 and up) tools allocate.
pub const DEFAULT_HOST_BASE: u32 = 0x8000_0000;
/// Ranges available above [`DEFAULT_HOST_BASE`] (the last one ends below
/// 2^32 - 1, which is no valid id).
pub const MAX_SLOTS: u32 = (u32::MAX - DEFAULT_HOST_BASE) / RANGE;

/// The range of slot `slot` (0-based).
pub fn range_of_slot(slot: u32) -> Result<IdMap> {
    if slot >= MAX_SLOTS {
        return Err(Error::Other(format!(
            "uid range slot {slot} is out of bounds: a host has {MAX_SLOTS} ranges of {RANGE} ids"
        )));
    }
    Ok(IdMap {
        host_base: DEFAULT_HOST_BASE + slot * RANGE,
        count: RANGE,
    })
}

/// What to tell an operator when user namespaces do not work here.
fn unsupported(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Start(format!(
        "{what}: {e}. This host cannot run sandboxes in user namespaces (needs idmapped \
         mounts, kernel 5.19+ on ext4/xfs/btrfs/tmpfs, and overlayfs layers by descriptor, \
         6.13+); run `dwell serve --user-namespaces off` to start sandboxes without them \
         (sandbox root is then host root)"
    ))
}

/// Run `clone` (a fork-like clone with `CLONE_NEWUSER`) with the effective
/// uid and gid set to the range's base, keeping every capability
/// (SECBIT_NO_SETUID_FIXUP), so that the new user namespace's owner is the
/// sandbox's own host uid. The parent gets its ids and securebits back;
/// the child (0 returned) keeps them until it becomes root of its namespace.
pub fn as_owner(map: IdMap, clone: impl FnOnce() -> Result<i32>) -> Result<i32> {
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    // SAFETY: prctl and set*id with integer arguments only; the boot
    // process is single-threaded, so the id change covers all of it.
    unsafe {
        let bits = libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0);
        if bits < 0
            || libc::prctl(
                libc::PR_SET_SECUREBITS,
                bits as libc::c_ulong | SECBIT_NO_SETUID_FIXUP,
                0,
                0,
                0,
            ) < 0
        {
            return Err(Error::Start(format!(
                "keeping capabilities across the id change: {}",
                io::Error::last_os_error()
            )));
        }
        let restore = || {
            libc::setresgid(u32::MAX, 0, u32::MAX);
            libc::setresuid(u32::MAX, 0, u32::MAX);
            libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0, 0, 0);
        };
        if libc::setresgid(u32::MAX, map.host_base, u32::MAX) < 0
            || libc::setresuid(u32::MAX, map.host_base, u32::MAX) < 0
        {
            let e = io::Error::last_os_error();
            restore();
            return Err(Error::Start(format!(
                "taking the sandbox's host uid {}: {e}",
                map.host_base
            )));
        }
        let pid = clone();
        if !matches!(pid, Ok(0)) {
            restore();
        }
        pid.map_err(|e| unsupported("cloning PID 1 into a new user namespace", e))
    }
}

/// Host-side preparation before the clone: the one-time xattr upgrade of
/// the volume and the layers, and the rootfs mount point.
pub fn prepare_host(config: &SandboxConfig) -> Result<()> {
    let upper = &config.rootfs.upper_root;
    // Its idmapped mount needs it; the overlays make their dirs inside.
    std::fs::create_dir_all(upper)
        .map_err(|e| Error::Start(format!("creating {}: {e}", upper.display())))?;
    userxattr::convert_volume(upper).map_err(|e| {
        Error::Start(format!(
            "converting the overlay xattrs of the volume {} for user namespaces: {e}",
            upper.display()
        ))
    })?;
    for layer in &config.rootfs.layers {
        userxattr::convert_layer(layer).map_err(|e| {
            Error::Start(format!(
                "converting the overlay xattrs of the layer {}: {e}",
                layer.display()
            ))
        })?;
    }
    let rootfs = layout::state_file(config, layout::ROOTFS_DIR);
    std::fs::create_dir_all(&rootfs)
        .map_err(|e| Error::Start(format!("creating {}: {e}", rootfs.display())))
}

/// Host paths the child needs, opened (O_PATH) by the parent in the
/// child's mount namespace through /proc/<pid>/root: the rootfs mount
/// point and the agent binary, in that order.
fn open_in_child(pid: i32, config: &SandboxConfig) -> Result<Vec<OwnedFd>> {
    let paths = [
        (layout::state_file(config, layout::ROOTFS_DIR), true),
        (config.agent_binary.clone(), false),
    ];
    let mut out = Vec::with_capacity(paths.len());
    for (path, dir) in paths {
        let rel = path.strip_prefix("/").unwrap_or(&path);
        let via = Path::new(&format!("/proc/{pid}/root")).join(rel);
        let flags = libc::O_PATH | if dir { libc::O_DIRECTORY } else { 0 };
        out.push(open_path(&via, flags).map_err(Error::Start)?);
    }
    Ok(out)
}

/// Descriptors [`open_in_child`] sends ahead of the mounts.
const HOST_FDS: usize = 2;

/// Parent side, right after the clone: map the child's ids, make the
/// idmapped mounts and send them (after the [`open_in_child`] ones: upper
/// root, layers, host dirs in order).
pub fn hand_over(pid: i32, config: &SandboxConfig, map: IdMap, sock: &UnixStream) -> Result<()> {
    write_maps(pid, map)?;
    let ns_path = format!("/proc/{pid}/ns/user");
    let userns = std::fs::File::open(&ns_path)
        .map(OwnedFd::from)
        .map_err(|e| Error::Start(format!("opening {ns_path}: {e}")))?;
    let mut sources: Vec<&Path> = vec![&config.rootfs.upper_root];
    sources.extend(config.rootfs.layers.iter().map(PathBuf::as_path));
    sources.extend(config.rootfs.host_dirs.iter().map(PathBuf::as_path));
    let mut fds = open_in_child(pid, config)?;
    for src in sources {
        fds.push(idmapped(src, &userns)?);
    }
    // Named volumes: idmapped like the sandbox's own volume (0-based on
    // disk, so every sandbox sharing one sees the same owners), made
    // read-only here when asked, before the sandbox holds them.
    for b in &config.binds {
        let m = idmapped(&b.source, &userns)?;
        let attrs = mountapi::MOUNT_ATTR_NOSUID as u64
            | mountapi::MOUNT_ATTR_NODEV as u64
            | if b.read_only {
                mountapi::MOUNT_ATTR_RDONLY
            } else {
                0
            };
        mountapi::set_attrs(&m, attrs).map_err(|e| {
            Error::Start(format!(
                "restricting the mount of volume {}: {e}",
                b.source.display()
            ))
        })?;
        fds.push(m);
    }
    send_fds(sock, &fds).map_err(|e| Error::Start(format!("passing mounts to the sandbox: {e}")))
}

/// A detached, idmapped copy of the mount at `src`.
fn idmapped(src: &Path, userns: &OwnedFd) -> Result<OwnedFd> {
    let m = mountapi::clone_tree(src)
        .map_err(|e| unsupported(&format!("cloning the mount of {}", src.display()), e))?;
    mountapi::set_idmap(&m, userns)
        .map_err(|e| unsupported(&format!("idmapping {}", src.display()), e))?;
    Ok(m)
}

fn write_maps(pid: i32, map: IdMap) -> Result<()> {
    let line = format!("0 {} {}\n", map.host_base, map.count);
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, &line)
            .map_err(|e| unsupported(&format!("writing {path} ({})", line.trim()), e))?;
    }
    Ok(())
}

/// Most descriptors one SCM_RIGHTS message carries (the kernel's SCM_MAX_FD).
const MAX_FDS: usize = 253;

fn send_fds(sock: &UnixStream, fds: &[OwnedFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::other(format!(
            "{} mounts are more than the {MAX_FDS} one message can pass; use fewer layers",
            fds.len()
        )));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let bytes = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
    let mut control = vec![0u8; space];
    let count = (raw.len() as u32).to_ne_bytes();
    let iov = [IoSlice::new(&count)];
    // SAFETY: msghdr is plain data; every pointer set below outlives the
    // sendmsg call and the control buffer has CMSG_SPACE bytes.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(bytes as u32) as usize;
        std::ptr::copy_nonoverlapping(raw.as_ptr(), libc::CMSG_DATA(cmsg).cast(), raw.len());
        if libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn recv_fds(sock: &UnixStream, want: usize) -> io::Result<Vec<OwnedFd>> {
    let mut count = [0u8; 4];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE((want * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = [IoSliceMut::new(&mut count)];
    let mut fds = Vec::new();
    // SAFETY: as in send_fds; received descriptors are taken over once.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr().cast();
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::other("the boot process went away"));
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let len = (*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("the mounts message was truncated"));
        }
    }
    if fds.len() != want || u32::from_ne_bytes(count) as usize != want {
        return Err(io::Error::other(format!(
            "expected {want} mounts from the boot process, got {}",
            fds.len()
        )));
    }
    Ok(fds)
}

type R<T> = std::result::Result<T, String>;

fn open_path(path: &Path, flags: libc::c_int) -> R<OwnedFd> {
    open_at(libc::AT_FDCWD, path, flags)
}

fn open_at(dir: RawFd, path: &Path, flags: libc::c_int) -> R<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| "path with a NUL byte")?;
    // SAFETY: valid C string and descriptor.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "opening {}: {}",
            path.display(),
            io::Error::last_os_error()
        ));
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The directory `rel` under `dir`, created (mode 0755) when missing, never
/// through a symlink; returned as an O_PATH descriptor.
fn subdir(dir: &OwnedFd, rel: &str) -> R<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        let at = cur.as_ref().unwrap_or(dir).as_raw_fd();
        let c = CString::new(part).map_err(|_| "name with a NUL byte")?;
        // SAFETY: valid C string and descriptor.
        if unsafe { libc::mkdirat(at, c.as_ptr(), 0o755) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("creating {rel} on the volume: {e}"));
            }
        }
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        cur = Some(open_at(at, Path::new(part), flags).map_err(|e| format!("{e} (in {rel})"))?);
    }
    cur.ok_or_else(|| format!("empty directory name {rel:?}"))
}

fn become_root() -> R<()> {
    // SAFETY: plain syscalls; the ids are mapped by now.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) < 0
            || libc::setresgid(0, 0, 0) < 0
            || libc::setresuid(0, 0, 0) < 0
        {
            return Err(format!(
                "becoming root of the sandbox's user namespace: {}",
                io::Error::last_os_error()
            ));
        }
        // The id change made the process non-dumpable, which would leave
        // its /proc files owned by the host's root (unmapped here).
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
    }
    Ok(())
}

/// One overlay from descriptors, mounted by the caller (inside the user
/// namespace) with `userxattr`; returns the detached mount.
fn overlay(lowers: &[OwnedFd], volume: &OwnedFd, rel: &str) -> R<OwnedFd> {
    let upper = subdir(volume, &format!("{rel}/upper"))?;
    let work = subdir(volume, &format!("{rel}/work"))?;
    let err = |e: io::Error| format!("mounting the overlay of {rel}: {e}");
    let ctx = FsContext::open("overlay").map_err(err)?;
    for l in lowers {
        ctx.fd("lowerdir+", l.as_raw_fd()).map_err(err)?;
    }
    ctx.fd("upperdir", upper.as_raw_fd()).map_err(err)?;
    ctx.fd("workdir", work.as_raw_fd()).map_err(err)?;
    ctx.flag("userxattr").map_err(err)?;
    ctx.mount(MOUNT_ATTR_NODEV).map_err(err)
}

/// Child side: build the root inside the user namespace and pivot into it.
pub fn build_root(config: &SandboxConfig, sock: &UnixStream) -> R<()> {
    let n = HOST_FDS
        + 1
        + config.rootfs.layers.len()
        + config.rootfs.host_dirs.len()
        + config.binds.len();
    let mut fds = recv_fds(sock, n).map_err(|e| format!("receiving the sandbox's mounts: {e}"))?;
    let mut mounts = fds.split_off(HOST_FDS);
    let binds = mounts.split_off(mounts.len() - config.binds.len());
    let [target, agent]: [OwnedFd; HOST_FDS] = fds
        .try_into()
        .map_err(|_| "wrong number of host descriptors")?;
    let rootfs = layout::state_file(config, layout::ROOTFS_DIR);
    become_root()?;
    crate::host::sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(|e| format!("making / private: {e}"))?;

    // Attach the idmapped mounts on a staging tmpfs at the rootfs mount
    // point: overlayfs takes layers on mounts of the caller's namespace only.
    let staging = FsContext::open("tmpfs")
        .and_then(|c| c.string("mode", "0700").map(|_| c))
        .and_then(|c| c.mount(MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID))
        .map_err(|e| format!("mounting the staging tmpfs: {e}"))?;
    mountapi::attach(&staging, target.as_raw_fd())
        .map_err(|e| format!("attaching the staging tmpfs at {}: {e}", rootfs.display()))?;
    for (i, m) in mounts.iter().enumerate() {
        let dir = subdir(&staging, &i.to_string())?;
        mountapi::attach(m, dir.as_raw_fd())
            .map_err(|e| format!("attaching an idmapped mount: {e}"))?;
    }
    let volume = mounts.remove(0);
    let hosts = mounts.split_off(config.rootfs.layers.len());
    let root = overlay(&mounts, &volume, "root")?;
    mountapi::attach(&root, target.as_raw_fd())
        .map_err(|e| format!("attaching the root overlay at {}: {e}", rootfs.display()))?;
    // SAFETY: fchdir on a valid descriptor.
    if unsafe { libc::fchdir(root.as_raw_fd()) } < 0 {
        return Err(format!(
            "entering the root overlay: {}",
            io::Error::last_os_error()
        ));
    }
    let here = Path::new(".");
    for (dir, lower) in config.rootfs.host_dirs.iter().zip(hosts) {
        let name = layout::host_dir_name(dir);
        let m = overlay(
            std::slice::from_ref(&lower),
            &volume,
            &format!("host/{name}"),
        )?;
        let at = crate::host::mounts::in_root(here, &dir.to_string_lossy(), true)?;
        mountapi::attach_at(&m, &at)
            .map_err(|e| format!("attaching the overlay of {}: {e}", dir.display()))?;
    }
    for (b, m) in config.binds.iter().zip(binds) {
        // Directories made in the sandbox's own root, never through a
        // symlink of the image (the root is private until the pivot).
        let at = crate::host::mounts::in_root(here, &b.target, true)?;
        mountapi::attach_at(&m, &at).map_err(|e| {
            format!(
                "attaching volume {} at {}: {e}",
                b.source.display(),
                b.target
            )
        })?;
    }
    let sources = DwellSources {
        agent: PathBuf::from(format!("/proc/self/fd/{}", agent.as_raw_fd())),
    };
    mounts::finish_root(here, &sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stay_below_the_invalid_id() {
        let first = range_of_slot(0).unwrap();
        assert_eq!(first.host_base, 1 << 31);
        let last = range_of_slot(MAX_SLOTS - 1).unwrap();
        assert!(u64::from(last.host_base) + u64::from(last.count) <= u64::from(u32::MAX));
        assert!(range_of_slot(MAX_SLOTS).is_err());
        assert_ne!(range_of_slot(1).unwrap(), first);
    }

    #[test]
    fn a_filesystem_without_idmapped_mounts_names_the_kill_switch() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: needs root");
            return;
        }
        let mut holder = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "sleep", "30"])
            .spawn()
            .unwrap();
        // Wait until the holder is in its own user namespace.
        let ns = format!("/proc/{}/ns/user", holder.id());
        let own = std::fs::read_link("/proc/self/ns/user").unwrap();
        let uid_map = format!("/proc/{}/uid_map", holder.id());
        for _ in 0..200 {
            let mapped = std::fs::read_to_string(&uid_map).is_ok_and(|m| !m.trim().is_empty());
            if mapped && std::fs::read_link(&ns).is_ok_and(|l| l != own) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let userns: OwnedFd = std::fs::File::open(&ns).unwrap().into();
        // procfs cannot be idmapped; a plain directory (ext4, tmpfs) can.
        let err = idmapped(Path::new("/proc"), &userns)
            .unwrap_err()
            .to_string();
        let ok = idmapped(Path::new("/tmp"), &userns);
        let _ = holder.kill();
        let _ = holder.wait();
        assert!(err.contains("--user-namespaces off"), "{err}");
        assert!(err.contains("/proc"), "{err}");
        ok.unwrap();
    }

    #[test]
    fn fds_pass_over_a_socketpair() {
        let (a, b) = UnixStream::pair().unwrap();
        let f1: OwnedFd = std::fs::File::open("/").unwrap().into();
        let f2: OwnedFd = std::fs::File::open("/proc").unwrap().into();
        send_fds(&a, &[f1, f2]).unwrap();
        let got = recv_fds(&b, 2).unwrap();
        assert_eq!(got.len(), 2);
        let p = std::fs::read_link(format!("/proc/self/fd/{}", got[1].as_raw_fd())).unwrap();
        assert_eq!(p, Path::new("/proc"));
        // The wrong count is refused.
        send_fds(&a, &[std::fs::File::open("/").unwrap().into()]).unwrap();
        assert!(recv_fds(&b, 2).is_err());
    }
}
