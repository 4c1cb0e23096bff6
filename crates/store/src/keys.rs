//! API keys. Only a hash of each key is stored; the key itself is shown
//! once, when it is made.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::{Result, Store};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub admin: bool,
    pub created_at: i64,
}

impl Store {
    /// Store a key by the hash of its secret.
    pub fn insert_key(&self, key: &ApiKey, hash: &str) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO api_keys (id, hash, tenant, name, admin, created_at) VALUES (?1,?2,?3,?4,?5,?6)",
            params![key.id, hash, key.tenant, key.name, key.admin, self.now()],
        )?;
        Ok(())
    }

    /// The key whose secret hashes to `hash`.
    pub fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT id, tenant, name, admin, created_at FROM api_keys WHERE hash = ?1",
                [hash],
                |r| {
                    Ok(ApiKey {
                        id: r.get(0)?,
                        tenant: r.get(1)?,
                        name: r.get(2)?,
                        admin: r.get(3)?,
                        created_at: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Whether any admin key exists.
    pub fn has_admin_key(&self) -> Result<bool> {
        let conn = self.conn();
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM api_keys WHERE admin = 1", [], |r| {
            r.get(0)
        })?;
        Ok(n > 0)
    }
}
