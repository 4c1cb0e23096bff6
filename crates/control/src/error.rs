//! Errors of the control plane. Each carries a stable machine code and the
//! HTTP status the API answers with, and reads as what / why / how to fix.

/// A control-plane failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No live sandbox of this tenant has that id or name. Deliberately the
    /// same whether it never existed or belongs to someone else.
    #[error("no sandbox named or with id {0:?}; list sandboxes with `dwell ls`")]
    NotFound(String),
    /// The request is malformed or out of range.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// The request does not fit the sandbox's current state.
    #[error("{0}")]
    Conflict(String),
    /// A tenant quota would be exceeded.
    #[error("{0}")]
    Quota(String),
    /// A name already used by a live sandbox.
    #[error("a sandbox named {0:?} already exists; pick another --name or remove it with `dwell rm {0}`")]
    NameTaken(String),
    /// The runtime failed.
    #[error("runtime: {0}")]
    Runtime(#[from] dwell_runtime::Error),
    /// Volumes or images failed.
    #[error("storage: {0}")]
    Storage(#[from] dwell_storage::StorageError),
    /// The agent inside the sandbox failed or is unreachable.
    #[error("agent: {0}")]
    Agent(#[from] dwell_proto::Error),
    /// The metadata store failed.
    #[error("{0}")]
    Store(dwell_store::Error),
    /// Something else went wrong inside the daemon.
    #[error("{0}")]
    Internal(String),
}

impl From<dwell_store::Error> for Error {
    fn from(e: dwell_store::Error) -> Self {
        match e {
            dwell_store::Error::NameTaken(n) => Error::NameTaken(n),
            e => Error::Store(e),
        }
    }
}

impl Error {
    /// Stable code for API clients.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::Runtime(dwell_runtime::Error::Unsupported { .. }) => "unsupported",
            Error::Invalid { .. } => "invalid_argument",
            Error::Conflict(_) => "conflict",
            Error::NameTaken(_) => "name_taken",
            Error::Quota(_) => "quota_exceeded",
            Error::Runtime(_) => "runtime_error",
            Error::Storage(_) => "storage_error",
            Error::Agent(_) => "agent_error",
            Error::Store(_) => "store_error",
            Error::Internal(_) => "internal",
        }
    }

    /// HTTP status for the API.
    pub fn status(&self) -> u16 {
        match self {
            Error::NotFound(_) => 404,
            Error::Invalid { .. } => 400,
            Error::Conflict(_) | Error::NameTaken(_) => 409,
            Error::Runtime(dwell_runtime::Error::Unsupported { .. }) => 409,
            Error::Quota(_) => 403,
            Error::Agent(_) => 502,
            _ => 500,
        }
    }

    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
