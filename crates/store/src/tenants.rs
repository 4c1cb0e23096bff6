//! Tenants and their quotas. `None` means unlimited.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Store};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Tenant {
    pub name: String,
    pub max_sandboxes: Option<u64>,
    pub max_vcpus: Option<f64>,
    pub max_memory: Option<u64>,
    pub max_storage: Option<u64>,
    pub created_at: i64,
    /// Default lifecycle policies as JSON (the control plane's format).
    #[serde(default)]
    pub default_policies: Option<serde_json::Value>,
    /// Default egress rules as JSON (the runtime's `EgressRules`).
    #[serde(default)]
    pub default_egress: Option<serde_json::Value>,
}

const COLUMNS: &str =
    "name, max_sandboxes, max_vcpus, max_memory, max_storage, created_at, default_policies, default_egress";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        name: r.get(0)?,
        max_sandboxes: r.get(1)?,
        max_vcpus: r.get(2)?,
        max_memory: r.get(3)?,
        max_storage: r.get(4)?,
        created_at: r.get(5)?,
        default_policies: r
            .get::<_, Option<String>>(6)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        default_egress: r
            .get::<_, Option<String>>(7)?
            .and_then(|s| serde_json::from_str(&s).ok()),
    })
}

impl Store {
    /// Create a tenant; fails if the name is taken.
    pub fn insert_tenant(&self, t: &Tenant) -> Result<()> {
        let conn = self.conn();
        let r = conn.execute(
            "INSERT INTO tenants (name, max_sandboxes, max_vcpus, max_memory, max_storage, created_at, default_policies, default_egress) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
            params![t.name, t.max_sandboxes, t.max_vcpus, t.max_memory, t.max_storage, self.now(), t.default_policies.as_ref().map(|v| v.to_string()), t.default_egress.as_ref().map(|v| v.to_string())],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::Corrupt(format!(
                    "tenant {:?} already exists",
                    t.name
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replace a tenant's limits.
    pub fn update_tenant(&self, t: &Tenant) -> Result<bool> {
        let conn = self.conn();
        let n = conn.execute(
            "UPDATE tenants SET max_sandboxes = ?2, max_vcpus = ?3, max_memory = ?4, max_storage = ?5, default_policies = ?6, default_egress = ?7 WHERE name = ?1",
            params![t.name, t.max_sandboxes, t.max_vcpus, t.max_memory, t.max_storage, t.default_policies.as_ref().map(|v| v.to_string()), t.default_egress.as_ref().map(|v| v.to_string())],
        )?;
        Ok(n > 0)
    }

    pub fn get_tenant(&self, name: &str) -> Result<Option<Tenant>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM tenants WHERE name = ?1"),
                [name],
                from_row,
            )
            .optional()?)
    }

    pub fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM tenants ORDER BY name"))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
