//! Which byte ranges of two files are the same blocks on disk.
//!
//! On filesystems that share extents (XFS, btrfs), a reflinked copy of an image points at the
//! image's own blocks until one of them is written, and a written block moves to a new place
//! (copy on write). So if a copy of the image taken at the previous snapshot (the *base*) and a
//! copy taken now map a range to the same physical blocks, that range holds the same bytes in
//! both, and an incremental snapshot can take it from the previous snapshot without reading it.
//! The mapping comes from the `FS_IOC_FIEMAP` ioctl. Ranges that are holes in both files are the
//! same too. Anything the kernel reports without a stable physical address (delayed allocation,
//! inline or tail-packed data, unknown location) counts as different.

use std::fs::File;
use std::ops::Range;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

/// `_IOWR('f', 11, struct fiemap)`.
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
/// Flush dirty data before mapping.
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
/// Flags meaning "no stable physical address": unknown location, delayed allocation, not block
/// aligned, inline in metadata, packed into a tail block.
const UNSTABLE: u32 = 0x2 | 0x4 | 0x100 | 0x200 | 0x400;
/// Extents fetched per ioctl.
const BATCH: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; BATCH],
}

/// One mapped range of a file: `[start, end)` at physical `physical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapped {
    start: u64,
    end: u64,
    physical: u64,
    stable: bool,
}

/// The extents of `file` (size `size`), in logical order.
fn extents(file: &File, path: &Path, size: u64) -> Result<Vec<Mapped>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let mut req = Box::new(Fiemap {
            start: pos,
            length: size - pos,
            flags: FIEMAP_FLAG_SYNC,
            mapped_extents: 0,
            extent_count: BATCH as u32,
            reserved: 0,
            extents: [FiemapExtent::default(); BATCH],
        });
        // SAFETY: FS_IOC_FIEMAP on a file we own, with a correctly sized `struct fiemap` whose
        // extent array holds `extent_count` entries.
        if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut *req as *mut Fiemap) } != 0 {
            return Err(Error::io(
                "map the extents of",
                path,
                std::io::Error::last_os_error(),
            ));
        }
        let n = req.mapped_extents as usize;
        if n == 0 {
            break;
        }
        let mut last = false;
        for x in &req.extents[..n] {
            out.push(Mapped {
                start: x.logical,
                end: x.logical + x.length,
                physical: x.physical,
                stable: x.flags & UNSTABLE == 0,
            });
            pos = x.logical + x.length;
            last |= x.flags & FIEMAP_EXTENT_LAST != 0;
        }
        if last {
            break;
        }
    }
    Ok(out)
}

/// The byte ranges, sorted and merged, that hold the same bytes in `a` and `b` because both
/// files map them to the same blocks (or both have a hole there). Empty if the files differ in
/// size. The result is exact only while neither file is written.
pub fn same_ranges(a: &Path, b: &Path) -> Result<Vec<Range<u64>>> {
    let open = |p: &Path| -> Result<(File, u64)> {
        let f = File::open(p).map_err(|e| Error::io("open", p, e))?;
        let len = f.metadata().map_err(|e| Error::io("stat", p, e))?.len();
        Ok((f, len))
    };
    let (fa, size) = open(a)?;
    let (fb, size_b) = open(b)?;
    if size != size_b {
        return Ok(Vec::new());
    }
    let xa = extents(&fa, a, size)?;
    let xb = extents(&fb, b, size)?;
    Ok(compare(&xa, &xb, size))
}

/// The elementary comparison behind [`same_ranges`].
fn compare(xa: &[Mapped], xb: &[Mapped], size: u64) -> Vec<Range<u64>> {
    // Every boundary of either mapping splits the file into segments, each of which lies in at
    // most one extent of each file.
    let mut cuts: Vec<u64> = vec![0, size];
    for x in xa.iter().chain(xb) {
        cuts.extend([x.start.min(size), x.end.min(size)]);
    }
    cuts.sort_unstable();
    cuts.dedup();
    let at = |xs: &[Mapped], i: &mut usize, pos: u64| -> Option<Mapped> {
        while *i < xs.len() && xs[*i].end <= pos {
            *i += 1;
        }
        xs.get(*i).copied().filter(|x| x.start <= pos)
    };
    let (mut ia, mut ib) = (0, 0);
    let mut out: Vec<Range<u64>> = Vec::new();
    for w in cuts.windows(2) {
        let (s, e) = (w[0], w[1]);
        let same = match (at(xa, &mut ia, s), at(xb, &mut ib, s)) {
            (None, None) => true,
            (Some(p), Some(q)) => {
                p.stable && q.stable && p.physical + (s - p.start) == q.physical + (s - q.start)
            }
            _ => false,
        };
        if !same {
            continue;
        }
        match out.last_mut() {
            Some(r) if r.end == s => r.end = e,
            _ => out.push(s..e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(start: u64, end: u64, physical: u64) -> Mapped {
        Mapped {
            start,
            end,
            physical,
            stable: true,
        }
    }

    #[test]
    fn shared_blocks_and_common_holes_are_the_same() {
        // a: [0,100) at 1000, hole [100,200), [200,300) at 5000.
        // b: [0,50) at 1000 (shared), [50,100) moved, hole [100,200), [200,300) at 5000.
        let a = [m(0, 100, 1000), m(200, 300, 5000)];
        let b = [m(0, 50, 1000), m(50, 100, 9000), m(200, 300, 5000)];
        assert_eq!(compare(&a, &b, 300), vec![0..50, 100..300]);
    }

    #[test]
    fn a_hole_on_one_side_or_an_unstable_extent_differs() {
        let a = [m(0, 100, 1000)];
        let mut b = [m(0, 100, 1000)];
        assert_eq!(compare(&a, &[], 100), Vec::<Range<u64>>::new());
        b[0].stable = false;
        assert_eq!(compare(&a, &b, 100), Vec::<Range<u64>>::new());
    }

    #[test]
    fn offsets_inside_an_extent_are_compared_by_position() {
        // The same physical run, but b's mapping is shifted by 10 bytes: nothing is shared.
        let a = [m(0, 100, 1000)];
        let b = [m(0, 100, 1010)];
        assert!(compare(&a, &b, 100).is_empty());
        // b split in two extents that continue a's run: all shared.
        let b = [m(0, 40, 1000), m(40, 100, 1040)];
        assert_eq!(compare(&a, &b, 100), vec![0..100]);
    }

    #[test]
    fn a_file_compared_with_itself_is_entirely_the_same() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let p = dir.path().join("img");
        let f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[7u8; 65536], 1 << 20).unwrap();
        assert_eq!(same_ranges(&p, &p).unwrap(), vec![0..(8 << 20)]);
    }
}
