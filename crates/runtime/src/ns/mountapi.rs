//! The new mount API (open_tree, mount_setattr, move_mount, fsopen,
//! fsconfig, fsmount) as small checked wrappers: what building a sandbox
//! root inside a user namespace needs (idmapped detached mounts passed as
//! file descriptors, overlays whose layers are given by descriptor).
//!
//! Constants come from the kernel's `include/uapi/linux/mount.h`; the libc
//! crate has the syscall numbers but not all of them.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::host::sys::cstr;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_EMPTY_PATH: libc::c_uint = 0x1000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
/// `MOUNT_ATTR_NODEV` (for [`fsmount`]).
pub const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
/// `MOUNT_ATTR_NOSUID`.
pub const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_SET_FD: libc::c_uint = 5;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
#[derive(Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn fd_result(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

fn unit_result(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A detached copy of the mount at `path` (non-recursive bind), close-on-exec.
pub fn clone_tree(path: &Path) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    // SAFETY: valid C string; flags are plain integers.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            p.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    })
}

/// Make the detached mount `mnt` idmapped with the mapping of the user
/// namespace `userns` (a /proc/<pid>/ns/user descriptor).
pub fn set_idmap(mnt: &OwnedFd, userns: &OwnedFd) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        userns_fd: userns.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: `attr` outlives the call and its size is passed along.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            AT_EMPTY_PATH,
            std::ptr::addr_of!(attr),
            std::mem::size_of::<MountAttr>(),
        )
    })
}

/// `MOUNT_ATTR_RDONLY`.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// Set mount attributes (`MOUNT_ATTR_*`) on the detached mount `mnt`.
pub fn set_attrs(mnt: &OwnedFd, attrs: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        ..Default::default()
    };
    // SAFETY: `attr` outlives the call and its size is passed along.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            AT_EMPTY_PATH,
            std::ptr::addr_of!(attr),
            std::mem::size_of::<MountAttr>(),
        )
    })
}

/// Attach the detached mount `mnt` on the directory (or file) `target`
/// refers to; both are descriptors, no path is looked up.
pub fn attach(mnt: &OwnedFd, target: RawFd) -> io::Result<()> {
    // SAFETY: empty C strings and valid descriptors.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            target,
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
}

/// Attach the detached mount `mnt` at `path`, looked up relative to the
/// current directory when relative.
pub fn attach_at(mnt: &OwnedFd, path: &Path) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: valid C strings and descriptor.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            p.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
}

/// A filesystem context being configured (fsopen); [`FsContext::mount`]
/// creates the superblock and returns a detached mount.
pub struct FsContext {
    fd: OwnedFd,
    fstype: String,
}

impl FsContext {
    pub fn open(fstype: &str) -> io::Result<FsContext> {
        let name = CString::new(fstype).expect("fs type without NUL");
        // SAFETY: valid C string.
        let fd =
            fd_result(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })?;
        Ok(FsContext {
            fd,
            fstype: fstype.into(),
        })
    }

    fn config(
        &self,
        cmd: libc::c_uint,
        key: Option<&str>,
        value: *const libc::c_void,
        aux: libc::c_int,
    ) -> io::Result<()> {
        let key = key.map(|k| CString::new(k).expect("key without NUL"));
        // SAFETY: key is null or a valid C string; value is null, a valid
        // C string or unused, as `cmd` requires.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                cmd,
                key.as_ref().map_or(std::ptr::null(), |k| k.as_ptr()),
                value,
                aux,
            )
        };
        unit_result(ret).map_err(|e| self.explain(e))
    }

    /// Set a flag option (e.g. `userxattr`).
    pub fn flag(&self, key: &str) -> io::Result<()> {
        self.config(FSCONFIG_SET_FLAG, Some(key), std::ptr::null(), 0)
    }

    /// Set a string option (e.g. `size=16k`).
    pub fn string(&self, key: &str, value: &str) -> io::Result<()> {
        let v = CString::new(value).expect("value without NUL");
        self.config(FSCONFIG_SET_STRING, Some(key), v.as_ptr().cast(), 0)
    }

    /// Set an option whose value is a descriptor (overlayfs `lowerdir+`,
    /// `upperdir`, `workdir`).
    pub fn fd(&self, key: &str, fd: RawFd) -> io::Result<()> {
        self.config(FSCONFIG_SET_FD, Some(key), std::ptr::null(), fd)
    }

    /// Create the filesystem and return a detached mount of it with the
    /// given `MOUNT_ATTR_*` flags.
    pub fn mount(self, attrs: libc::c_uint) -> io::Result<OwnedFd> {
        self.config(FSCONFIG_CMD_CREATE, None, std::ptr::null(), 0)?;
        // SAFETY: valid descriptor, integer flags.
        fd_result(unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.fd.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                attrs,
            )
        })
        .map_err(|e| self.explain(e))
    }

    /// Append what the filesystem logged about a failure (the kernel puts
    /// the reason of a refused option there).
    fn explain(&self, e: io::Error) -> io::Error {
        let mut log = String::new();
        let mut buf = [0u8; 512];
        loop {
            // SAFETY: reading into a local buffer of the given size.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let line = String::from_utf8_lossy(&buf[..n as usize]);
            log.push_str(line.trim_end());
            log.push_str("; ");
        }
        if log.is_empty() {
            io::Error::new(e.kind(), format!("{} ({e})", self.fstype))
        } else {
            io::Error::new(
                e.kind(),
                format!("{} ({e}): {}", self.fstype, log.trim_end_matches("; ")),
            )
        }
    }
}
