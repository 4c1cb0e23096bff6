//! Loop devices through `/dev/loop-control`: find a free device
//! (`LOOP_CTL_GET_FREE`) and bind a backing file to it in one step
//! (`LOOP_CONFIGURE`) with `LO_FLAGS_AUTOCLEAR`, so the device detaches
//! itself when its last user (the mounted filesystem) goes away.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::fsutil::cpath;

const LOOP_CONTROL: &str = "/dev/loop-control";
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64` from `<linux/loop.h>`.
#[allow(dead_code)]
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>`.
#[allow(dead_code)]
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Whether this process can use loop devices at all.
pub(crate) fn supported() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Path::new(LOOP_CONTROL).exists()
}

/// A loop device bound to a backing file. The device stays attached while
/// this handle is open or while something (a mount) uses it; after both are
/// gone the kernel detaches it (autoclear).
pub(crate) struct LoopDevice {
    path: PathBuf,
    _file: File,
}

impl LoopDevice {
    /// The device node, e.g. `/dev/loop3`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds `backing` to a free loop device.
pub(crate) fn attach(backing: &Path) -> Result<LoopDevice> {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(LOOP_CONTROL)
        .map_err(|e| {
            StorageError::Loop(format!(
                "cannot open {LOOP_CONTROL}: {e}; load the loop module (modprobe loop) and run as root"
            ))
        })?;
    let backing_file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(backing)
        .map_err(|e| StorageError::Loop(format!("cannot open {}: {e}", backing.display())))?;

    let mut last_err = None;
    // Another process may take the device between GET_FREE and CONFIGURE;
    // the kernel then answers EBUSY and we ask for the next free one.
    for _ in 0..64 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(StorageError::Loop(format!(
                "LOOP_CTL_GET_FREE: {}; no free loop device could be allocated (raise max_loop)",
                io::Error::last_os_error()
            )));
        }
        let dev_path = PathBuf::from(format!("/dev/loop{n}"));
        ensure_node(&dev_path, n as u32)?;
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&dev_path)
            .map_err(|e| StorageError::Loop(format!("open {}: {e}", dev_path.display())))?;

        // SAFETY: all-zero is a valid value for these plain-data structs.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = backing_file.as_raw_fd() as u32;
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        let name = backing.as_os_str().as_encoded_bytes();
        let len = name.len().min(LO_NAME_SIZE - 1);
        config.info.lo_file_name[..len].copy_from_slice(&name[..len]);

        // SAFETY: `config` is a properly laid out `struct loop_config` that
        // lives across the call.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &config) };
        if rc == 0 {
            return Ok(LoopDevice {
                path: dev_path,
                _file: dev,
            });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(StorageError::Loop(format!(
                "LOOP_CONFIGURE {} with {}: {err}",
                dev_path.display(),
                backing.display()
            )));
        }
        last_err = Some(err);
    }
    Err(StorageError::Loop(format!(
        "every free loop device was taken by someone else before we could bind it ({}); retry",
        last_err.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// Creates `/dev/loopN` when the kernel allocated a device that has no node
/// in this `/dev` (common in containers with a static `/dev`).
fn ensure_node(dev_path: &Path, n: u32) -> Result<()> {
    match fs::metadata(dev_path) {
        Ok(m) if m.file_type().is_block_device() => return Ok(()),
        Ok(_) => {
            return Err(StorageError::Loop(format!(
                "{} exists but is not a block device",
                dev_path.display()
            )))
        }
        Err(_) => {}
    }
    let sys = format!("/sys/block/loop{n}/dev");
    let (major, minor) = fs::read_to_string(&sys)
        .ok()
        .and_then(|s| {
            let (a, b) = s.trim().split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((7u32, n));
    let c = cpath(dev_path).map_err(|e| StorageError::Loop(e.to_string()))?;
    // SAFETY: valid C string; mknod has no memory preconditions.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFBLK | 0o660,
            libc::makedev(major, minor),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(StorageError::Loop(format!(
                "device node {} is missing and mknod failed: {e}",
                dev_path.display()
            )));
        }
    }
    Ok(())
}

/// A loop device and the file behind it, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopBinding {
    /// The device node, e.g. `/dev/loop3`.
    pub device: PathBuf,
    /// The backing file (without the kernel's " (deleted)" suffix).
    pub backing_file: PathBuf,
    /// Whether the backing file was unlinked.
    pub backing_deleted: bool,
}

/// Lists every attached loop device with its backing file (from sysfs).
/// One read per loop device on the host: callers that wait on one device
/// find it here once, then ask [`binding_of`].
pub fn bindings() -> Vec<LoopBinding> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/sys/block") else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(b) = read_binding(&name) {
            out.push(b);
        }
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    out
}

/// What loop device `device` (`/dev/loopN`) is bound to now; None when it
/// is not bound (or not a loop device).
pub fn binding_of(device: &Path) -> Option<LoopBinding> {
    read_binding(device.file_name()?.to_str()?)
}

/// The binding of block device `name` (`loopN`) from sysfs.
fn read_binding(name: &str) -> Option<LoopBinding> {
    if !name.starts_with("loop") || name.contains('/') {
        return None;
    }
    let raw = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    let raw = raw.trim_end_matches('\n');
    let (file, deleted) = match raw.strip_suffix(" (deleted)") {
        Some(f) => (f, true),
        None => (raw, false),
    };
    Some(LoopBinding {
        device: PathBuf::from(format!("/dev/{name}")),
        backing_file: PathBuf::from(file),
        backing_deleted: deleted,
    })
}

/// Detaches a loop device (`LOOP_CLR_FD`). A device still in use (mounted)
/// is marked to detach as soon as its last user goes.
pub fn detach(device: &Path) -> Result<()> {
    let dev = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(device)
        .map_err(|e| StorageError::Loop(format!("open {}: {e}", device.display())))?;
    // SAFETY: LOOP_CLR_FD takes no argument.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _, 0) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // ENXIO: not bound any more, which is what we wanted.
        if e.raw_os_error() != Some(libc::ENXIO) {
            return Err(StorageError::Loop(format!(
                "LOOP_CLR_FD {}: {e}",
                device.display()
            )));
        }
    }
    Ok(())
}

/// Tells loop device `device` to re-read its backing file's size (after the
/// file grew), so a filesystem on it can grow online.
pub fn set_capacity(device: &Path) -> Result<()> {
    let dev = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(device)
        .map_err(|e| StorageError::Loop(format!("open {}: {e}", device.display())))?;
    // SAFETY: an ioctl without an argument on an owned descriptor.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_CAPACITY as _, 0) };
    if rc != 0 {
        return Err(StorageError::Loop(format!(
            "LOOP_SET_CAPACITY {}: {}",
            device.display(),
            io::Error::last_os_error()
        )));
    }
    Ok(())
}
