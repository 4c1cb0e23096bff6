//! Errors of the metadata store.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the metadata database {path}: {source}; check that the data dir exists and is writable by the daemon")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the metadata database has schema version {found}, newer than this dwell ({supported}); upgrade dwell or use another --data-dir")]
    TooNew { found: i64, supported: i64 },
    #[error("a sandbox named {0:?} already exists; pick another --name or remove it with `dwell rm {0}`")]
    NameTaken(String),
    #[error("the tenant already has a network named {0:?}")]
    NetworkNameTaken(String),
    #[error("the tenant already has a volume named {0:?}")]
    VolumeNameTaken(String),
    #[error("metadata database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("corrupt record in the metadata database: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Exhausted(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
