//! The client's error type.

use crate::messages::{ErrorKind, RemoteError};

/// Errors of [`crate::AgentClient`] calls.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The connection could not be made or is gone (agent died, closed the
    /// connection, or the socket failed). Reconnect once the agent is back.
    #[error("sandbox agent unreachable: {0}")]
    Unreachable(String),
    /// The agent sent bytes that break the protocol; the connection was closed.
    #[error("sandbox agent protocol violation: {0} (connection closed; is the agent the same version as the daemon?)")]
    Protocol(String),
    /// The peer could not prove the sandbox's agent key (or wanted one this
    /// client does not have): the connection was refused, fail closed.
    #[error("sandbox agent not authenticated: {0}")]
    Unauthenticated(String),
    /// The agent did not answer in time; the connection may be hung.
    #[error("sandbox agent did not answer {what} within {ms} ms")]
    Timeout { what: String, ms: u64 },
    /// The agent carried out the request and reported a failure.
    #[error("{}: {}", .0.kind, .0.message)]
    Remote(RemoteError),
    /// The caller used the API wrongly (e.g. wrote to a finished stream).
    #[error("invalid use: {0}")]
    Invalid(String),
    /// What the agent sent is more than the caller set out to hold in
    /// memory (a file read whole, a process's collected output); reading
    /// stopped at the limit and the stream was cancelled.
    #[error("{what} is larger than the {max} byte limit of this operation")]
    TooLarge { what: String, max: u64 },
}

impl Error {
    /// The remote error kind, if this is a remote error.
    pub fn remote_kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Remote(e) => Some(e.kind),
            _ => None,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
