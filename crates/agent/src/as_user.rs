//! File operations as a sandbox user: the operation runs on a thread of
//! its own whose file-system identity (fsuid, fsgid and supplementary
//! groups, all per-thread in the kernel) is the user's, so the kernel
//! checks that user's permissions on every path component, symlinks
//! included, and what the operation creates belongs to the user. Switching
//! the fsuid away from 0 also drops the file capabilities (DAC override,
//! chown, fowner) from that thread. The thread ends with the operation, so
//! no identity leaks into other work.
//!
//! Where the kernel has no `setfsuid` (gVisor answers it with an error),
//! the thread takes the user's effective ids instead (the raw
//! `setresgid`/`setresuid` calls, which change only the calling thread):
//! the file-system ids follow them, and leaving uid 0 clears the thread's
//! effective capabilities just the same.

use dwell_proto::{ErrorKind, RemoteError};

use crate::user;

/// Runs `op` as `user` (name or `uid[:gid]`, resolved against the
/// sandbox's /etc/passwd and /etc/group); as the agent itself when `user`
/// is absent or root.
pub fn run<T: Send + 'static>(
    user: Option<String>,
    op: impl FnOnce() -> Result<T, RemoteError> + Send + 'static,
) -> Result<T, RemoteError> {
    let Some(spec) = user else {
        return op();
    };
    let c = user::resolve(&spec)?;
    if c.uid == 0 {
        return op();
    }
    let groups = c.groups.clone();
    std::thread::Builder::new()
        .name("as-user".into())
        .spawn(move || {
            become_user(c.uid, c.gid, &groups).map_err(|why| {
                RemoteError::new(ErrorKind::Other, format!("acting as user {spec:?}: {why}"))
            })?;
            op()
        })
        .map_err(|e| RemoteError::from_io("starting a thread for a file operation", &e))?
        .join()
        .unwrap_or_else(|_| {
            Err(RemoteError::new(
                ErrorKind::Io,
                "a file operation's thread panicked",
            ))
        })
}

/// Sets this thread's file-system identity; verified, since `setfsuid`
/// reports no errors.
fn become_user(uid: u32, gid: u32, groups: &[u32]) -> Result<(), String> {
    // The raw syscall: libc's setgroups() changes every thread of the
    // process, the kernel call only this one.
    // SAFETY: groups points at groups.len() valid gid_t values.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if r != 0 {
        return Err(format!(
            "setgroups({groups:?}): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: plain per-thread syscalls on integer ids.
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
    }
    // An invalid id (-1) changes nothing and returns the current one.
    // SAFETY: as above.
    let (now_uid, now_gid) = unsafe {
        (
            libc::setfsuid(u32::MAX) as u32,
            libc::setfsgid(u32::MAX) as u32,
        )
    };
    if (now_uid, now_gid) == (u32::MAX, u32::MAX) {
        // No setfsuid here (it answered -1): the thread's effective ids.
        return become_user_by_effective_ids(uid, gid);
    }
    if (now_uid, now_gid) != (uid, gid) {
        return Err(format!(
            "the kernel kept fsuid {now_uid} fsgid {now_gid} instead of {uid}:{gid} (is the id mapped in the sandbox's user namespace?)"
        ));
    }
    Ok(())
}

/// [`become_user`] where the kernel lacks `setfsuid`: this thread's
/// effective (and so file-system) ids become the user's, group first while
/// the thread may still change it; verified through the thread's own ids.
fn become_user_by_effective_ids(uid: u32, gid: u32) -> Result<(), String> {
    let keep = u32::MAX; // -1: leave the real and saved ids
                         // The raw syscalls: libc's wrappers change every thread of the
                         // process, the kernel calls only this one.
                         // SAFETY: per-thread syscalls on integer ids.
    let r = unsafe { libc::syscall(libc::SYS_setresgid, keep, gid, keep) };
    if r != 0 {
        return Err(format!(
            "setresgid(-1, {gid}, -1): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_setresuid, keep, uid, keep) };
    if r != 0 {
        return Err(format!(
            "setresuid(-1, {uid}, -1): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: reading this thread's ids.
    let (now_uid, now_gid) = unsafe {
        (
            libc::syscall(libc::SYS_geteuid) as u32,
            libc::syscall(libc::SYS_getegid) as u32,
        )
    };
    if (now_uid, now_gid) != (uid, gid) {
        return Err(format!(
            "the thread's effective ids are {now_uid}:{now_gid} instead of {uid}:{gid}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn acts_with_the_users_permissions_and_ownership() {
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } != 0 {
            eprintln!("SKIP: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root_owned = dir.path().join("root-only");
        std::fs::create_dir(&root_owned).unwrap();
        std::fs::set_permissions(
            &root_owned,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();

        // Denied where the user may not write, even though the agent may.
        let p = root_owned.join("x").to_string_lossy().into_owned();
        let e = run(Some("4321:4321".into()), move || {
            std::fs::write(&p, b"x").map_err(|e| RemoteError::from_io("write", &e))
        })
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied, "{}", e.message);

        // Created where it may, owned by it.
        let p = open.join("mine").to_string_lossy().into_owned();
        let q = p.clone();
        run(Some("4321:4322".into()), move || {
            std::fs::create_dir_all(&q).map_err(|e| RemoteError::from_io("mkdir", &e))
        })
        .unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!((md.uid(), md.gid()), (4321, 4322));

        // The caller's thread keeps its identity.
        // SAFETY: as in become_user.
        assert_eq!(unsafe { libc::setfsuid(u32::MAX) }, 0);
        // The fallback (kernels without setfsuid) acts the same, on its own
        // thread only.
        let p = open.join("by-euid").to_string_lossy().into_owned();
        let q = p.clone();
        std::thread::spawn(move || {
            become_user_by_effective_ids(4331, 4332).unwrap();
            std::fs::write(&q, b"x").unwrap();
            let denied = root_owned.join("y");
            assert!(std::fs::write(denied, b"y").is_err(), "wrote as root");
        })
        .join()
        .unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!((md.uid(), md.gid()), (4331, 4332));
        // SAFETY: reading this thread's effective uid.
        assert_eq!(unsafe { libc::syscall(libc::SYS_geteuid) }, 0);
        // Root and no user run directly.
        assert!(run(None, || Ok(1)).is_ok());
        assert!(run(Some("0".into()), || Ok(1)).is_ok());
    }
}
