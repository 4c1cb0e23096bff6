//! The metadata store: the daemon's only source of truth about sandboxes.
//!
//! Records are rows in an embedded SQLite database (`dwell.db` in the data
//! dir) whose schema evolves through numbered migrations ([`migrations`]).
//! The store knows nothing about runtimes or HTTP: it keeps [`SandboxRecord`]s
//! (desired and observed [`State`], [`Mode`], runtime, a versioned [`Spec`],
//! timestamps, the reason for the last transition), parsed once as rows are
//! read, an append-only event log per sandbox, and hashed API keys.
//!
//! A scale-out deployment would put PostgreSQL behind the same methods.

mod audit;
mod e2b_templates;
mod error;
mod events;
mod id_ranges;
mod keys;
mod kinds;
pub mod migrations;
mod networks;
mod ports;
mod registry_credentials;
mod sandboxes;
mod ssh_keys;
mod tenants;
mod usage;
mod volumes;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

pub use audit::AuditEntry;
pub use e2b_templates::{
    BuildRequest as E2bBuildRequest, E2bBuild, E2bLogLine, E2bTag, E2bTemplate, BUILD_BUILDING,
    BUILD_ERROR, BUILD_READY, BUILD_WAITING,
};
pub use error::{Error, Result};
pub use events::{Event, EventQuery, EVENTS_KEPT};
pub use keys::{ApiKey, KeyRecord};
pub use kinds::{Mode, RuntimeName, State};
pub use networks::{parse_subnet, Member, Network};
pub use ports::Exposure;
pub use registry_credentials::RegistryCredential;
pub use sandboxes::{SandboxRecord, Spec};
pub use ssh_keys::SshKey;
pub use tenants::Tenant;
pub use usage::{UsageDelta, UsageRow};
pub use volumes::NamedVolume;

/// A handle on the metadata database. Cheap operations; callers in async
/// code may call it directly (each statement is a few microseconds) or from
/// a blocking thread.
pub struct Store {
    conn: Mutex<Connection>,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl Store {
    /// Open (or create) the database at `path` and bring its schema up to
    /// date.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path).map_err(|e| Error::Open {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::init(conn)
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Store> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::apply(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            clock: Box::new(now_ms),
        })
    }

    /// Take timestamps from `clock` instead of the system time (the control
    /// plane passes its own clock, so tests can move time).
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Store {
        self.clock = Box::new(clock);
        self
    }

    /// "Now" for timestamps written by the store.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every
        // write is a statement or a transaction), so poisoning is ignored.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Milliseconds since the Unix epoch, the store's time unit.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
