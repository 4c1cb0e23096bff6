//! Formatted ext4 templates: `mkfs.ext4` runs once per volume size, and
//! every new volume of that size is a sparse copy of the template with a
//! fresh filesystem identity (UUID, directory hash seed, creation time).
//!
//! Templates live in `<root>/.templates/<size>.img`. They are a cache:
//! nothing refers to them, deleting a volume never touches them, and any of
//! them (or the whole directory) may be removed at any time while no create
//! runs; the next create of that size formats it again. A template is made
//! atomically (format a temporary file, fsync it, rename it into place), so
//! a crash leaves either no template or a complete one; temporary files of
//! dead processes are removed when a manager starts.
//!
//! Copies are not fsynced (that would double the cost of a create). Their
//! data reaches the disk at the latest when the volume is first mounted:
//! mounting ext4 read-write writes its superblock with FUA, which the loop
//! device turns into an fsync of the image. A copy whose machine went down
//! before that may be incomplete; the volume records the boot it was made
//! in, and a never-mounted image found after a reboot is copied again (see
//! [`needs_recopy`]).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{nonce, now_secs, rename_noreplace};

use super::ext4;
use super::sparse_copy::{self, CopyMethod};
use super::superblock::{self, Identity, Superblock};

/// The template directory under a manager's root.
pub(crate) const DIR: &str = ".templates";
const TMP: &str = ".tmp-";

/// Where the template for `size_bytes` lives.
pub(crate) fn path(root: &Path, size_bytes: u64) -> PathBuf {
    root.join(DIR).join(format!("{size_bytes}.img"))
}

/// Creates `dst` (which must not exist) as a copy of the template for
/// `size_bytes` with a new identity, formatting the template first if
/// there is none. The copy is not fsynced.
pub(crate) fn instantiate(root: &Path, size_bytes: u64, dst: &Path) -> Result<CopyMethod> {
    let template = open_or_format(root, size_bytes)?;
    match copy_and_restamp(&template, size_bytes, dst) {
        // A template whose identity cannot be re-stamped is discarded and
        // formatted again, once.
        Err(StorageError::Command { .. }) => {
            let _ = fs::remove_file(dst);
            let _ = fs::remove_file(path(root, size_bytes));
            let template = open_or_format(root, size_bytes)?;
            copy_and_restamp(&template, size_bytes, dst)
        }
        other => other,
    }
}

fn copy_and_restamp(template: &File, size_bytes: u64, dst: &Path) -> Result<CopyMethod> {
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(dst)
        .ctx("create volume image", dst)?;
    let method = sparse_copy::copy(template, &out, size_bytes).ctx("copy template into", dst)?;
    let id = Identity::random(now_secs()).ctx("draw a random UUID for", dst)?;
    superblock::restamp(&out, &id).map_err(|e| StorageError::Command {
        command: format!("set a new ext4 UUID in {}", dst.display()),
        detail: format!("{e}; the template was removed and will be formatted again"),
    })?;
    Ok(method)
}

/// Opens the template for `size_bytes`, formatting it if it is missing or
/// unusable.
fn open_or_format(root: &Path, size_bytes: u64) -> Result<File> {
    let p = path(root, size_bytes);
    match File::open(&p) {
        Ok(f) if usable(&f, size_bytes) => return Ok(f),
        Ok(_) => fs::remove_file(&p).ctx("remove unusable template", &p)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).ctx("open template", &p),
    }
    format(root, size_bytes)?;
    File::open(&p).ctx("open template", &p)
}

/// A template is usable when it is a complete, never-mounted ext4 of the
/// right size whose UUID can be changed in the superblocks alone.
fn usable(f: &File, size_bytes: u64) -> bool {
    let len_ok = f.metadata().map(|m| m.len() == size_bytes).unwrap_or(false);
    len_ok
        && Superblock::read(f).is_ok_and(|sb| {
            sb.never_mounted()
                && sb.checksum_ok()
                && sb.uuid_change_is_local()
                && sb.fs_bytes() <= size_bytes
        })
}

/// Formats the template for `size_bytes`: temporary file, mkfs, fsync,
/// rename into place (another process that got there first wins).
fn format(root: &Path, size_bytes: u64) -> Result<()> {
    let dir = root.join(DIR);
    fs::create_dir_all(&dir).ctx("create template directory", &dir)?;
    let tmp = dir.join(format!("{TMP}{}-{size_bytes}.img", nonce()));
    let result = (|| {
        let f = File::create(&tmp).ctx("create template", &tmp)?;
        f.set_len(size_bytes)
            .map_err(|e| super::too_large(&tmp, size_bytes, e))?;
        ext4::mkfs_template(&tmp)?;
        f.sync_all().ctx("fsync template", &tmp)?;
        drop(f);
        let dst = path(root, size_bytes);
        match rename_noreplace(&tmp, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&tmp).ctx("remove duplicate template", &tmp)?;
            }
            Err(e) => return Err(e).ctx("move template into place at", &dst),
        }
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .ctx("fsync template directory", &dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes half-made templates of processes that no longer exist.
pub(crate) fn remove_leftovers(root: &Path) {
    let Ok(rd) = fs::read_dir(root.join(DIR)) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(TMP) else {
            continue;
        };
        let pid: i32 = rest
            .split('-')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        // SAFETY: kill with signal 0 only checks for existence.
        if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// This boot's id (changes at every boot), if the kernel exposes it.
pub(crate) fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Whether a volume image copied (unsynced) during boot `made_in` must be
/// copied again before use: the machine has restarted since, and the image
/// was never mounted read-write, so it may be incomplete and cannot hold
/// anything of value (any durable write through a mount also makes the
/// superblock's mount count durable).
pub(crate) fn needs_recopy(image: &Path, made_in: &str) -> bool {
    if boot_id().as_deref() == Some(made_in) {
        return false;
    }
    match File::open(image).and_then(|f| Superblock::read(&f)) {
        Ok(sb) => !sb.is_ext4() || sb.never_mounted(),
        // Shorter than a superblock: its data never arrived.
        Err(e) => e.kind() == io::ErrorKind::UnexpectedEof,
    }
}
