//! Error type of the storage layer.
//!
//! Every variant says what failed, why, and (where there is one) how to fix
//! it, so that callers can pass the message on to a user unchanged.

use std::io;
use std::path::{Path, PathBuf};

/// Result alias used throughout this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything that can go wrong in volumes and images.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A volume id or image name does not follow the naming rules.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// "volume id" or "image name".
        what: &'static str,
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },

    /// `create` was asked for a volume id that is already taken.
    #[error("volume {0:?} already exists; delete it first or choose another id")]
    VolumeExists(String),

    /// The volume id names no volume.
    #[error("volume {0:?} does not exist; create it first")]
    VolumeNotFound(String),

    /// A requested volume size is out of range.
    #[error("invalid volume size {size} bytes: {reason}")]
    InvalidSize {
        /// The requested size.
        size: u64,
        /// Why it is refused.
        reason: String,
    },

    /// An image reference cannot be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An image is already stored under this reference.
    #[error("image {0:?} already exists; remove it first (`dwell image rm`) or pick another name")]
    ImageExists(String),

    /// The image name names no image.
    #[error(
        "image {0:?} does not exist; pull or import it first (`dwell image pull`), or use the \
         built-in image \"host\""
    )]
    ImageNotFound(String),

    /// A built-in image cannot be removed while stored images are built on
    /// it: their layers include its own.
    #[error("{}", image_is_base(image, dependents))]
    ImageIsBase {
        /// The built-in image asked to be removed.
        image: String,
        /// Names of the stored images built on it.
        dependents: Vec<String>,
    },

    /// An operating-system call on a path failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done, e.g. "create directory".
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An external tool (mkfs.ext4) failed or is missing.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line that was run.
        command: String,
        /// Exit status and stderr, or why it could not start.
        detail: String,
    },

    /// Attaching or detaching a loop device failed.
    #[error("loop device: {0}")]
    Loop(String),

    /// A mount or unmount failed.
    #[error("{op} {path}: {source}")]
    Mount {
        /// "mount" or "unmount" plus context.
        op: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The errno from the kernel.
        #[source]
        source: io::Error,
    },

    /// An image to import is malformed or unsupported.
    #[error("cannot import image from {source_path}: {reason}")]
    BadImage {
        /// The directory or tarball given to import.
        source_path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A blob's content does not hash to the digest the manifest names.
    #[error(
        "digest mismatch for {what}: the manifest says {expected} but the content hashes to \
         {actual}; the image is corrupt or was tampered with, export it again"
    )]
    DigestMismatch {
        /// Which blob (layer or config) it is.
        what: String,
        /// The digest the manifest names.
        expected: String,
        /// The digest of the content.
        actual: String,
    },

    /// A layer entry would land outside its layer directory.
    #[error("unsafe entry {entry:?} in layer {layer}: {reason}; refusing to import this image")]
    UnsafePath {
        /// The layer's digest.
        layer: String,
        /// The entry's path as written in the tar.
        entry: String,
        /// Why it is refused.
        reason: String,
    },

    /// A stored metadata file cannot be read back.
    #[error("corrupt metadata {path}: {reason}; remove the file to drop the entry")]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
}

/// The message of [`StorageError::ImageIsBase`]: names the first few
/// dependents, and the way out.
fn image_is_base(image: &str, dependents: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut names = dependents
        .iter()
        .take(SHOWN)
        .map(|d| format!("{d:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if dependents.len() > SHOWN {
        names.push_str(&format!(" and {} more", dependents.len() - SHOWN));
    }
    let (s, them) = if dependents.len() == 1 {
        ("", "it")
    } else {
        ("s", "them")
    };
    format!(
        "image {image:?} is the base of stored image{s} {names}: {them} use{verb} its layers, \
         so removing it would break {them}; remove {them} first (`dwell image rm NAME`, or \
         delete the E2B template that built {them}), then remove {image:?}",
        verb = if dependents.len() == 1 { "s" } else { "" },
    )
}

/// Attaches an operation and a path to `io::Error`s.
pub(crate) trait IoContext<T> {
    /// Wraps the error as [`StorageError::Io`].
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, io::Error> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| StorageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}
