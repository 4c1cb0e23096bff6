//! The metadata store: the daemon's only source of truth about sandboxes.
//!
//! Records are rows in an embedded SQLite database (`dwell.db` in the data
//! dir) or, for a cluster of nodes, in PostgreSQL ([`Store::postgres`]);
//! one schema history serves both ([`migrations`]) and every method is
//! written once, in the SQL both read ([`db`]).
//! The store knows nothing about runtimes or HTTP: it keeps [`SandboxRecord`]s
//! (desired and observed [`State`], [`Mode`], runtime, a versioned [`Spec`],
//! timestamps, the reason for the last transition), parsed once as rows are
//! read, an append-only event log per sandbox, and hashed API keys.

mod audit;
mod console;
pub mod db;
mod e2b_templates;
mod error;
mod events;
mod id_ranges;
mod keys;
mod kinds;
mod locks;
pub mod migrations;
mod networks;
mod nodes;
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

use db::{Conn, Row, ToValue};

pub use audit::AuditEntry;
pub use console::{ConsoleSession, LoginGrant, LoginRefusal, SessionLookup, MAX_SESSIONS_PER_KEY};
pub use e2b_templates::{
    BuildRequest as E2bBuildRequest, E2bBuild, E2bLogLine, E2bTag, E2bTemplate, BUILD_BUILDING,
    BUILD_ERROR, BUILD_READY, BUILD_WAITING,
};
pub use error::{Error, Result};
pub use events::{Event, EventQuery, EVENTS_KEPT};
pub use keys::{ApiKey, KeyRecord};
pub use kinds::{Mode, RuntimeName, State};
pub use locks::TenantLock;
pub use networks::{parse_subnet, Member, Network};
pub use nodes::{NodeLoad, NodeRecord, NodeState, Registration};
pub use ports::Exposure;
pub use registry_credentials::RegistryCredential;
pub use sandboxes::{SandboxRecord, Spec};
pub use ssh_keys::SshKey;
pub use tenants::Tenant;
pub use usage::{UsageBucket, UsageDelta, UsageRow};
pub use volumes::NamedVolume;

/// A handle on the metadata database. Cheap operations; callers in async
/// code may call it directly (a statement is a few microseconds on SQLite,
/// a round trip on PostgreSQL) or from a blocking thread.
pub struct Store {
    backend: Backend,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
    /// In a cluster: this daemon's node name, stamped on work that only
    /// the node running it may declare interrupted (E2B builds).
    node: std::sync::OnceLock<String>,
}

/// Where the records live.
enum Backend {
    /// The embedded database: one connection, one writer at a time.
    Sqlite(Mutex<Connection>),
    /// A PostgreSQL server shared by the nodes of a cluster.
    Postgres(Box<db::postgres::Pool>),
}

/// A connection of the store for the length of a method (or of a
/// transaction, [`Store::tx`]).
pub(crate) enum Session<'a> {
    Sqlite(MutexGuard<'a, Connection>),
    Postgres(db::postgres::Session<'a>),
}

impl Conn for Session<'_> {
    fn execute(&mut self, sql: &str, args: &[&dyn ToValue]) -> Result<u64> {
        match self {
            Session::Sqlite(c) => Conn::execute(&mut **c, sql, args),
            Session::Postgres(s) => s.execute(sql, args),
        }
    }

    fn query(&mut self, sql: &str, args: &[&dyn ToValue]) -> Result<Vec<Row>> {
        match self {
            Session::Sqlite(c) => Conn::query(&mut **c, sql, args),
            Session::Postgres(s) => s.query(sql, args),
        }
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        match self {
            Session::Sqlite(c) => Conn::batch(&mut **c, sql),
            Session::Postgres(s) => s.batch(sql),
        }
    }
}

/// A transaction in progress: rolled back when dropped uncommitted (an
/// error or a panic in its body).
pub(crate) struct Tx<'a> {
    session: Session<'a>,
    open: bool,
}

impl<'a> std::ops::Deref for Tx<'a> {
    type Target = Session<'a>;
    fn deref(&self) -> &Session<'a> {
        &self.session
    }
}

impl<'a> std::ops::DerefMut for Tx<'a> {
    fn deref_mut(&mut self) -> &mut Session<'a> {
        &mut self.session
    }
}

impl Tx<'_> {
    pub(crate) fn commit(mut self) -> Result<()> {
        self.open = false;
        self.session.batch("COMMIT")
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.session.batch("ROLLBACK");
        }
    }
}

impl Store {
    /// Open (or create) the database at `path` and bring its schema up to
    /// date.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path).map_err(|e| Error::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
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
            backend: Backend::Sqlite(Mutex::new(conn)),
            clock: Box::new(now_ms),
            node: Default::default(),
        })
    }

    /// The store of a cluster: the PostgreSQL database at `url`
    /// (`postgres://USER:PASSWORD@HOST:PORT/DATABASE`), its schema brought
    /// up to date (one node at a time when several start together).
    pub fn postgres(url: &str) -> Result<Store> {
        Store::postgres_with_ca(url, None)
    }

    /// [`Store::postgres`] over TLS, the server's certificate checked
    /// against the PEM CA certificates `ca` (None: plain connections).
    pub fn postgres_with_ca(url: &str, ca: Option<&[u8]>) -> Result<Store> {
        let pool = db::postgres::Pool::with_ca(url, ca)?;
        {
            let mut s = pool.session().map_err(|e| Error::Open {
                path: pool.shown().to_string(),
                reason: e.to_string(),
            })?;
            migrations::apply_postgres(&mut s)?;
        }
        Ok(Store {
            backend: Backend::Postgres(Box::new(pool)),
            clock: Box::new(now_ms),
            node: Default::default(),
        })
    }

    /// Which engine keeps the records: `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Take timestamps from `clock` instead of the system time (the control
    /// plane passes its own clock, so tests can move time).
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Store {
        self.clock = Box::new(clock);
        self
    }

    /// Names this daemon's node (once; in a cluster).
    pub fn set_node(&self, name: &str) {
        let _ = self.node.set(name.to_string());
    }

    /// This daemon's node in a cluster.
    pub fn node(&self) -> Option<&str> {
        self.node.get().map(String::as_str)
    }

    /// "Now" for timestamps written by the store.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// A connection for one method.
    pub(crate) fn db(&self) -> Result<Session<'_>> {
        Ok(match &self.backend {
            // A panic while holding the lock leaves SQLite consistent
            // (every write is a statement or a transaction, and a
            // transaction is rolled back as it unwinds), so poisoning is
            // ignored.
            Backend::Sqlite(m) => Session::Sqlite(m.lock().unwrap_or_else(|p| p.into_inner())),
            Backend::Postgres(p) => Session::Postgres(p.session()?),
        })
    }

    /// A transaction: commit it with [`Tx::commit`]; dropped, it rolls
    /// back.
    pub(crate) fn tx(&self) -> Result<Tx<'_>> {
        let mut session = self.db()?;
        session.batch("BEGIN")?;
        Ok(Tx {
            session,
            open: true,
        })
    }
}

/// Milliseconds since the Unix epoch, the store's time unit.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Stores for tests: every method's tests run on both engines.
#[cfg(test)]
pub(crate) mod testing {
    use super::Store;

    /// A fresh store of each engine: SQLite in memory and, where
    /// PostgreSQL is installed, a new database on this test process's
    /// server (skipped with the reason printed where it is not).
    pub fn stores() -> Vec<Store> {
        let mut out = vec![Store::in_memory().unwrap()];
        if let Some(pg) = dwell_testkit::postgres::Postgres::shared() {
            out.push(Store::postgres(&pg.database("store")).unwrap());
        }
        out
    }
}
