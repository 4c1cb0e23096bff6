//! `dwell build`'s engine, free of sandboxes: Dockerfile parsing
//! ([`parse`]), word splitting and `$VAR` expansion ([`expand`]), the
//! image config a build accumulates ([`config`]), `.dockerignore` and glob
//! matching ([`ignore`]), read-only views of a build context or of an
//! image's layers that never follow symlinks ([`tree`]), COPY/ADD layers
//! ([`copy`]), layers captured from a sandbox's upper dir ([`layer`]), the
//! step cache ([`cache`]) and OCI image layouts ([`oci`]).
//!
//! The control plane (`dwell_control::build`) drives a build: it runs RUN
//! steps in sandboxes and uses this crate for everything else.

pub mod cache;
pub mod config;
pub mod copy;
pub mod expand;
pub mod ignore;
pub mod layer;
pub mod oci;
pub mod parse;
pub mod tree;

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a build step failed.
#[derive(Debug)]
pub enum BuildError {
    /// The Dockerfile does not parse.
    Parse(parse::ParseError),
    /// An instruction's arguments are wrong (a missing context file, an
    /// unknown stage, a bad flag value): the user's to fix.
    Invalid(String),
    /// What a step produced or a context holds is refused (a symlink on a
    /// path, a renamed dir...).
    Refused(String),
    /// A layer would exceed the build's limits.
    TooLarge(String),
    /// A host-side I/O failure.
    Io {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    Internal(String),
}

impl BuildError {
    pub fn io(what: &'static str, path: &Path, err: std::io::Error) -> BuildError {
        BuildError::Io {
            what,
            path: path.to_path_buf(),
            err,
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Parse(e) => write!(f, "{e}"),
            BuildError::Invalid(m)
            | BuildError::Refused(m)
            | BuildError::TooLarge(m)
            | BuildError::Internal(m) => f.write_str(m),
            BuildError::Io { what, path, err } => {
                write!(f, "cannot {what} {}: {err}", path.display())
            }
        }
    }
}

impl std::error::Error for BuildError {}

impl From<parse::ParseError> for BuildError {
    fn from(e: parse::ParseError) -> Self {
        BuildError::Parse(e)
    }
}

/// A random hex string for staging names.
pub fn nonce() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS has randomness");
    layer::hex(&b)
}

/// sha256 (hex) of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    layer::hex(&sha2::Sha256::digest(data))
}
