//! Errors of the runtime layer.

/// A runtime failure, phrased for the person who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host lacks a kernel feature or tool the runtime needs.
    #[error("{what} is not available on this host: {why}; {fix}")]
    Unsupported {
        what: String,
        why: String,
        fix: String,
    },
    /// A system call or command failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The sandbox did not come up.
    #[error("sandbox failed to start: {0}")]
    Start(String),
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach context to an io::Error.
pub trait Context<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
