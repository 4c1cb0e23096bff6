//! The audit log: every request that changes something, with who made it
//! (tenant and API key), what it was (method and path, which names the
//! sandbox), when, and how it ended (HTTP status). Kept for a retention
//! period, then pruned.

use serde::{Deserialize, Serialize};

use crate::db::{Conn, Row};
use crate::{args, Result, Store};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: i64,
    pub tenant: String,
    /// The API key's id, or `local` for the unix socket.
    pub key_id: String,
    pub method: String,
    pub path: String,
    pub status: u16,
}

fn from_row(r: &Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get(0)?,
        at: r.get(1)?,
        tenant: r.get(2)?,
        key_id: r.get(3)?,
        method: r.get(4)?,
        path: r.get(5)?,
        status: r.get(6)?,
    })
}

impl Store {
    pub fn add_audit(
        &self,
        tenant: &str,
        key_id: &str,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<()> {
        self.db()?.execute(
            "INSERT INTO audit (at, tenant, key_id, method, path, status) VALUES (?1,?2,?3,?4,?5,?6)",
            args![self.now(), tenant, key_id, method, path, status],
        )?;
        Ok(())
    }

    /// Entries since `since` (Unix ms), of one tenant or all, oldest first.
    pub fn audit(&self, tenant: Option<&str>, since: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        // The cast types `?2` for PostgreSQL when it is NULL.
        self.db()?
            .query(
                "SELECT seq, at, tenant, key_id, method, path, status FROM audit
                 WHERE at >= ?1 AND (CAST(?2 AS TEXT) IS NULL OR tenant = ?2)
                 ORDER BY seq LIMIT ?3",
                args![since, tenant, limit],
            )?
            .iter()
            .map(from_row)
            .collect()
    }

    /// Drop entries older than `before`; returns how many.
    pub fn prune_audit(&self, before: i64) -> Result<usize> {
        let n = self
            .db()?
            .execute("DELETE FROM audit WHERE at < ?1", args![before])?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    #[test]
    fn record_query_prune() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.add_audit("acme", "key-1", "POST", "/v1/sandboxes", 201)
                .unwrap();
            s.add_audit("other", "key-2", "DELETE", "/v1/sandboxes/x", 204)
                .unwrap();
            let acme = s.audit(Some("acme"), 0, 10).unwrap();
            assert_eq!(acme.len(), 1, "{e}");
            assert_eq!(
                (acme[0].key_id.as_str(), acme[0].status),
                ("key-1", 201),
                "{e}"
            );
            assert_eq!(s.audit(None, 0, 10).unwrap().len(), 2, "{e}");
            assert_eq!(s.prune_audit(i64::MAX).unwrap(), 2, "{e}");
            assert!(s.audit(None, 0, 10).unwrap().is_empty(), "{e}");
        }
    }

    #[test]
    fn oldest_first_since_limit_and_partial_prune() {
        for s in crate::testing::stores() {
            let e = s.engine();
            let clock = Arc::new(AtomicI64::new(1_000));
            let c = clock.clone();
            let s = s.with_clock(move || c.load(Ordering::SeqCst));
            for (i, tenant) in ["a", "b", "a", "a"].iter().enumerate() {
                clock.store(1_000 * (i as i64 + 1), Ordering::SeqCst);
                s.add_audit(tenant, "k", "POST", &format!("/p{i}"), 200)
                    .unwrap();
            }
            let all = s.audit(None, 0, 100).unwrap();
            let paths: Vec<_> = all.iter().map(|a| a.path.as_str()).collect();
            assert_eq!(paths, ["/p0", "/p1", "/p2", "/p3"], "{e}: oldest first");
            assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "{e}");
            let a: Vec<_> = s
                .audit(Some("a"), 2_000, 100)
                .unwrap()
                .into_iter()
                .map(|a| a.path)
                .collect();
            assert_eq!(a, ["/p2", "/p3"], "{e}: tenant and since");
            assert_eq!(s.audit(None, 0, 2).unwrap().len(), 2, "{e}: limit");
            assert!(s.audit(Some("nobody"), 0, 10).unwrap().is_empty(), "{e}");
            // Strictly older than `before` goes.
            assert_eq!(s.prune_audit(3_000).unwrap(), 2, "{e}");
            let left: Vec<_> = s.audit(None, 0, 10).unwrap();
            assert_eq!(
                left.iter().map(|a| a.at).collect::<Vec<_>>(),
                [3_000, 4_000],
                "{e}"
            );
            assert_eq!(s.prune_audit(0).unwrap(), 0, "{e}");
        }
    }
}
