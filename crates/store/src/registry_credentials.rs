//! Registry credentials per tenant and registry host (`dwell registry
//! login`). The password is stored only sealed (the control plane seals it
//! with the daemon key); the user name is shown in listings.

use serde::{Deserialize, Serialize};

use crate::db::{Conn, Row};
use crate::{args, Result, Store};

/// One tenant's login to one registry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegistryCredential {
    pub tenant: String,
    /// Registry host as normalized references name it (`docker.io`,
    /// `registry.local:5000`).
    pub registry: String,
    pub username: String,
    /// The sealed secret (never shown).
    pub sealed: String,
    pub created_at: i64,
}

fn from_row(r: &Row) -> Result<RegistryCredential> {
    Ok(RegistryCredential {
        tenant: r.get(0)?,
        registry: r.get(1)?,
        username: r.get(2)?,
        sealed: r.get(3)?,
        created_at: r.get(4)?,
    })
}

const COLUMNS: &str = "tenant, registry, username, sealed, created_at";

impl Store {
    /// Keeps (or replaces) a tenant's login to a registry.
    pub fn put_registry_credential(&self, c: &RegistryCredential) -> Result<()> {
        self.db()?.execute(
            "INSERT INTO registry_credentials (tenant, registry, username, sealed, created_at)
             VALUES (?1,?2,?3,?4,?5)
             ON CONFLICT (tenant, registry) DO UPDATE SET
               username = excluded.username, sealed = excluded.sealed,
               created_at = excluded.created_at",
            args![c.tenant, c.registry, c.username, c.sealed, self.now()],
        )?;
        Ok(())
    }

    /// A tenant's login to `registry`, if any.
    pub fn get_registry_credential(
        &self,
        tenant: &str,
        registry: &str,
    ) -> Result<Option<RegistryCredential>> {
        self.db()?
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM registry_credentials WHERE tenant = ?1 AND registry = ?2"
                ),
                args![tenant, registry],
            )?
            .map(|r| from_row(&r))
            .transpose()
    }

    /// A tenant's logins, by registry.
    pub fn list_registry_credentials(&self, tenant: &str) -> Result<Vec<RegistryCredential>> {
        self.db()?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM registry_credentials WHERE tenant = ?1 ORDER BY registry"
                ),
                args![tenant],
            )?
            .iter()
            .map(from_row)
            .collect()
    }

    /// Forgets a tenant's login to `registry`; false when there was none.
    pub fn delete_registry_credential(&self, tenant: &str, registry: &str) -> Result<bool> {
        let n = self.db()?.execute(
            "DELETE FROM registry_credentials WHERE tenant = ?1 AND registry = ?2",
            args![tenant, registry],
        )?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use super::*;

    fn cred(tenant: &str, registry: &str, username: &str, sealed: &str) -> RegistryCredential {
        RegistryCredential {
            tenant: tenant.into(),
            registry: registry.into(),
            username: username.into(),
            sealed: sealed.into(),
            created_at: 0,
        }
    }

    #[test]
    fn put_replaces_get_list_delete() {
        for s in crate::testing::stores() {
            let e = s.engine();
            let clock = Arc::new(AtomicI64::new(10));
            let c = clock.clone();
            let s = s.with_clock(move || c.load(Ordering::SeqCst));
            s.put_registry_credential(&cred("a", "registry.local:5000", "u1", "s1"))
                .unwrap();
            s.put_registry_credential(&cred("a", "docker.io", "u2", "s2"))
                .unwrap();
            s.put_registry_credential(&cred("b", "docker.io", "u3", "s3"))
                .unwrap();
            // A second login to the same registry replaces the first.
            clock.store(20, Ordering::SeqCst);
            s.put_registry_credential(&cred("a", "docker.io", "u4", "s4"))
                .unwrap();
            let got = s.get_registry_credential("a", "docker.io").unwrap();
            assert_eq!(
                got,
                Some(RegistryCredential {
                    created_at: 20,
                    ..cred("a", "docker.io", "u4", "s4")
                }),
                "{e}"
            );
            assert!(s.get_registry_credential("a", "quay.io").unwrap().is_none());
            let list = s.list_registry_credentials("a").unwrap();
            let regs: Vec<_> = list.iter().map(|c| c.registry.as_str()).collect();
            assert_eq!(
                regs,
                ["docker.io", "registry.local:5000"],
                "{e}: by registry"
            );
            assert_eq!(list[1].created_at, 10, "{e}: the other login kept");
            assert_eq!(
                s.list_registry_credentials("b").unwrap()[0].username,
                "u3",
                "{e}: tenants apart"
            );
            assert!(s.list_registry_credentials("c").unwrap().is_empty());

            assert!(
                s.delete_registry_credential("a", "docker.io").unwrap(),
                "{e}"
            );
            assert!(
                !s.delete_registry_credential("a", "docker.io").unwrap(),
                "{e}"
            );
            assert!(s
                .get_registry_credential("a", "docker.io")
                .unwrap()
                .is_none());
            assert!(s
                .get_registry_credential("b", "docker.io")
                .unwrap()
                .is_some());
        }
    }
}
