//! The crate's error type: every variant says what failed, why, and what to do about it.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while creating, restoring, deleting or collecting snapshots.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The object store (local directory or S3) refused or failed an operation.
    #[error("object store {store}: {action} {key}: {reason}; check that the store is reachable and the credentials allow it")]
    Store {
        store: String,
        action: &'static str,
        key: String,
        reason: String,
    },

    /// A snapshot with this id does not exist in the store.
    #[error("snapshot {id:?} not found in {store}; list the snapshots to see the valid ids")]
    SnapshotNotFound { id: String, store: String },

    /// A snapshot with this id already exists: ids are never reused.
    #[error("snapshot {id:?} already exists in {store}; pick another id or delete the old snapshot first")]
    SnapshotExists { id: String, store: String },

    /// The id is not usable as a snapshot id.
    #[error("invalid snapshot id {id:?}: use 1-128 characters from [A-Za-z0-9._-], not starting with '.'")]
    InvalidId { id: String },

    /// A manifest could not be parsed or is inconsistent.
    #[error("manifest {id:?} is invalid: {reason}; the snapshot cannot be used (it was written by an incompatible version or damaged)")]
    BadManifest { id: String, reason: String },

    /// A chunk referenced by a manifest is absent from the store.
    #[error("snapshot {snapshot:?}: chunk {chunk} ({file}, offset {offset}) is missing from {store}; the snapshot is damaged and cannot be restored")]
    MissingChunk {
        snapshot: String,
        chunk: String,
        /// `the volume image` or `attachment <name>`.
        file: String,
        offset: u64,
        store: String,
    },

    /// A chunk's content does not match its recorded hash, length, or authentication tag.
    #[error("snapshot {snapshot:?}: chunk {chunk} ({file}, offset {offset}) is corrupt: {reason}; the snapshot is damaged and cannot be restored, nothing was written to the target")]
    CorruptChunk {
        snapshot: String,
        chunk: String,
        /// `the volume image` or `attachment <name>`.
        file: String,
        offset: u64,
        reason: String,
    },

    /// The snapshot is encrypted and no key, or a different tenant key, was given.
    #[error("snapshot {snapshot:?} is encrypted with key {expected}; {given}; pass the tenant key the snapshot was created with")]
    WrongKey {
        snapshot: String,
        expected: String,
        given: String,
    },

    /// A garbage collection held its lease for longer than we are willing to wait.
    #[error("a garbage collection in {store} is still running after {waited_secs} s (lease {lease}); retry later, or remove the lease if its process is gone")]
    GcBusy {
        store: String,
        lease: String,
        waited_secs: u64,
    },

    /// The writer went longer than the lease time-to-live without refreshing its lease, so a
    /// concurrent garbage collection may have removed chunks it relies on.
    #[error("snapshot {snapshot:?} took {elapsed_secs} s between lease refreshes (limit {ttl_secs} s); it was abandoned to stay safe against garbage collection: retry it")]
    LeaseExpired {
        snapshot: String,
        elapsed_secs: u64,
        ttl_secs: u64,
    },

    /// The source image is not something we can snapshot.
    #[error("image {path}: {reason}")]
    BadImage { path: PathBuf, reason: String },

    /// The store configuration is unusable.
    #[error("object store configuration: {0}")]
    Config(String),

    /// A worker thread panicked (a bug).
    #[error("a snapshot worker thread panicked: {0}")]
    WorkerPanic(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the action and the path it concerned.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
