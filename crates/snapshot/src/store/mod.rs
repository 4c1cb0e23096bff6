//! Where snapshots live: the [`ChunkStore`] trait over a flat namespace of immutable objects,
//! with a local-directory backend and an S3-compatible backend.
//!
//! Key layout (same in every backend):
//! - `chunks/ab/cdef…` — one object per chunk, named by its 64-hex-digit hash split after two
//!   digits; written once, never modified.
//! - `manifests/<id>.json` — one per snapshot, published only after all of its chunks.
//! - `leases/create-<id>.json`, `leases/gc-<nonce>.json` — the coordination between writers and
//!   garbage collection (see `lease.rs`).
//!
//! Every `put` is atomic: a reader sees the whole object or none of it.

pub mod local;
#[cfg(feature = "s3")]
pub mod s3;

use std::time::SystemTime;

use crate::error::Result;

/// Metadata of one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key, e.g. `chunks/ab/cdef…`.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time as the store reports it.
    pub modified: SystemTime,
}

/// An object store holding chunks, manifests and leases. Implementations are blocking and safe
/// to call from many threads at once; callers in async code use `spawn_blocking`.
pub trait ChunkStore: Send + Sync {
    /// A human-readable name for messages, e.g. `dir:/var/lib/dwell/snapshots` or `s3://b/p`.
    fn describe(&self) -> String;

    /// How many requests are worth running at once against this store.
    fn parallelism(&self) -> usize;

    /// Stores `data` under `key` atomically, replacing any previous object.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;

    /// Reads an object; `None` if it does not exist.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// An object's metadata; `None` if it does not exist.
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;

    /// Removes an object; removing an absent object succeeds.
    fn delete(&self, key: &str) -> Result<()>;

    /// Every object whose key starts with `prefix` (a directory such as `chunks/`, ending in `/`).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Makes every completed `put` durable (a no-op where puts are durable on return).
    fn sync(&self) -> Result<()>;

    /// Removes leftovers of interrupted writes older than `age`; returns how many. Stores whose
    /// writes leave nothing behind (S3) have nothing to do.
    fn cleanup_tmp(&self, age: std::time::Duration) -> Result<usize> {
        let _ = age;
        Ok(0)
    }
}
