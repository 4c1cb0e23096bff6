//! The step cache, under the image store's root:
//!
//! ```text
//! build-cache/.lock          flock: shared while a build runs, exclusive to prune
//! build-cache/index/<key>    JSON: the layer a step produced (or none)
//! build-cache/blobs/<hex>    compressed layer blobs, by digest
//! build-cache/tmp/           staging of running builds (cleared when idle)
//! ```
//!
//! A step's key is the sha256 of its parent's key and what determines the
//! step's result ([`key`]). Index entries are written atomically (write
//! then rename), so concurrent builds never see half an entry; two builds
//! producing the same key write equivalent entries. [`prune`] takes the
//! lock exclusively, so it never removes a blob a running build reads.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layer::LayerBlob;
use crate::oci::Layer;
use crate::{nonce, sha256_hex, BuildError};

/// The cache dir's name under the image store's root.
pub const DIR: &str = "build-cache";

/// What a cached step produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The layer (none for metadata steps and RUN steps that changed
    /// nothing): blob digest, diff id and size.
    pub layer: Option<(String, String, u64)>,
}

/// The key of a step: parent key + its parts.
pub fn key(parent: &str, parts: &[&str]) -> String {
    let mut s = String::from(parent);
    for p in parts {
        s.push('\0');
        s.push_str(&p.len().to_string());
        s.push(':');
        s.push_str(p);
    }
    sha256_hex(s.as_bytes())
}

/// An open cache (holding the shared lock).
pub struct Cache {
    dir: PathBuf,
    _lock: File,
}

fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on an owned descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn lock_file(dir: &Path) -> Result<File, BuildError> {
    let p = dir.join(".lock");
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| BuildError::io("open", &p, e))
}

impl Cache {
    /// Open the cache under `images_root`; staging left by crashed builds
    /// is cleared when no other build runs.
    pub fn open(images_root: &Path) -> Result<Cache, BuildError> {
        let dir = images_root.join(DIR);
        for sub in ["index", "blobs", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| BuildError::io("create", &p, e))?;
        }
        let lock = lock_file(&dir)?;
        if flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
            clear(&dir.join("tmp"));
        }
        flock(&lock, libc::LOCK_SH).map_err(|e| BuildError::io("lock", &dir, e))?;
        Ok(Cache { dir, _lock: lock })
    }

    /// The entry of `key` whose blob is present.
    pub fn get(&self, key: &str) -> Option<Entry> {
        let data = fs::read(self.dir.join("index").join(key)).ok()?;
        let e: Entry = serde_json::from_slice(&data).ok()?;
        if let Some((digest, _, _)) = &e.layer {
            if !self.blob_path(digest).is_file() {
                return None;
            }
        }
        Some(e)
    }

    /// Record `entry` for `key`.
    pub fn put(&self, key: &str, entry: &Entry) -> Result<(), BuildError> {
        let tmp = self.tmp_path("entry");
        let data = serde_json::to_vec(entry).expect("entry serializes");
        fs::write(&tmp, data).map_err(|e| BuildError::io("write", &tmp, e))?;
        let dst = self.dir.join("index").join(key);
        fs::rename(&tmp, &dst).map_err(|e| BuildError::io("rename into", &dst, e))
    }

    /// A fresh staging path.
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        self.dir.join("tmp").join(format!("{what}-{}", nonce()))
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs").join(digest)
    }

    /// Move a finished blob into the cache.
    pub fn keep(&self, blob: &LayerBlob) -> Result<Layer, BuildError> {
        let dst = self.blob_path(&blob.digest);
        fs::rename(&blob.path, &dst).map_err(|e| BuildError::io("move blob to", &dst, e))?;
        Ok(Layer {
            blob: dst,
            digest: blob.digest.clone(),
            diff_id: blob.diff_id.clone(),
            size: blob.size,
        })
    }

    /// The layer of a cache entry.
    pub fn layer(&self, e: &Entry) -> Option<Layer> {
        e.layer.as_ref().map(|(d, diff, size)| Layer {
            blob: self.blob_path(d),
            digest: d.clone(),
            diff_id: diff.clone(),
            size: *size,
        })
    }
}

fn clear(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&p),
                _ => fs::remove_file(&p),
            };
        }
    }
}

fn usage(dir: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                n += if m.is_dir() {
                    usage(&e.path())
                } else {
                    m.len()
                };
            }
        }
    }
    n
}

/// Drop the whole build cache under `images_root`. Running builds hold
/// the cache lock shared: this waits for them at most `wait`, then fails
/// with an I/O error of kind `WouldBlock` (a build may run for hours).
/// Returns the bytes freed.
pub fn prune(images_root: &Path, wait: std::time::Duration) -> Result<u64, BuildError> {
    let dir = images_root.join(DIR);
    if !dir.is_dir() {
        return Ok(0);
    }
    let lock = lock_file(&dir)?;
    let until = std::time::Instant::now() + wait;
    loop {
        match flock(&lock, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() >= until {
                    return Err(BuildError::io("lock", &dir, e));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(BuildError::io("lock", &dir, e)),
        }
    }
    let mut freed = 0;
    for sub in ["index", "blobs", "tmp"] {
        let p = dir.join(sub);
        freed += usage(&p);
        clear(&p);
    }
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_prune() {
        let t = tempfile::tempdir().unwrap();
        let c = Cache::open(t.path()).unwrap();
        let k = key("", &["FROM host"]);
        assert_ne!(k, key("", &["FROM host", ""]));
        assert!(c.get(&k).is_none());
        c.put(&k, &Entry::default()).unwrap();
        assert_eq!(c.get(&k), Some(Entry::default()));
        // An entry whose blob is gone is a miss.
        let k2 = key(&k, &["RUN x"]);
        c.put(
            &k2,
            &Entry {
                layer: Some(("ab".into(), "cd".into(), 1)),
            },
        )
        .unwrap();
        assert!(c.get(&k2).is_none());
        // F15: a running build (holding the cache) makes prune fail fast
        // instead of waiting forever.
        let t0 = std::time::Instant::now();
        let e = prune(t.path(), std::time::Duration::from_millis(200)).unwrap_err();
        assert!(
            matches!(&e, BuildError::Io { err, .. } if err.kind() == std::io::ErrorKind::WouldBlock),
            "{e}"
        );
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        drop(c);
        prune(t.path(), std::time::Duration::ZERO).unwrap();
        let c = Cache::open(t.path()).unwrap();
        assert!(c.get(&k).is_none());
    }
}
