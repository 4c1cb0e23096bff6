//! Errors of the metadata store.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the metadata database {path}: {reason}; check that the data dir exists and is writable by the daemon (or, for --cluster, that PostgreSQL runs and takes the URL's user)")]
    Open { path: String, reason: String },
    #[error("the metadata database has schema version {found}, newer than this dwell ({supported}); upgrade dwell or use another --data-dir")]
    TooNew { found: i64, supported: i64 },
    #[error("a sandbox named {0:?} already exists; pick another --name or remove it with `dwell rm {0}`")]
    NameTaken(String),
    #[error("the tenant already has a network named {0:?}")]
    NetworkNameTaken(String),
    #[error("the tenant already has a volume named {0:?}")]
    VolumeNameTaken(String),
    #[error("metadata database error: {0}")]
    Sql(String),
    /// A uniqueness, foreign-key or not-null rule refused a write.
    #[error("metadata database refused a write: {0}")]
    Constraint(String),
    #[error("corrupt record in the metadata database: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Exhausted(String),
    /// Another daemon holds this node name, its lease still live.
    #[error("node name {name:?} is held by another daemon (another data dir) whose lease runs {left_ms} ms more; give this daemon its own --node-name, or stop the other one and wait for its lease to end")]
    NodeNameTaken { name: String, left_ms: i64 },
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        crate::db::sqlite::error(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
