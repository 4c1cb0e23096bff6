//! Helpers shared by the integration tests: deterministic pseudo-random data, sparse images,
//! and comparisons.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

pub const MIB: u64 = 1 << 20;

/// xorshift64* bytes: incompressible, reproducible.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A sparse file of `size` bytes.
pub fn sparse_image(path: &Path, size: u64) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.set_len(size).unwrap();
    f
}

/// Writes pseudo-random data at `offset`.
pub fn write_random(f: &File, offset: u64, len: usize, seed: u64) {
    f.write_all_at(&random_bytes(seed, len), offset).unwrap();
}

/// Asserts two files have identical content.
pub fn assert_same_content(a: &Path, b: &Path) {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    assert_eq!(fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut off = 0u64;
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            break;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        assert!(
            ba[..n] == bb[..n],
            "{a:?} and {b:?} differ near offset {off}"
        );
        off += n as u64;
    }
}

/// 512-byte blocks allocated to a file.
pub fn blocks(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks()
}

/// Every regular file under `dir` whose name does not start with a dot.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Asserts `restored` is no less sparse than `source`: allocated data blocks no more than the
/// source's, give or take a few blocks of ext4 extent-tree metadata (counted in `st_blocks`,
/// and more of it when parallel writes fragment the file).
pub fn assert_as_sparse(restored: &Path, source: &Path) {
    let (r, s) = (blocks(restored), blocks(source));
    assert!(
        r <= s + 64,
        "restored image is less sparse: {r} blocks vs the source's {s}"
    );
}
