//! Cutting an image file into fixed-size chunks.
//!
//! The image is divided into a grid of `chunk_size` cells. `SEEK_DATA`/`SEEK_HOLE` tell which
//! cells hold any data at all; the others are holes and are never read. A cell that is read and
//! turns out to be all zeros is recorded as a hole too, so preallocated-but-zeroed blocks cost
//! nothing. Reads are positional (`pread`), so any number of threads can share one open file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Default chunk size: 1 MiB (see BENCHMARKS in the crate README for the measurement).
pub const DEFAULT_CHUNK_SIZE: u64 = 1 << 20;

/// One cell of the chunk grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Byte offset in the image.
    pub offset: u64,
    /// Length (`chunk_size`, shorter for the last cell).
    pub length: u64,
    /// Whether the cell overlaps data according to `SEEK_DATA`; `false` means a sure hole.
    pub has_data: bool,
}

/// An image file opened for chunking.
#[derive(Debug)]
pub struct Image {
    file: File,
    path: PathBuf,
    size: u64,
}

impl Image {
    /// Opens a regular file read-only.
    pub fn open(path: &Path) -> Result<Image> {
        let file = File::open(path).map_err(|e| Error::io("open image", path, e))?;
        let md = file
            .metadata()
            .map_err(|e| Error::io("stat image", path, e))?;
        if !md.is_file() {
            return Err(Error::BadImage {
                path: path.to_path_buf(),
                reason: "not a regular file; snapshot the volume image file (volume.img)".into(),
            });
        }
        Ok(Image {
            file,
            path: path.to_path_buf(),
            size: md.len(),
        })
    }

    /// Apparent size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The data ranges `[start, end)` of the file, from `SEEK_DATA`/`SEEK_HOLE`.
    pub fn data_ranges(&self) -> Result<Vec<(u64, u64)>> {
        let fd = self.file.as_raw_fd();
        let mut out = Vec::new();
        let mut pos: i64 = 0;
        let size = self.size as i64;
        while pos < size {
            // SAFETY: lseek on a file descriptor we own; no memory is passed.
            let start = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
            if start < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENXIO) {
                    break; // no data after pos
                }
                return Err(Error::io("seek data in", &self.path, e));
            }
            // SAFETY: as above.
            let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
            if end < 0 {
                let e = std::io::Error::last_os_error();
                return Err(Error::io("seek hole in", &self.path, e));
            }
            let end = end.min(size);
            if end > start {
                out.push((start as u64, end as u64));
            }
            pos = end.max(start + 1);
        }
        Ok(out)
    }

    /// The chunk grid for `chunk_size`, each cell marked with whether it overlaps data.
    pub fn plan(&self, chunk_size: u64) -> Result<Vec<Cell>> {
        assert!(chunk_size > 0);
        let ranges = self.data_ranges()?;
        let mut cells = Vec::with_capacity(self.size.div_ceil(chunk_size) as usize);
        let mut r = 0usize;
        let mut off = 0u64;
        while off < self.size {
            let length = chunk_size.min(self.size - off);
            let end = off + length;
            while r < ranges.len() && ranges[r].1 <= off {
                r += 1;
            }
            let has_data = r < ranges.len() && ranges[r].0 < end;
            cells.push(Cell {
                offset: off,
                length,
                has_data,
            });
            off = end;
        }
        Ok(cells)
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io("read image", &self.path, e))
    }

    /// The path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether every byte of `buf` is zero.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut it = buf.chunks_exact(16);
    it.by_ref()
        .all(|c| u128::from_ne_bytes(c.try_into().expect("16 bytes")) == 0)
        && it.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0; 33]));
        let mut v = vec![0u8; 33];
        v[32] = 1;
        assert!(!is_zero(&v));
        v[32] = 0;
        v[3] = 1;
        assert!(!is_zero(&v));
    }

    #[test]
    fn plan_skips_holes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let mut f = File::create(&p).unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_all_at(&[1u8; 4096], 5 << 20).unwrap();
        f.flush().unwrap();
        let img = Image::open(&p).unwrap();
        let cells = img.plan(1 << 20).unwrap();
        assert_eq!(cells.len(), 16);
        let data: Vec<u64> = cells
            .iter()
            .filter(|c| c.has_data)
            .map(|c| c.offset >> 20)
            .collect();
        assert_eq!(data, vec![5], "only the cell with data is read");
    }
}
