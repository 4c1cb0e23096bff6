//! Reading and re-stamping the identity of an ext4 superblock in an image
//! file, without e2fsprogs.
//!
//! A volume copied from a template must not share the template's
//! filesystem UUID (nor its directory hash seed) with every other copy.
//! Templates are formatted with `metadata_csum_seed`, so group descriptor,
//! inode and bitmap checksums are seeded from `s_checksum_seed` rather than
//! from the UUID: changing the UUID then only requires rewriting each
//! superblock copy (the primary at byte 1024 and the sparse backups) with
//! its own crc32c checksum. That is what `tune2fs -U` does too, minus a
//! process start and an fsync.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Size of an ext4 superblock.
const SB_SIZE: usize = 1024;
/// Byte offset of the primary superblock.
const PRIMARY: u64 = 1024;
const EXT4_MAGIC: u16 = 0xEF53;

// Field offsets inside the superblock (`struct ext4_super_block`).
const S_BLOCKS_COUNT_LO: usize = 0x04;
const S_FIRST_DATA_BLOCK: usize = 0x14;
const S_LOG_BLOCK_SIZE: usize = 0x18;
const S_BLOCKS_PER_GROUP: usize = 0x20;
const S_MTIME: usize = 0x2C;
const S_MNT_COUNT: usize = 0x34;
const S_MAGIC: usize = 0x38;
const S_BLOCK_GROUP_NR: usize = 0x5A;
const S_FEATURE_COMPAT: usize = 0x5C;
const S_FEATURE_INCOMPAT: usize = 0x60;
const S_FEATURE_RO_COMPAT: usize = 0x64;
const S_UUID: usize = 0x68;
const S_HASH_SEED: usize = 0xEC;
const S_MKFS_TIME: usize = 0x108;
const S_BLOCKS_COUNT_HI: usize = 0x150;
const S_BACKUP_BGS: usize = 0x24C;
const S_MKFS_TIME_HI: usize = 0x277;
const S_CHECKSUM: usize = 0x3FC;

const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// Why an image's superblock cannot be used or re-stamped.
#[derive(Debug)]
pub(crate) enum SbError {
    /// Reading or writing the image failed.
    Io(io::Error),
    /// The bytes are not an ext4 superblock this code can re-stamp.
    Unsupported(String),
}

impl std::fmt::Display for SbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SbError::Io(e) => write!(f, "{e}"),
            SbError::Unsupported(s) => f.write_str(s),
        }
    }
}

impl From<io::Error> for SbError {
    fn from(e: io::Error) -> Self {
        SbError::Io(e)
    }
}

/// One superblock's bytes.
pub(crate) struct Superblock([u8; SB_SIZE]);

impl Superblock {
    /// Reads the primary superblock of `image`.
    pub(crate) fn read(image: &File) -> io::Result<Self> {
        Self::read_at(image, PRIMARY)
    }

    fn read_at(image: &File, offset: u64) -> io::Result<Self> {
        let mut b = [0u8; SB_SIZE];
        image.read_exact_at(&mut b, offset)?;
        Ok(Self(b))
    }

    fn u16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.0[off], self.0[off + 1]])
    }

    fn u32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }

    fn put_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Whether the ext4 magic number is in place.
    pub(crate) fn is_ext4(&self) -> bool {
        self.u16(S_MAGIC) == EXT4_MAGIC
    }

    /// Whether this filesystem has never been mounted read-write (mounting
    /// bumps the mount count and sets the mount time). False unless it is
    /// ext4 at all.
    pub(crate) fn never_mounted(&self) -> bool {
        self.is_ext4() && self.u16(S_MNT_COUNT) == 0 && self.u32(S_MTIME) == 0
    }

    /// The filesystem UUID.
    pub(crate) fn uuid(&self) -> [u8; 16] {
        self.0[S_UUID..S_UUID + 16].try_into().expect("16 bytes")
    }

    /// The filesystem size in bytes.
    pub(crate) fn fs_bytes(&self) -> u64 {
        self.blocks_count() * self.block_size()
    }

    fn block_size(&self) -> u64 {
        1024u64 << self.u32(S_LOG_BLOCK_SIZE).min(6)
    }

    fn blocks_count(&self) -> u64 {
        let hi = if self.u32(S_FEATURE_INCOMPAT) & INCOMPAT_64BIT != 0 {
            u64::from(self.u32(S_BLOCKS_COUNT_HI))
        } else {
            0
        };
        (hi << 32) | u64::from(self.u32(S_BLOCKS_COUNT_LO))
    }

    /// Whether the UUID can change without rewriting every metadata
    /// checksum: no metadata checksums, or checksums seeded separately.
    pub(crate) fn uuid_change_is_local(&self) -> bool {
        self.u32(S_FEATURE_RO_COMPAT) & RO_COMPAT_METADATA_CSUM == 0
            || self.u32(S_FEATURE_INCOMPAT) & INCOMPAT_CSUM_SEED != 0
    }

    fn has_csum(&self) -> bool {
        self.u32(S_FEATURE_RO_COMPAT) & RO_COMPAT_METADATA_CSUM != 0
    }

    /// Stored checksum matches the content (trivially true without
    /// metadata_csum).
    pub(crate) fn checksum_ok(&self) -> bool {
        !self.has_csum() || self.u32(S_CHECKSUM) == sb_checksum(&self.0)
    }

    /// Byte offsets of every superblock copy: the primary and the backups
    /// in the groups `sparse_super` / `sparse_super2` (or, with neither,
    /// every group) keep.
    fn copy_offsets(&self) -> Vec<(u64, u32)> {
        let bs = self.block_size();
        let bpg = u64::from(self.u32(S_BLOCKS_PER_GROUP)).max(1);
        let first = u64::from(self.u32(S_FIRST_DATA_BLOCK));
        let groups = self.blocks_count().saturating_sub(first).div_ceil(bpg);
        let compat = self.u32(S_FEATURE_COMPAT);
        let ro = self.u32(S_FEATURE_RO_COMPAT);
        let backups = [self.u32(S_BACKUP_BGS), self.u32(S_BACKUP_BGS + 4)];
        let has_super = |g: u64| -> bool {
            if g == 0 {
                return true;
            }
            if compat & COMPAT_SPARSE_SUPER2 != 0 {
                return backups.iter().any(|&b| b != 0 && u64::from(b) == g);
            }
            if ro & RO_COMPAT_SPARSE_SUPER == 0 {
                return true;
            }
            g == 1 || [3u64, 5, 7].iter().any(|&p| is_power_of(g, p))
        };
        (0..groups)
            .filter(|&g| has_super(g))
            .map(|g| {
                let off = if g == 0 {
                    PRIMARY
                } else {
                    (g * bpg + first) * bs
                };
                (off, g as u32)
            })
            .collect()
    }
}

fn is_power_of(mut n: u64, p: u64) -> bool {
    while n > 1 && n.is_multiple_of(p) {
        n /= p;
    }
    n == 1
}

/// The ext4 superblock checksum: crc32c (Castagnoli) seeded with all ones,
/// without the final inversion, over everything before the checksum field.
fn sb_checksum(sb: &[u8; SB_SIZE]) -> u32 {
    crc32c_raw(!0, &sb[..S_CHECKSUM])
}

/// Bytewise table crc32c, reflected polynomial 0x82F63B78; returns the
/// running value (callers wanting the standard CRC invert it).
fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// New identity for a copied filesystem.
pub(crate) struct Identity {
    /// Filesystem UUID (a version 4 UUID).
    pub uuid: [u8; 16],
    /// Directory hash seed.
    pub hash_seed: [u8; 16],
    /// Creation time to record, seconds since the epoch.
    pub mkfs_time: u64,
}

impl Identity {
    /// Random UUID and hash seed from the kernel's CSPRNG.
    pub(crate) fn random(mkfs_time: u64) -> io::Result<Self> {
        let mut r = [0u8; 32];
        let mut filled = 0;
        while filled < r.len() {
            // SAFETY: the buffer is valid for `r.len() - filled` bytes.
            let n =
                unsafe { libc::getrandom(r[filled..].as_mut_ptr().cast(), r.len() - filled, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            filled += n as usize;
        }
        let mut uuid: [u8; 16] = r[..16].try_into().expect("16 bytes");
        uuid[6] = (uuid[6] & 0x0F) | 0x40;
        uuid[8] = (uuid[8] & 0x3F) | 0x80;
        Ok(Self {
            uuid,
            hash_seed: r[16..].try_into().expect("16 bytes"),
            mkfs_time,
        })
    }
}

/// Gives the (unmounted) ext4 filesystem in `image` a new identity in every
/// superblock copy. The image must be a fresh format: directory hash seeds
/// only matter to indexed directories, which a fresh filesystem has none of.
pub(crate) fn restamp(image: &File, id: &Identity) -> Result<(), SbError> {
    let primary = Superblock::read(image)?;
    if !primary.is_ext4() {
        return Err(SbError::Unsupported(
            "no ext4 superblock at byte 1024".into(),
        ));
    }
    if !primary.uuid_change_is_local() {
        return Err(SbError::Unsupported(
            "metadata_csum without metadata_csum_seed: a new UUID would need every \
             checksum rewritten (format with -O metadata_csum_seed)"
                .into(),
        ));
    }
    if !primary.checksum_ok() {
        return Err(SbError::Unsupported(
            "the primary superblock's checksum is wrong".into(),
        ));
    }
    let old = primary.uuid();
    let mut copies = Vec::new();
    for (off, group) in primary.copy_offsets() {
        let sb = Superblock::read_at(image, off)?;
        // s_block_group_nr is 16 bits wide: mke2fs writes 65535 in the
        // backups of groups past it (volumes over about 9.5 TiB have some).
        let group_ok = group == 0 || u32::from(sb.u16(S_BLOCK_GROUP_NR)) == group.min(0xFFFF);
        if !sb.is_ext4() || sb.uuid() != old || !group_ok {
            return Err(SbError::Unsupported(format!(
                "expected a backup superblock of group {group} at byte {off}, found none"
            )));
        }
        copies.push((off, sb));
    }
    for (off, mut sb) in copies {
        sb.0[S_UUID..S_UUID + 16].copy_from_slice(&id.uuid);
        sb.0[S_HASH_SEED..S_HASH_SEED + 16].copy_from_slice(&id.hash_seed);
        sb.put_u32(S_MKFS_TIME, id.mkfs_time as u32);
        sb.0[S_MKFS_TIME_HI] = (id.mkfs_time >> 32) as u8;
        if sb.has_csum() {
            let c = sb_checksum(&sb.0);
            sb.put_u32(S_CHECKSUM, c);
        }
        image.write_all_at(&sb.0, off)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C over "123456789".
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn sparse_super_groups() {
        let yes: Vec<u64> = (1..60)
            .filter(|&g| g == 1 || [3, 5, 7].iter().any(|&p| is_power_of(g, p)))
            .collect();
        assert_eq!(yes, vec![1, 3, 5, 7, 9, 25, 27, 49]);
    }

    #[test]
    fn random_identities_differ_and_are_v4() {
        let a = Identity::random(1).unwrap();
        let b = Identity::random(1).unwrap();
        assert_ne!(a.uuid, b.uuid);
        assert_ne!(a.hash_seed, b.hash_seed);
        assert_eq!(a.uuid[6] >> 4, 4);
        assert_eq!(a.uuid[8] >> 6, 2);
    }
}
