//! Locks that hold across the nodes of a cluster.
//!
//! A quota check and the write it allows must not interleave with another
//! node's: [`Store::tenant_lock`] takes a PostgreSQL advisory lock named
//! after the tenant on a connection of its own, held until the guard is
//! dropped (a node that dies releases it with its connection). On SQLite
//! (one daemon) there is nothing to take: the daemon's own lock suffices.

use crate::db::Conn;
use crate::{Backend, Result, Store};

/// A tenant's cluster-wide lock; released when dropped.
pub struct TenantLock<'a> {
    /// A PostgreSQL connection (Send: the guard is held across awaits).
    session: Option<crate::db::postgres::Session<'a>>,
    key: i64,
}

impl Drop for TenantLock<'_> {
    fn drop(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let unlocked = session.batch(&format!("SELECT pg_advisory_unlock({})", self.key));
        if let Err(e) = unlocked {
            tracing::warn!("cannot release a tenant lock ({e}); closing its connection instead");
            // The lock goes with the connection: never back to the pool
            // holding it.
            if let Some(s) = self.session.take() {
                s.discard();
            }
        }
    }
}

/// The advisory lock key of `what` (FNV-1a, 64 bits).
fn key_of(what: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in what.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

impl Store {
    /// Waits for and takes `tenant`'s lock across the cluster; None on
    /// SQLite.
    pub fn tenant_lock(&self, tenant: &str) -> Result<Option<TenantLock<'_>>> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(None);
        };
        let key = key_of(&format!("tenant:{tenant}"));
        let mut session = pool.session()?;
        if let Err(e) = session.batch(&format!("SELECT pg_advisory_lock({key})")) {
            return Err(crate::Error::Sql(format!(
                "tenant {tenant}'s quota lock was not free within the lock timeout (another node \
                 holds it: {e}); retry"
            )));
        }
        Ok(Some(TenantLock {
            session: Some(session),
            key,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn one_holder_at_a_time_across_stores() {
        let Some(pg) = dwell_testkit::postgres::Postgres::shared() else {
            return;
        };
        let url = pg.database("locks");
        // Two stores on one database: two nodes.
        let a = Arc::new(Store::postgres(&url).unwrap());
        let b = Arc::new(Store::postgres(&url).unwrap());
        let held = Arc::new(AtomicBool::new(false));
        let g = a.tenant_lock("acme").unwrap().unwrap();
        held.store(true, Ordering::SeqCst);
        let (b2, held2) = (b.clone(), held.clone());
        let t = std::thread::spawn(move || {
            let _g = b2.tenant_lock("acme").unwrap().unwrap();
            // Only once the first holder let go.
            assert!(!held2.load(Ordering::SeqCst));
            // Another tenant's lock is not in the way.
        });
        let _other = b.tenant_lock("other").unwrap().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        held.store(false, Ordering::SeqCst);
        drop(g);
        t.join().unwrap();
        assert!(Store::in_memory()
            .unwrap()
            .tenant_lock("acme")
            .unwrap()
            .is_none());
    }
}
