//! What went wrong with a host-side access beneath an untrusted root: the
//! operation, the full host path, and why, worded so an operator knows
//! whether it was an attack (a symlink, an escape, a special file), a limit,
//! or plain I/O.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::FileKind;

/// Why an access was refused or failed.
#[derive(Debug)]
pub enum Reason {
    /// A component of the path is a symlink (or a magic link).
    Symlink,
    /// The path names a parent directory or an absolute path, or the
    /// kernel saw it leave the root.
    Escape,
    /// The file is a fifo, socket or device; reading one could block or
    /// never end.
    Special(FileKind),
    /// A directory where a file was wanted, or the other way round.
    WrongKind { want: &'static str, got: FileKind },
    /// The file is larger than the caller's cap.
    TooLarge { cap: u64 },
    /// A mount point inside a tree being removed.
    MountPoint,
    /// Any other error of the system call.
    Io(io::Error),
}

/// A refused or failed access beneath a root.
#[derive(Debug)]
pub struct Error {
    /// What was being done ("read", "list", "remove", ...).
    pub op: &'static str,
    /// The host path (root joined with the relative path).
    pub path: PathBuf,
    pub reason: Reason,
}

impl Error {
    pub(crate) fn new(op: &'static str, path: PathBuf, reason: Reason) -> Self {
        Error { op, path, reason }
    }

    /// Whether the path (or a directory on the way) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(&self.reason, Reason::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }

    /// Whether the access was refused because of what the path is (a
    /// symlink, an escape, a special file, too large) rather than an I/O
    /// failure: what a sandbox can cause on purpose.
    pub fn is_refused(&self) -> bool {
        !matches!(self.reason, Reason::Io(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        let op = self.op;
        match &self.reason {
            Reason::Symlink => write!(
                f,
                "cannot {op} {p}: it is, or goes through, a symlink; the daemon never follows \
                 symlinks a sandbox can write"
            ),
            Reason::Escape => write!(
                f,
                "cannot {op} {p}: the path leaves its root (an absolute path or '..'); the \
                 daemon only touches paths beneath a sandbox's root"
            ),
            Reason::Special(k) => write!(
                f,
                "cannot {op} {p}: it is a {k}, not a regular file; the daemon never reads \
                 special files a sandbox can create"
            ),
            Reason::WrongKind { want, got } => {
                write!(f, "cannot {op} {p}: it is a {got}, not a {want}")
            }
            Reason::TooLarge { cap } => write!(
                f,
                "cannot {op} {p}: it is larger than the {cap} bytes the daemon reads of a \
                 sandbox's file"
            ),
            Reason::MountPoint => write!(
                f,
                "cannot {op} {p}: it is a mount point; unmount it first (the daemon never \
                 removes across mounts)"
            ),
            Reason::Io(e) => write!(f, "cannot {op} {p}: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.reason {
            Reason::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e.reason {
            Reason::Io(io) => io.kind(),
            Reason::TooLarge { .. } => io::ErrorKind::InvalidData,
            Reason::MountPoint => io::ErrorKind::Other,
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
