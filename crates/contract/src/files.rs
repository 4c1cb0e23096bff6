//! File operations inside a sandbox: `/v1/sandboxes/{id}/files` (contents,
//! streamed as `application/octet-stream`) and `/fs/*` (metadata).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// File type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Metadata of one file (not following symlinks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileInfo {
    /// Last path component.
    pub name: String,
    /// Full path inside the sandbox.
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, Unix milliseconds.
    pub modified_ms: i64,
    pub symlink_target: Option<String>,
}

/// `PUT .../files`: what was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Written {
    pub path: String,
    pub bytes: u64,
}

/// `POST .../fs/mkdir`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct MkdirBody {
    pub path: String,
    /// Create missing parents too.
    #[serde(default)]
    pub parents: bool,
}

/// `POST .../fs/rename`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct RenameBody {
    pub from: String,
    pub to: String,
}
