//! Copying a sparse image file so that the copy stays sparse: a reflink
//! (`FICLONE`) where the filesystem shares blocks (btrfs, XFS), otherwise
//! only the allocated extents, found with `SEEK_DATA`/`SEEK_HOLE` and moved
//! in the kernel with `copy_file_range` (plain reads and writes where that
//! is refused). The copy is not fsynced: callers decide on durability.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// `FICLONE` = `_IOW(0x94, 9, int)` from `<linux/fs.h>`.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// How a copy was made (reported by tests and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyMethod {
    /// The blocks are shared with the source (copy-on-write).
    Reflink,
    /// The allocated extents were copied, holes left as holes.
    Extents,
}

/// Makes `dst` (an empty, writable file) a copy of `src` of `len` bytes.
pub(crate) fn copy(src: &File, dst: &File, len: u64) -> io::Result<CopyMethod> {
    // SAFETY: FICLONE takes the source descriptor as its argument.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if rc == 0 {
        return Ok(CopyMethod::Reflink);
    }
    dst.set_len(len)?;
    let mut pos = 0u64;
    while pos < len {
        let Some(start) = seek(src, pos, libc::SEEK_DATA)? else {
            break;
        };
        if start >= len {
            break;
        }
        let end = seek(src, start, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        copy_range(src, dst, start, end)?;
        pos = end;
    }
    Ok(CopyMethod::Extents)
}

/// `lseek` with `SEEK_DATA`/`SEEK_HOLE`; `None` when there is no more data
/// (ENXIO).
fn seek(f: &File, from: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: plain syscall on an open descriptor.
    let r = unsafe { libc::lseek(f.as_raw_fd(), from as libc::off_t, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENXIO) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Copies bytes `start..end` at the same offsets.
fn copy_range(src: &File, dst: &File, start: u64, end: u64) -> io::Result<()> {
    let mut off = start;
    while off < end {
        let mut a = off as libc::loff_t;
        let mut b = off as libc::loff_t;
        let want = (end - off).min(1 << 30) as usize;
        // SAFETY: both descriptors are open; the offsets are valid pointers.
        let n = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut a, dst.as_raw_fd(), &mut b, want, 0)
        };
        if n > 0 {
            off += n as u64;
            continue;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the template ended early while copying",
            ));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EXDEV | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS) => {
                return copy_by_reading(src, dst, off, end)
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

/// The portable fallback: pread/pwrite in 1 MiB pieces.
fn copy_by_reading(src: &File, dst: &File, start: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = start;
    while off < end {
        let n = ((end - off) as usize).min(buf.len());
        src.read_exact_at(&mut buf[..n], off)?;
        dst.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}
