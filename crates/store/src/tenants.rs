//! Tenants and their quotas. `None` means unlimited.

use serde::{Deserialize, Serialize};

use crate::db::{Conn, Row};
use crate::{args, Error, Result, Store};

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

fn from_row(r: &Row) -> Result<Tenant> {
    Ok(Tenant {
        name: r.get(0)?,
        max_sandboxes: r.get(1)?,
        max_vcpus: r.get(2)?,
        max_memory: r.get(3)?,
        max_storage: r.get(4)?,
        created_at: r.get(5)?,
        default_policies: r
            .get::<Option<String>>(6)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        default_egress: r
            .get::<Option<String>>(7)?
            .and_then(|s| serde_json::from_str(&s).ok()),
    })
}

impl Store {
    /// Create a tenant; fails if the name is taken.
    pub fn insert_tenant(&self, t: &Tenant) -> Result<()> {
        let r = self.db()?.execute(
            "INSERT INTO tenants (name, max_sandboxes, max_vcpus, max_memory, max_storage, created_at, default_policies, default_egress) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
            args![t.name, t.max_sandboxes, t.max_vcpus, t.max_memory, t.max_storage, self.now(), t.default_policies.as_ref().map(|v| v.to_string()), t.default_egress.as_ref().map(|v| v.to_string())],
        );
        match r {
            Ok(_) => Ok(()),
            Err(Error::Constraint(_)) => Err(Error::Corrupt(format!(
                "tenant {:?} already exists",
                t.name
            ))),
            Err(e) => Err(e),
        }
    }

    /// Replace a tenant's limits.
    pub fn update_tenant(&self, t: &Tenant) -> Result<bool> {
        let n = self.db()?.execute(
            "UPDATE tenants SET max_sandboxes = ?2, max_vcpus = ?3, max_memory = ?4, max_storage = ?5, default_policies = ?6, default_egress = ?7 WHERE name = ?1",
            args![t.name, t.max_sandboxes, t.max_vcpus, t.max_memory, t.max_storage, t.default_policies.as_ref().map(|v| v.to_string()), t.default_egress.as_ref().map(|v| v.to_string())],
        )?;
        Ok(n > 0)
    }

    pub fn get_tenant(&self, name: &str) -> Result<Option<Tenant>> {
        self.db()?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM tenants WHERE name = ?1"),
                args![name],
            )?
            .map(|r| from_row(&r))
            .transpose()
    }

    pub fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.db()?
            .query(
                &format!("SELECT {COLUMNS} FROM tenants ORDER BY name"),
                args![],
            )?
            .iter()
            .map(from_row)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_round_trip_on_both_engines() {
        for s in crate::testing::stores() {
            let t = Tenant {
                name: "acme".into(),
                max_sandboxes: Some(3),
                max_vcpus: Some(1.5),
                max_memory: Some(u64::MAX),
                default_policies: Some(serde_json::json!({"idle": "5m"})),
                ..Default::default()
            };
            s.insert_tenant(&t).unwrap();
            let e = s.insert_tenant(&t).unwrap_err().to_string();
            assert!(e.contains("already exists"), "{}: {e}", s.engine());
            let got = s.get_tenant("acme").unwrap().unwrap();
            assert_eq!(got.max_vcpus, Some(1.5), "{}", s.engine());
            assert_eq!(got.max_memory, Some(i64::MAX as u64));
            assert_eq!(got.default_policies, t.default_policies);
            assert!(s.get_tenant("nobody").unwrap().is_none());
            let mut t2 = got.clone();
            t2.max_sandboxes = None;
            assert!(s.update_tenant(&t2).unwrap());
            assert_eq!(s.list_tenants().unwrap(), vec![t2]);
        }
    }
}
