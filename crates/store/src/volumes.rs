//! Named volumes: a tenant's volumes that live on their own, apart from
//! any sandbox (`dwell volume create`). A name is unique within its
//! tenant. Which sandboxes use a volume is recorded in their specs, not
//! here; the data itself is a volume of the daemon's named-volume manager
//! with the record's id.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Store};

/// One named volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamedVolume {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// The size limit in bytes.
    pub size_bytes: u64,
    /// Unix milliseconds.
    pub created_at: i64,
}

const COLUMNS: &str = "id, tenant, name, size_bytes, created_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NamedVolume> {
    Ok(NamedVolume {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        size_bytes: r.get::<_, i64>(3)? as u64,
        created_at: r.get(4)?,
    })
}

impl Store {
    /// Record a new volume; a name its tenant already uses is refused.
    pub fn insert_volume(&self, v: &NamedVolume) -> Result<()> {
        let conn = self.conn();
        let r = conn.execute(
            &format!("INSERT INTO volumes ({COLUMNS}, metered_at) VALUES (?1,?2,?3,?4,?5,?5)"),
            params![v.id, v.tenant, v.name, v.size_bytes as i64, v.created_at],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::VolumeNameTaken(v.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The volume of `tenant` with this name or id.
    pub fn find_volume(&self, tenant: &str, name_or_id: &str) -> Result<Option<NamedVolume>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM volumes WHERE tenant = ?1 AND (name = ?2 OR id = ?2) \
                     ORDER BY name = ?2 DESC LIMIT 1"
                ),
                params![tenant, name_or_id],
                row,
            )
            .optional()?)
    }

    /// The volumes of `tenant` (of every tenant with None), by name.
    pub fn list_volumes(&self, tenant: Option<&str>) -> Result<Vec<NamedVolume>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM volumes WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, name"
        ))?;
        let rows = stmt.query_map(params![tenant], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Record a volume's new size limit.
    pub fn set_volume_size(&self, id: &str, size_bytes: u64) -> Result<()> {
        self.conn().execute(
            "UPDATE volumes SET size_bytes = ?2 WHERE id = ?1",
            params![id, size_bytes as i64],
        )?;
        Ok(())
    }

    /// Forget a volume; false when there was none.
    pub fn delete_volume(&self, id: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute("DELETE FROM volumes WHERE id = ?1", params![id])?;
        Ok(n > 0)
    }

    /// When a volume was last metered.
    pub fn volume_metered_at(&self, id: &str) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT metered_at FROM volumes WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Add a volume's storage usage since its last mark to the usage table
    /// (as the row of the volume's id) and move its mark to `at`.
    pub fn add_volume_usage(
        &self,
        id: &str,
        tenant: &str,
        at: i64,
        storage_gib_seconds: f64,
    ) -> Result<()> {
        let hour = at.div_euclid(3_600_000) * 3_600_000;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO usage (sandbox_id, tenant, hour, vcpu_seconds, memory_gib_seconds, cpu_used_seconds, memory_used_gib_seconds, storage_gib_seconds)
             VALUES (?1, ?2, ?3, 0, 0, 0, 0, ?4)
             ON CONFLICT(sandbox_id, hour) DO UPDATE SET
               storage_gib_seconds = storage_gib_seconds + excluded.storage_gib_seconds",
            params![id, tenant, hour, storage_gib_seconds],
        )?;
        tx.execute(
            "UPDATE volumes SET metered_at = ?2 WHERE id = ?1",
            params![id, at],
        )?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(id: &str, tenant: &str, name: &str) -> NamedVolume {
        NamedVolume {
            id: id.into(),
            tenant: tenant.into(),
            name: name.into(),
            size_bytes: 1 << 30,
            created_at: 1,
        }
    }

    #[test]
    fn names_are_unique_per_tenant_and_tenants_are_apart() {
        let s = Store::in_memory().unwrap();
        s.insert_volume(&vol("v1", "a", "data")).unwrap();
        s.insert_volume(&vol("v2", "b", "data")).unwrap();
        assert!(matches!(
            s.insert_volume(&vol("v3", "a", "data")),
            Err(Error::VolumeNameTaken(_))
        ));
        assert_eq!(s.find_volume("a", "data").unwrap().unwrap().id, "v1");
        assert!(s.find_volume("a", "v2").unwrap().is_none());
        assert_eq!(s.list_volumes(Some("b")).unwrap().len(), 1);
        s.set_volume_size("v1", 2 << 30).unwrap();
        assert_eq!(
            s.find_volume("a", "v1").unwrap().unwrap().size_bytes,
            2 << 30
        );
        s.add_volume_usage("v1", "a", 10_000, 1.5).unwrap();
        assert_eq!(s.volume_metered_at("v1").unwrap(), Some(10_000));
        assert!(s.delete_volume("v1").unwrap());
        assert!(!s.delete_volume("v1").unwrap());
    }
}
