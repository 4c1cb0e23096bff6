//! The store's content-addressed blobs: `blobs/sha256/<hex>`.
//!
//! Manifests, configs and compressed layer tarballs are kept once each, by
//! digest, so that an image can be exported as it was pulled or imported
//! and so that images sharing layers share their blobs. A blob enters the
//! store only after its content hashed to its name (copied to staging while
//! hashing, fsynced, renamed into place); nothing else ever writes there.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ImageStore;
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{hex, sha256_hex};

/// The hex part of a `sha256:<64 hex>` digest, lower-cased.
pub fn digest_hex(digest: &str) -> Option<String> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(h.to_ascii_lowercase())
        }
        _ => None,
    }
}

fn not_sha256(digest: &str) -> StorageError {
    StorageError::InvalidReference {
        reference: digest.to_string(),
        reason: "not a sha256:<64 hex digits> digest".to_string(),
    }
}

impl ImageStore {
    /// Where the blob `digest` lives (whether or not it is present).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let h = digest_hex(digest).ok_or_else(|| not_sha256(digest))?;
        Ok(self.root.join("blobs/sha256").join(h))
    }

    /// Whether the blob `digest` is in the store.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// Stores `bytes` as a blob; returns its digest.
    pub(crate) fn put_blob_bytes(&self, bytes: &[u8]) -> Result<String> {
        let digest = format!("sha256:{}", sha256_hex(bytes));
        let dest = self.blob_path(&digest)?;
        if dest.is_file() {
            return Ok(digest);
        }
        let tmp = self.tmp_path("blob");
        let res = (|| {
            let mut f = File::create(&tmp).ctx("create", &tmp)?;
            f.write_all(bytes).ctx("write", &tmp)?;
            f.sync_all().ctx("fsync", &tmp)?;
            fs::rename(&tmp, &dest).ctx("move blob into place at", &dest)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map(|_| digest)
    }

    /// Copies the file `src` into the store as a blob, checking it against
    /// `expected` when given; returns its digest and size. `what` names the
    /// blob in errors.
    pub(crate) fn put_blob_file(
        &self,
        src: &Path,
        expected: Option<&str>,
        what: &str,
    ) -> Result<(String, u64)> {
        if let Some(e) = expected {
            let dest = self.blob_path(e)?;
            if let Ok(m) = fs::metadata(&dest) {
                if m.is_file() {
                    return Ok((digest_of(e)?, m.len()));
                }
            }
        }
        let tmp = self.tmp_path("blob");
        let res = (|| {
            let mut input = File::open(src).ctx("open", src)?;
            let mut out = File::create(&tmp).ctx("create", &tmp)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).ctx("read", src),
                };
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).ctx("write", &tmp)?;
                size += n as u64;
            }
            let actual = format!("sha256:{}", hex(&hasher.finalize()));
            if let Some(e) = expected {
                if digest_of(e)? != actual {
                    return Err(StorageError::DigestMismatch {
                        what: what.to_string(),
                        expected: e.to_string(),
                        actual,
                    });
                }
            }
            out.sync_all().ctx("fsync", &tmp)?;
            let dest = self.blob_path(&actual)?;
            fs::rename(&tmp, &dest).ctx("move blob into place at", &dest)?;
            Ok((actual, size))
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    /// Moves a verified file (in the store's own directories) into place
    /// as blob `digest`; an already present blob wins.
    pub(crate) fn adopt_blob(&self, file: &Path, digest: &str) -> Result<PathBuf> {
        let dest = self.blob_path(digest)?;
        if dest.is_file() {
            let _ = fs::remove_file(file);
            return Ok(dest);
        }
        fs::rename(file, &dest).ctx("move blob into place at", &dest)?;
        Ok(dest)
    }

    /// Reads a blob, checking its digest and that it is at most `cap` bytes.
    pub fn read_blob(&self, digest: &str, cap: u64) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        let f = File::open(&p).ctx("open blob", &p)?;
        let mut bytes = Vec::new();
        f.take(cap + 1)
            .read_to_end(&mut bytes)
            .ctx("read blob", &p)?;
        if bytes.len() as u64 > cap {
            return Err(StorageError::BadImage {
                source_path: p,
                reason: format!("blob {digest} is larger than {cap} bytes"),
            });
        }
        let actual = format!("sha256:{}", sha256_hex(&bytes));
        if actual != digest_of(digest)? {
            return Err(StorageError::DigestMismatch {
                what: format!("stored blob {}", p.display()),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }
}

/// `digest` lower-cased and checked.
fn digest_of(digest: &str) -> Result<String> {
    digest_hex(digest)
        .map(|h| format!("sha256:{h}"))
        .ok_or_else(|| not_sha256(digest))
}
