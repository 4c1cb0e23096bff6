//! Registry credentials per tenant and registry host (`dwell registry
//! login`). The password is stored only sealed (the control plane seals it
//! with the daemon key); the user name is shown in listings.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::{Result, Store};

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

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RegistryCredential> {
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
        self.conn().execute(
            "INSERT INTO registry_credentials (tenant, registry, username, sealed, created_at)
             VALUES (?1,?2,?3,?4,?5)
             ON CONFLICT (tenant, registry) DO UPDATE SET
               username = excluded.username, sealed = excluded.sealed,
               created_at = excluded.created_at",
            params![c.tenant, c.registry, c.username, c.sealed, self.now()],
        )?;
        Ok(())
    }

    /// A tenant's login to `registry`, if any.
    pub fn get_registry_credential(
        &self,
        tenant: &str,
        registry: &str,
    ) -> Result<Option<RegistryCredential>> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM registry_credentials WHERE tenant = ?1 AND registry = ?2"
                ),
                params![tenant, registry],
                from_row,
            )
            .optional()?)
    }

    /// A tenant's logins, by registry.
    pub fn list_registry_credentials(&self, tenant: &str) -> Result<Vec<RegistryCredential>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM registry_credentials WHERE tenant = ?1 ORDER BY registry"
        ))?;
        let rows = stmt.query_map([tenant], from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Forgets a tenant's login to `registry`; false when there was none.
    pub fn delete_registry_credential(&self, tenant: &str, registry: &str) -> Result<bool> {
        let n = self.conn().execute(
            "DELETE FROM registry_credentials WHERE tenant = ?1 AND registry = ?2",
            params![tenant, registry],
        )?;
        Ok(n == 1)
    }
}
