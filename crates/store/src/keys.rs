//! API keys. Only a hash of each key is stored; the key itself is shown
//! once, when it is made. A revoked key keeps its row (with `revoked_at`)
//! so that it is refused with a message that says so.

use serde::{Deserialize, Serialize};

use crate::db::{Conn, Row};
use crate::{args, Result, Store};

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

fn key_from_row(r: &Row) -> Result<KeyRecord> {
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
        self.db()?
            .query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = ?1"),
                args![hash],
            )?
            .map(|r| key_from_row(&r))
            .transpose()
    }

    /// The key `id`, revoked or not.
    pub fn key_record_by_id(&self, id: &str) -> Result<Option<KeyRecord>> {
        self.db()?
            .query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
                args![id],
            )?
            .map(|r| key_from_row(&r))
            .transpose()
    }

    /// `tenant`'s keys, oldest first.
    pub fn list_keys(&self, tenant: &str) -> Result<Vec<KeyRecord>> {
        self.db()?
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant = ?1 ORDER BY created_at, id"
                ),
                args![tenant],
            )?
            .iter()
            .map(key_from_row)
            .collect()
    }

    /// Revokes `tenant`'s key `id`; `None` when it has no such key. Revoking
    /// a revoked key keeps its first revocation time.
    pub fn revoke_key(&self, tenant: &str, id: &str) -> Result<Option<KeyRecord>> {
        let now = self.now();
        let mut db = self.db()?;
        db.execute(
            "UPDATE api_keys SET revoked_at = ?3 WHERE tenant = ?1 AND id = ?2 AND revoked_at IS NULL",
            args![tenant, id, now],
        )?;
        db.query_opt(
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant = ?1 AND id = ?2"),
            args![tenant, id],
        )?
        .map(|r| key_from_row(&r))
        .transpose()
    }

    /// Records a use of `k` now, unless one was recorded within
    /// [`LAST_USED_GRAIN_MS`].
    pub fn touch_key(&self, k: &KeyRecord) -> Result<()> {
        let now = self.now();
        if k.last_used_at.is_some_and(|t| now - t < LAST_USED_GRAIN_MS) {
            return Ok(());
        }
        self.db()?.execute(
            "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
            args![k.key.id, now],
        )?;
        Ok(())
    }

    /// Store a key by the hash of its secret.
    pub fn insert_key(&self, key: &ApiKey, hash: &str) -> Result<()> {
        self.db()?.execute(
            "INSERT INTO api_keys (id, hash, tenant, name, admin, created_at) VALUES (?1,?2,?3,?4,?5,?6)",
            args![key.id, hash, key.tenant, key.name, key.admin, self.now()],
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
        let n: i64 = self
            .db()?
            .query_one(
                "SELECT COUNT(*) FROM api_keys WHERE admin = 1 AND revoked_at IS NULL",
                args![],
            )?
            .get(0)?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::Error;

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
        for s in crate::testing::stores() {
            let e = s.engine();
            s.insert_key(&key("key-a", "acme"), "ha").unwrap();
            s.insert_key(&key("key-b", "acme"), "hb").unwrap();
            s.insert_key(&key("key-c", "other"), "hc").unwrap();
            assert_eq!(s.list_keys("acme").unwrap().len(), 2, "{e}");
            // Another tenant's key id is not found under this tenant.
            assert!(s.revoke_key("acme", "key-c").unwrap().is_none(), "{e}");
            assert!(s.key_by_hash("hc").unwrap().is_some(), "{e}");
            let r = s.revoke_key("acme", "key-a").unwrap().unwrap();
            let at = r.revoked_at.expect("revoked");
            assert!(s.key_by_hash("ha").unwrap().is_none(), "{e}");
            assert_eq!(
                s.key_record_by_hash("ha").unwrap().unwrap().revoked_at,
                Some(at),
                "{e}"
            );
            assert!(s.key_by_hash("hb").unwrap().is_some(), "{e}");
            assert!(s.key_by_hash("nope").unwrap().is_none(), "{e}");
            assert_eq!(
                s.revoke_key("acme", "key-a").unwrap().unwrap().revoked_at,
                Some(at),
                "{e}"
            );
            let b = s.key_record_by_hash("hb").unwrap().unwrap();
            assert_eq!(b.last_used_at, None, "{e}");
            s.touch_key(&b).unwrap();
            assert!(
                s.key_record_by_hash("hb")
                    .unwrap()
                    .unwrap()
                    .last_used_at
                    .is_some(),
                "{e}"
            );
        }
    }

    #[test]
    fn keys_round_trip_list_oldest_first_and_refuse_a_hash_twice() {
        for s in crate::testing::stores() {
            let t = Arc::new(AtomicI64::new(10));
            let clock = t.clone();
            let s = s.with_clock(move || clock.load(Ordering::SeqCst));
            let e = s.engine();
            let admin = ApiKey {
                admin: true,
                ..key("key-z", "acme")
            };
            s.insert_key(&admin, "hz").unwrap();
            t.store(20, Ordering::SeqCst);
            s.insert_key(&key("key-a", "acme"), "ha").unwrap();
            s.insert_key(&key("key-b", "acme"), "hb").unwrap();
            let listed: Vec<(String, i64, bool)> = s
                .list_keys("acme")
                .unwrap()
                .into_iter()
                .map(|k| (k.key.id, k.key.created_at, k.key.admin))
                .collect();
            assert_eq!(
                listed,
                [
                    ("key-z".to_string(), 10, true),
                    ("key-a".to_string(), 20, false),
                    ("key-b".to_string(), 20, false)
                ],
                "{e}"
            );
            assert_eq!(
                s.key_by_hash("hz").unwrap(),
                Some(ApiKey {
                    created_at: 10,
                    ..admin
                }),
                "{e}"
            );
            // The same secret's hash twice (or the same id) is refused.
            let err = s.insert_key(&key("key-y", "other"), "ha").unwrap_err();
            assert!(matches!(err, Error::Constraint(_)), "{e}: {err}");
            let err = s.insert_key(&key("key-a", "other"), "hnew").unwrap_err();
            assert!(matches!(err, Error::Constraint(_)), "{e}: {err}");
            assert!(s.list_keys("other").unwrap().is_empty(), "{e}");
        }
    }

    #[test]
    fn an_admin_key_counts_until_it_is_revoked() {
        for s in crate::testing::stores() {
            let e = s.engine();
            assert!(!s.has_admin_key().unwrap(), "{e}");
            s.insert_key(&key("key-a", "acme"), "ha").unwrap();
            assert!(!s.has_admin_key().unwrap(), "{e}: not an admin key");
            let admin = ApiKey {
                admin: true,
                ..key("key-root", "admin")
            };
            s.insert_key(&admin, "hr").unwrap();
            assert!(s.has_admin_key().unwrap(), "{e}");
            s.revoke_key("admin", "key-root").unwrap().unwrap();
            assert!(!s.has_admin_key().unwrap(), "{e}: revoked");
        }
    }

    #[test]
    fn a_use_is_written_at_most_once_a_grain() {
        for s in crate::testing::stores() {
            let t = Arc::new(AtomicI64::new(1_000_000));
            let clock = t.clone();
            let s = s.with_clock(move || clock.load(Ordering::SeqCst));
            let e = s.engine();
            s.insert_key(&key("key-a", "acme"), "ha").unwrap();
            let used = |s: &Store| s.key_record_by_hash("ha").unwrap().unwrap();
            s.touch_key(&used(&s)).unwrap();
            assert_eq!(used(&s).last_used_at, Some(1_000_000), "{e}");
            t.store(1_000_000 + LAST_USED_GRAIN_MS - 1, Ordering::SeqCst);
            s.touch_key(&used(&s)).unwrap();
            assert_eq!(
                used(&s).last_used_at,
                Some(1_000_000),
                "{e}: within the grain"
            );
            t.store(1_000_000 + LAST_USED_GRAIN_MS, Ordering::SeqCst);
            s.touch_key(&used(&s)).unwrap();
            assert_eq!(
                used(&s).last_used_at,
                Some(1_000_000 + LAST_USED_GRAIN_MS),
                "{e}"
            );
        }
    }
}
