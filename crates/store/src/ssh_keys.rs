//! SSH public keys registered per tenant: the SSH gateway logs a client in
//! when the key it proves is one of the tenant's that owns the sandbox named
//! as the user. Only public keys are stored (OpenSSH text), with their
//! SHA-256 fingerprint, by which the gateway looks them up.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::{Result, Store};

/// One registered key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SshKey {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// `ALGORITHM BASE64 [COMMENT]`, as `ssh-keygen` writes it.
    pub public_key: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub created_at: i64,
    /// Unix ms of the last login with it (to within [`SSH_LAST_USED_GRAIN_MS`]).
    pub last_used_at: Option<i64>,
}

/// `last_used_at` is written at most this often per key.
pub const SSH_LAST_USED_GRAIN_MS: i64 = 60_000;

const COLUMNS: &str = "id, tenant, name, public_key, fingerprint, created_at, last_used_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SshKey> {
    Ok(SshKey {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        public_key: r.get(3)?,
        fingerprint: r.get(4)?,
        created_at: r.get(5)?,
        last_used_at: r.get(6)?,
    })
}

impl Store {
    /// Keeps `key` (its `created_at` is set to now); false when the tenant
    /// already has a key with that fingerprint or that name.
    pub fn insert_ssh_key(&self, key: &SshKey) -> Result<bool> {
        let conn = self.conn();
        let n = conn.execute(
            "INSERT OR IGNORE INTO ssh_keys (id, tenant, name, public_key, fingerprint, created_at)
             VALUES (?1,?2,?3,?4,?5,?6)",
            params![
                key.id,
                key.tenant,
                key.name,
                key.public_key,
                key.fingerprint,
                self.now()
            ],
        )?;
        Ok(n == 1)
    }

    /// `tenant`'s keys, oldest first.
    pub fn list_ssh_keys(&self, tenant: &str) -> Result<Vec<SshKey>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM ssh_keys WHERE tenant = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([tenant], from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every tenant's key with this fingerprint (one key may be registered
    /// by several tenants).
    pub fn ssh_keys_by_fingerprint(&self, fingerprint: &str) -> Result<Vec<SshKey>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM ssh_keys WHERE fingerprint = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([fingerprint], from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The key `id`, of whichever tenant (the SSH gateway checks that a
    /// live connection's key is still registered).
    pub fn ssh_key(&self, id: &str) -> Result<Option<SshKey>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM ssh_keys WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?)
    }

    /// Removes `tenant`'s key whose id or name is `id_or_name`; returns it,
    /// `None` when the tenant has no such key.
    pub fn delete_ssh_key(&self, tenant: &str, id_or_name: &str) -> Result<Option<SshKey>> {
        let conn = self.conn();
        let found = conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM ssh_keys WHERE tenant = ?1 AND (id = ?2 OR name = ?2)
                     ORDER BY id = ?2 DESC LIMIT 1"
                ),
                params![tenant, id_or_name],
                from_row,
            )
            .optional()?;
        if let Some(k) = &found {
            conn.execute("DELETE FROM ssh_keys WHERE id = ?1", [&k.id])?;
        }
        Ok(found)
    }

    /// Records a login with `k` now, unless one was recorded within
    /// [`SSH_LAST_USED_GRAIN_MS`].
    pub fn touch_ssh_key(&self, k: &SshKey) -> Result<()> {
        let now = self.now();
        if k.last_used_at
            .is_some_and(|t| now - t < SSH_LAST_USED_GRAIN_MS)
        {
            return Ok(());
        }
        let conn = self.conn();
        conn.execute(
            "UPDATE ssh_keys SET last_used_at = ?2 WHERE id = ?1",
            params![k.id, now],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, tenant: &str, name: &str, fp: &str) -> SshKey {
        SshKey {
            id: id.into(),
            tenant: tenant.into(),
            name: name.into(),
            public_key: format!("ssh-ed25519 AAAA {name}"),
            fingerprint: fp.into(),
            created_at: 0,
            last_used_at: None,
        }
    }

    #[test]
    fn insert_list_lookup_delete() {
        let s = Store::in_memory().unwrap();
        assert!(s
            .insert_ssh_key(&key("k1", "acme", "laptop", "SHA256:a"))
            .unwrap());
        // The same key again (other name) or the same name again: refused.
        assert!(!s
            .insert_ssh_key(&key("k2", "acme", "other", "SHA256:a"))
            .unwrap());
        assert!(!s
            .insert_ssh_key(&key("k3", "acme", "laptop", "SHA256:b"))
            .unwrap());
        // Another tenant may register the same key.
        assert!(s
            .insert_ssh_key(&key("k4", "other", "laptop", "SHA256:a"))
            .unwrap());
        assert_eq!(s.list_ssh_keys("acme").unwrap().len(), 1);
        assert_eq!(s.ssh_keys_by_fingerprint("SHA256:a").unwrap().len(), 2);
        let k = s.list_ssh_keys("acme").unwrap().remove(0);
        s.touch_ssh_key(&k).unwrap();
        assert!(s.list_ssh_keys("acme").unwrap()[0].last_used_at.is_some());
        // Another tenant's key is not found; by name or id.
        assert!(s.delete_ssh_key("nobody", "k1").unwrap().is_none());
        assert_eq!(s.ssh_key("k1").unwrap().unwrap().tenant, "acme");
        assert_eq!(
            s.delete_ssh_key("acme", "laptop").unwrap().unwrap().id,
            "k1"
        );
        assert!(s.delete_ssh_key("acme", "k1").unwrap().is_none());
        assert!(s.ssh_key("k1").unwrap().is_none());
        assert_eq!(s.ssh_keys_by_fingerprint("SHA256:a").unwrap().len(), 1);
    }
}
