//! Formatting volume templates as ext4 with `mkfs.ext4` (e2fsprogs), and
//! growing volumes offline or, while mounted, online.
//!
//! The options keep the image sparse: inode tables and the journal are
//! initialised lazily (and the mount uses `noinit_itable` so the kernel
//! does not zero them in the background either), nothing is discarded, and
//! no blocks are reserved for root (`-m 0`). `metadata_csum_seed` seeds the
//! metadata checksums independently of the UUID, so each copy of a template
//! gets its own UUID by rewriting only the superblocks (see `superblock`).
//! There is no `resize_inode`: its reserved descriptor blocks (about 2 MB
//! allocated for a 4 GiB volume, 90% of the image) only serve online
//! growth; offline `resize2fs` makes room itself and the kernel grows a
//! mounted one by switching to `meta_bg` group descriptors.
//! Without them a template holds about 180 KB, which is what every copy
//! writes.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Result, StorageError};

/// Mount options for a volume's ext4: no background inode-table zeroing,
/// which would allocate the whole sparse image over time.
pub(crate) const MOUNT_OPTIONS: &str = "noinit_itable";

/// Formats `image` (a regular file of the final size) as an ext4 template.
pub(crate) fn mkfs_template(image: &Path) -> Result<()> {
    let args = [
        "-q",
        "-F",
        "-m",
        "0",
        "-O",
        "metadata_csum_seed,^resize_inode",
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
        "-L",
        "dwell-volume",
    ];
    run(&find_mkfs(), &args, image, &[0])
}

/// Grows the (unmounted, unattached) ext4 in `image` to fill the file:
/// a forced check first, as resize2fs demands, then the resize.
pub(crate) fn grow_offline(image: &Path) -> Result<()> {
    // e2fsck exit codes 0 and 1 mean clean / errors corrected.
    run(&find_tool("e2fsck"), &["-f", "-p"], image, &[0, 1])?;
    run(&find_tool("resize2fs"), &[], image, &[0])
}

/// Grows the ext4 mounted from block device `dev` to fill the device,
/// online (the kernel grows a mounted ext4 in place; without a resize
/// inode it switches the filesystem to `meta_bg` descriptors as it goes).
pub(crate) fn grow_online(dev: &Path) -> Result<()> {
    run(&find_tool("resize2fs"), &[], dev, &[0])
}

fn run(tool: &str, args: &[&str], target: &Path, ok: &[i32]) -> Result<()> {
    let command = format!("{tool} {} {}", args.join(" "), target.display());
    let out = Command::new(tool)
        .args(args)
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| StorageError::Command {
            command: command.clone(),
            detail: format!("cannot run it: {e}; install e2fsprogs (apt-get install e2fsprogs)"),
        })?;
    if !out.status.code().is_some_and(|c| ok.contains(&c)) {
        return Err(StorageError::Command {
            command,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// `mkfs.ext4` lives in /sbin, which is not always on a daemon's PATH.
fn find_mkfs() -> String {
    find_tool("mkfs.ext4")
}

fn find_tool(name: &str) -> String {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| name.to_string())
}
