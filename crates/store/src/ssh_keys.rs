//! SSH public keys registered per tenant: the SSH gateway logs a client in
//! when the key it proves is one of the tenant's that owns the sandbox named
//! as the user. Only public keys are stored (OpenSSH text), with their
//! SHA-256 fingerprint, by which the gateway looks them up.

use serde::{Deserialize, Serialize};

use crate::db::{Conn, Row};
use crate::{args, Result, Store};

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

fn from_row(r: &Row) -> Result<SshKey> {
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
        let n = self.db()?.execute(
            "INSERT INTO ssh_keys (id, tenant, name, public_key, fingerprint, created_at) \
             VALUES (?1,?2,?3,?4,?5,?6) ON CONFLICT DO NOTHING",
            args![
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
        self.db()?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM ssh_keys WHERE tenant = ?1 ORDER BY created_at, id"
                ),
                args![tenant],
            )?
            .iter()
            .map(from_row)
            .collect()
    }

    /// Every tenant's key with this fingerprint (one key may be registered
    /// by several tenants).
    pub fn ssh_keys_by_fingerprint(&self, fingerprint: &str) -> Result<Vec<SshKey>> {
        self.db()?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM ssh_keys WHERE fingerprint = ?1 ORDER BY created_at, id"
                ),
                args![fingerprint],
            )?
            .iter()
            .map(from_row)
            .collect()
    }

    /// The key `id`, of whichever tenant (the SSH gateway checks that a
    /// live connection's key is still registered).
    pub fn ssh_key(&self, id: &str) -> Result<Option<SshKey>> {
        self.db()?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM ssh_keys WHERE id = ?1"),
                args![id],
            )?
            .map(|r| from_row(&r))
            .transpose()
    }

    /// Removes `tenant`'s key whose id or name is `id_or_name`; returns it,
    /// `None` when the tenant has no such key.
    pub fn delete_ssh_key(&self, tenant: &str, id_or_name: &str) -> Result<Option<SshKey>> {
        let mut tx = self.tx()?;
        let found = tx
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM ssh_keys WHERE tenant = ?1 AND (id = ?2 OR name = ?2) \
                     ORDER BY CASE WHEN id = ?2 THEN 0 ELSE 1 END LIMIT 1"
                ),
                args![tenant, id_or_name],
            )?
            .map(|r| from_row(&r))
            .transpose()?;
        let Some(k) = found else {
            return Ok(None);
        };
        // Removed meanwhile (another node): not this call's to return.
        if tx.execute("DELETE FROM ssh_keys WHERE id = ?1", args![k.id])? == 0 {
            return Ok(None);
        }
        tx.commit()?;
        Ok(Some(k))
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
        self.db()?.execute(
            "UPDATE ssh_keys SET last_used_at = ?2 WHERE id = ?1",
            args![k.id, now],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

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
        for s in crate::testing::stores() {
            let e = s.engine();
            assert!(
                s.insert_ssh_key(&key("k1", "acme", "laptop", "SHA256:a"))
                    .unwrap(),
                "{e}"
            );
            // The same key again (other name) or the same name again: refused.
            assert!(
                !s.insert_ssh_key(&key("k2", "acme", "other", "SHA256:a"))
                    .unwrap(),
                "{e}"
            );
            assert!(
                !s.insert_ssh_key(&key("k3", "acme", "laptop", "SHA256:b"))
                    .unwrap(),
                "{e}"
            );
            // Another tenant may register the same key.
            assert!(
                s.insert_ssh_key(&key("k4", "other", "laptop", "SHA256:a"))
                    .unwrap(),
                "{e}"
            );
            assert_eq!(s.list_ssh_keys("acme").unwrap().len(), 1, "{e}");
            assert_eq!(
                s.ssh_keys_by_fingerprint("SHA256:a").unwrap().len(),
                2,
                "{e}"
            );
            let k = s.list_ssh_keys("acme").unwrap().remove(0);
            s.touch_ssh_key(&k).unwrap();
            assert!(
                s.list_ssh_keys("acme").unwrap()[0].last_used_at.is_some(),
                "{e}"
            );
            // Another tenant's key is not found; by name or id.
            assert!(s.delete_ssh_key("nobody", "k1").unwrap().is_none(), "{e}");
            assert_eq!(s.ssh_key("k1").unwrap().unwrap().tenant, "acme", "{e}");
            assert_eq!(
                s.delete_ssh_key("acme", "laptop").unwrap().unwrap().id,
                "k1",
                "{e}"
            );
            assert!(s.delete_ssh_key("acme", "k1").unwrap().is_none(), "{e}");
            assert!(s.ssh_key("k1").unwrap().is_none(), "{e}");
            assert_eq!(
                s.ssh_keys_by_fingerprint("SHA256:a").unwrap().len(),
                1,
                "{e}"
            );
        }
    }

    #[test]
    fn an_id_wins_over_a_name_and_keys_list_oldest_first() {
        for s in crate::testing::stores() {
            let t = Arc::new(AtomicI64::new(50));
            let clock = t.clone();
            let s = s.with_clock(move || clock.load(Ordering::SeqCst));
            let e = s.engine();
            // "k2" is one key's id and another's name.
            assert!(s
                .insert_ssh_key(&key("k9", "acme", "k2", "SHA256:a"))
                .unwrap());
            t.store(40, Ordering::SeqCst);
            assert!(s
                .insert_ssh_key(&key("k2", "acme", "desk", "SHA256:b"))
                .unwrap());
            assert!(s
                .insert_ssh_key(&key("k1", "acme", "box", "SHA256:c"))
                .unwrap());
            // The same id in another tenant: refused too (ids are global).
            assert!(!s
                .insert_ssh_key(&key("k1", "other", "box", "SHA256:c"))
                .unwrap());
            let ids = |s: &Store| -> Vec<(String, i64)> {
                s.list_ssh_keys("acme")
                    .unwrap()
                    .into_iter()
                    .map(|k| (k.id, k.created_at))
                    .collect()
            };
            assert_eq!(
                ids(&s),
                [("k1".into(), 40), ("k2".into(), 40), ("k9".into(), 50)],
                "{e}"
            );
            let gone = s.delete_ssh_key("acme", "k2").unwrap().unwrap();
            assert_eq!(
                (gone.id.as_str(), gone.name.as_str()),
                ("k2", "desk"),
                "{e}"
            );
            assert_eq!(
                s.delete_ssh_key("acme", "k2").unwrap().unwrap().id,
                "k9",
                "{e}: then the name"
            );
            assert_eq!(ids(&s), [("k1".into(), 40)], "{e}");
            assert!(s.list_ssh_keys("other").unwrap().is_empty(), "{e}");
        }
    }

    #[test]
    fn a_login_is_written_at_most_once_a_grain() {
        for s in crate::testing::stores() {
            let t = Arc::new(AtomicI64::new(1_000_000));
            let clock = t.clone();
            let s = s.with_clock(move || clock.load(Ordering::SeqCst));
            let e = s.engine();
            s.insert_ssh_key(&key("k1", "acme", "laptop", "SHA256:a"))
                .unwrap();
            let used = |s: &Store| s.ssh_key("k1").unwrap().unwrap();
            assert_eq!(used(&s).last_used_at, None, "{e}");
            s.touch_ssh_key(&used(&s)).unwrap();
            assert_eq!(used(&s).last_used_at, Some(1_000_000), "{e}");
            t.store(1_000_000 + SSH_LAST_USED_GRAIN_MS - 1, Ordering::SeqCst);
            s.touch_ssh_key(&used(&s)).unwrap();
            assert_eq!(
                used(&s).last_used_at,
                Some(1_000_000),
                "{e}: within the grain"
            );
            t.store(1_000_000 + SSH_LAST_USED_GRAIN_MS, Ordering::SeqCst);
            s.touch_ssh_key(&used(&s)).unwrap();
            assert_eq!(
                used(&s).last_used_at,
                Some(1_000_000 + SSH_LAST_USED_GRAIN_MS),
                "{e}"
            );
        }
    }
}
