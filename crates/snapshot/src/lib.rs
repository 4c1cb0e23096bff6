//! dwell-snapshot: content-addressed snapshots of sandbox volume images.
//!
//! A snapshot of a (sparse) image file is a [`Manifest`] listing the image's extents as chunks
//! named by their BLAKE3 hash, or as holes. Chunks are zstd-compressed, optionally encrypted with
//! a per-tenant key ([`TenantKey`]), and stored once in a [`ChunkStore`]: a local directory
//! ([`LocalStore`]) or an S3-compatible bucket (`S3Store`, feature `s3`). Because chunks are
//! shared, every snapshot is incremental for free. Manifests are published atomically after their
//! chunks, so a crash never exposes a half-written snapshot; restores verify every chunk and
//! replace the target atomically; [`delete`] and [`gc`] coordinate with concurrent writers through
//! leases. FORMAT.md describes the stored format.
//!
//! All functions are blocking; call them from `spawn_blocking` in async code.

mod chunker;
mod codec;
mod crypt;
mod error;
mod fiemap;
mod gc;
mod lease;
mod manifest;
mod owner;
mod par;
mod progress;
mod snapshot;
pub mod store;

pub use chunker::{Cell, Image, DEFAULT_CHUNK_SIZE};
pub use crypt::{MasterKey, TenantKey, MASTER_KEY_LEN, MASTER_TENANT_V1};
pub use error::{Error, Result};
pub use fiemap::same_ranges;
pub use gc::{delete, gc, GcOptions, GcReport};
pub use lease::DEFAULT_LEASE_TTL;
pub use manifest::{
    validate_attachment_name, validate_id, Attachment, ChunkId, Encryption, Extent, Manifest,
    Sizes, Source, FORMAT_VERSION,
};
pub use progress::{Phase, Progress, ProgressFn};
pub use snapshot::{
    create, list, load, restore, restore_attachment, CreateOptions, RestoreOptions,
};
pub use store::local::LocalStore;
#[cfg(feature = "s3")]
pub use store::s3::{S3Config, S3Store};
pub use store::{ChunkStore, ObjectInfo};
