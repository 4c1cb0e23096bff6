//! The benchmark's errors: each says what failed, why, and how to fix it.

use std::path::PathBuf;

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad argument: {0}; run `dwell-bench --help` for the options")]
    Usage(String),
    #[error("cannot reach the dwell daemon at {path}: {source}; start it with `dwell serve --socket {path}` (scripts/bench.sh does this)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("HTTP to the daemon failed during {what}: {source}")]
    Http { what: String, source: hyper::Error },
    #[error("the daemon answered {what} with HTTP {status}: {body}")]
    Api {
        what: String,
        status: u16,
        body: String,
    },
    #[error("the daemon's answer to {what} is not the expected JSON: {detail}")]
    BadAnswer { what: String, detail: String },
    #[error("cannot run {cmd}: {source}; is it installed (bwrap: `apt-get install bubblewrap`, nsenter/unshare: util-linux)?")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{cmd} failed ({status}); run it by hand to see why")]
    Command { cmd: String, status: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a path and an action to an `io::Error`.
pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}
