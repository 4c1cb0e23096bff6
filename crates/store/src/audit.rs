//! The audit log: every request that changes something, with who made it
//! (tenant and API key), what it was (method and path, which names the
//! sandbox), when, and how it ended (HTTP status). Kept for a retention
//! period, then pruned.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::{Result, Store};

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

impl Store {
    pub fn add_audit(
        &self,
        tenant: &str,
        key_id: &str,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO audit (at, tenant, key_id, method, path, status) VALUES (?1,?2,?3,?4,?5,?6)",
            params![self.now(), tenant, key_id, method, path, status],
        )?;
        Ok(())
    }

    /// Entries since `since` (Unix ms), of one tenant or all, oldest first.
    pub fn audit(&self, tenant: Option<&str>, since: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, at, tenant, key_id, method, path, status FROM audit
             WHERE at >= ?1 AND (?2 IS NULL OR tenant = ?2) ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![since, tenant, limit], |r| {
            Ok(AuditEntry {
                seq: r.get(0)?,
                at: r.get(1)?,
                tenant: r.get(2)?,
                key_id: r.get(3)?,
                method: r.get(4)?,
                path: r.get(5)?,
                status: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Drop entries older than `before`; returns how many.
    pub fn prune_audit(&self, before: i64) -> Result<usize> {
        let conn = self.conn();
        Ok(conn.execute("DELETE FROM audit WHERE at < ?1", [before])?)
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;

    #[test]
    fn record_query_prune() {
        let s = Store::in_memory().unwrap();
        s.add_audit("acme", "key-1", "POST", "/v1/sandboxes", 201)
            .unwrap();
        s.add_audit("other", "key-2", "DELETE", "/v1/sandboxes/x", 204)
            .unwrap();
        assert_eq!(s.audit(Some("acme"), 0, 10).unwrap().len(), 1);
        assert_eq!(s.audit(None, 0, 10).unwrap().len(), 2);
        assert_eq!(s.prune_audit(i64::MAX).unwrap(), 2);
        assert!(s.audit(None, 0, 10).unwrap().is_empty());
    }
}
