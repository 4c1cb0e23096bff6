//! API keys. Only a hash of each key is stored; the key itself is shown
//! once, when it is made. A revoked key keeps its row (with `revoked_at`)
//! so that it is refused with a message that says so.

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

/// A key as listed: never its secret or hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    #[serde(flatten)]
    pub key: ApiKey,
    /// Unix ms of the revocation; `None` while the key is valid.
    pub revoked_at: Option<i64>,
    /// Unix ms of the last request made with it (to within [`LAST_USED_GRAIN_MS`]).
    pub last_used_at: Option<i64>,
}

/// `last_used_at` is written at most this often per key, so that using a
/// key does not mean a database write on every request.
pub const LAST_USED_GRAIN_MS: i64 = 60_000;

const KEY_COLUMNS: &str = "id, tenant, name, admin, created_at, revoked_at, last_used_at";

fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        key: ApiKey {
            id: r.get(0)?,
            tenant: r.get(1)?,
            name: r.get(2)?,
            admin: r.get(3)?,
            created_at: r.get(4)?,
        },
        revoked_at: r.get(5)?,
        last_used_at: r.get(6)?,
    })
}

impl Store {
    /// The key whose secret hashes to `hash`, revoked or not.
    pub fn key_record_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = ?1"),
                [hash],
                key_from_row,
            )
            .optional()?)
    }

    /// `tenant`'s keys, oldest first.
    pub fn list_keys(&self, tenant: &str) -> Result<Vec<KeyRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([tenant], key_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Revokes `tenant`'s key `id`; `None` when it has no such key. Revoking
    /// a revoked key keeps its first revocation time.
    pub fn revoke_key(&self, tenant: &str, id: &str) -> Result<Option<KeyRecord>> {
        let now = self.now();
        {
            let conn = self.conn();
            conn.execute(
                "UPDATE api_keys SET revoked_at = ?3 WHERE tenant = ?1 AND id = ?2 AND revoked_at IS NULL",
                params![tenant, id, now],
            )?;
        }
        Ok(self.list_keys(tenant)?.into_iter().find(|k| k.key.id == id))
    }

    /// Records a use of `k` now, unless one was recorded within
    /// [`LAST_USED_GRAIN_MS`].
    pub fn touch_key(&self, k: &KeyRecord) -> Result<()> {
        let now = self.now();
        if k.last_used_at.is_some_and(|t| now - t < LAST_USED_GRAIN_MS) {
            return Ok(());
        }
        let conn = self.conn();
        conn.execute(
            "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
            params![k.key.id, now],
        )?;
        Ok(())
    }

    /// Store a key by the hash of its secret.
    pub fn insert_key(&self, key: &ApiKey, hash: &str) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO api_keys (id, hash, tenant, name, admin, created_at) VALUES (?1,?2,?3,?4,?5,?6)",
            params![key.id, hash, key.tenant, key.name, key.admin, self.now()],
        )?;
        Ok(())
    }

    /// The valid (not revoked) key whose secret hashes to `hash`.
    pub fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        Ok(self
            .key_record_by_hash(hash)?
            .filter(|k| k.revoked_at.is_none())
            .map(|k| k.key))
    }

    /// Whether any valid admin key exists.
    pub fn has_admin_key(&self) -> Result<bool> {
        let conn = self.conn();
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM api_keys WHERE admin = 1 AND revoked_at IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, tenant: &str) -> ApiKey {
        ApiKey {
            id: id.into(),
            tenant: tenant.into(),
            name: "api".into(),
            admin: false,
            created_at: 0,
        }
    }

    #[test]
    fn revoked_keys_stay_listed_but_stop_resolving() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        s.insert_key(&key("key-a", "acme"), "ha").unwrap();
        s.insert_key(&key("key-b", "acme"), "hb").unwrap();
        s.insert_key(&key("key-c", "other"), "hc").unwrap();
        assert_eq!(s.list_keys("acme").unwrap().len(), 2);
        // Another tenant's key id is not found under this tenant.
        assert!(s.revoke_key("acme", "key-c").unwrap().is_none());
        let r = s.revoke_key("acme", "key-a").unwrap().unwrap();
        let at = r.revoked_at.expect("revoked");
        assert!(s.key_by_hash("ha").unwrap().is_none());
        assert!(s
            .key_record_by_hash("ha")
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some());
        assert!(s.key_by_hash("hb").unwrap().is_some());
        assert_eq!(
            s.revoke_key("acme", "key-a").unwrap().unwrap().revoked_at,
            Some(at)
        );
        let b = s.key_record_by_hash("hb").unwrap().unwrap();
        assert_eq!(b.last_used_at, None);
        s.touch_key(&b).unwrap();
        assert!(s
            .key_record_by_hash("hb")
            .unwrap()
            .unwrap()
            .last_used_at
            .is_some());
    }
}
