//! Named volumes: a tenant's volumes that live on their own, apart from
//! any sandbox (`dwell volume create`). A name is unique within its
//! tenant. Which sandboxes use a volume is recorded in their specs, not
//! here; the data itself is a volume of the daemon's named-volume manager
//! with the record's id.

use serde::{Deserialize, Serialize};

use crate::db::{Conn, Row};
use crate::{args, Error, Result, Store};

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

fn row(r: &Row) -> Result<NamedVolume> {
    Ok(NamedVolume {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        // Stored as the i64 of the same bits: every u64 comes back.
        size_bytes: r.get::<i64>(3)? as u64,
        created_at: r.get(4)?,
    })
}

impl Store {
    /// Record a new volume; a name its tenant already uses is refused.
    pub fn insert_volume(&self, v: &NamedVolume) -> Result<()> {
        let r = self.db()?.execute(
            &format!("INSERT INTO volumes ({COLUMNS}, metered_at) VALUES (?1,?2,?3,?4,?5,?5)"),
            args![v.id, v.tenant, v.name, v.size_bytes as i64, v.created_at],
        );
        match r {
            Ok(_) => Ok(()),
            Err(Error::Constraint(_)) => Err(Error::VolumeNameTaken(v.name.clone())),
            Err(e) => Err(e),
        }
    }

    /// The volume of `tenant` with this name or id.
    pub fn find_volume(&self, tenant: &str, name_or_id: &str) -> Result<Option<NamedVolume>> {
        self.db()?
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM volumes WHERE tenant = ?1 AND (name = ?2 OR id = ?2) \
                     ORDER BY CASE WHEN name = ?2 THEN 0 ELSE 1 END LIMIT 1"
                ),
                args![tenant, name_or_id],
            )?
            .map(|r| row(&r))
            .transpose()
    }

    /// The volumes of `tenant` (of every tenant with None), by name.
    pub fn list_volumes(&self, tenant: Option<&str>) -> Result<Vec<NamedVolume>> {
        self.db()?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM volumes \
                     WHERE CAST(?1 AS TEXT) IS NULL OR tenant = ?1 ORDER BY tenant, name"
                ),
                args![tenant],
            )?
            .iter()
            .map(row)
            .collect()
    }

    /// Record a volume's new size limit.
    pub fn set_volume_size(&self, id: &str, size_bytes: u64) -> Result<()> {
        self.db()?.execute(
            "UPDATE volumes SET size_bytes = ?2 WHERE id = ?1",
            args![id, size_bytes as i64],
        )?;
        Ok(())
    }

    /// Forget a volume; false when there was none.
    pub fn delete_volume(&self, id: &str) -> Result<bool> {
        let n = self
            .db()?
            .execute("DELETE FROM volumes WHERE id = ?1", args![id])?;
        Ok(n > 0)
    }

    /// When a volume was last metered.
    pub fn volume_metered_at(&self, id: &str) -> Result<Option<i64>> {
        Ok(self
            .db()?
            .query_opt("SELECT metered_at FROM volumes WHERE id = ?1", args![id])?
            .map(|r| r.get::<Option<i64>>(0))
            .transpose()?
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
        let mut tx = self.tx()?;
        // The old value qualified by the table's name: PostgreSQL finds a
        // bare column name ambiguous next to `excluded`.
        tx.execute(
            "INSERT INTO usage (sandbox_id, tenant, hour, vcpu_seconds, memory_gib_seconds, cpu_used_seconds, memory_used_gib_seconds, storage_gib_seconds)
             VALUES (?1, ?2, ?3, 0, 0, 0, 0, ?4)
             ON CONFLICT (sandbox_id, hour) DO UPDATE SET
               storage_gib_seconds = usage.storage_gib_seconds + excluded.storage_gib_seconds",
            args![id, tenant, hour, storage_gib_seconds],
        )?;
        tx.execute(
            "UPDATE volumes SET metered_at = ?2 WHERE id = ?1",
            args![id, at],
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

    /// The usage rows of `id`: (hour, storage GiB-seconds), by hour.
    fn storage_usage(s: &Store, id: &str) -> Vec<(i64, f64)> {
        s.db()
            .unwrap()
            .query(
                "SELECT hour, storage_gib_seconds FROM usage WHERE sandbox_id = ?1 ORDER BY hour",
                args![id],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0).unwrap(), r.get(1).unwrap()))
            .collect()
    }

    #[test]
    fn names_are_unique_per_tenant_and_tenants_are_apart() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.insert_volume(&vol("v1", "a", "data")).unwrap();
            s.insert_volume(&vol("v2", "b", "data")).unwrap();
            let err = s.insert_volume(&vol("v3", "a", "data")).unwrap_err();
            assert!(
                matches!(err, Error::VolumeNameTaken(ref n) if n == "data"),
                "{e}: {err}"
            );
            assert_eq!(s.find_volume("a", "data").unwrap().unwrap().id, "v1", "{e}");
            assert!(s.find_volume("a", "v2").unwrap().is_none(), "{e}");
            assert_eq!(s.list_volumes(Some("b")).unwrap().len(), 1, "{e}");
            s.set_volume_size("v1", 2 << 30).unwrap();
            assert_eq!(
                s.find_volume("a", "v1").unwrap().unwrap().size_bytes,
                2 << 30,
                "{e}"
            );
            assert_eq!(
                s.volume_metered_at("v1").unwrap(),
                Some(1),
                "{e}: its creation"
            );
            s.add_volume_usage("v1", "a", 10_000, 1.5).unwrap();
            assert_eq!(s.volume_metered_at("v1").unwrap(), Some(10_000), "{e}");
            assert!(s.delete_volume("v1").unwrap(), "{e}");
            assert!(!s.delete_volume("v1").unwrap(), "{e}");
            assert_eq!(s.volume_metered_at("v1").unwrap(), None, "{e}");
        }
    }

    #[test]
    fn a_name_wins_over_an_id_lists_are_ordered_and_sizes_keep_every_bit() {
        for s in crate::testing::stores() {
            let e = s.engine();
            // "v9" is one volume's id and another's name, in one tenant.
            s.insert_volume(&vol("v9", "a", "zeta")).unwrap();
            s.insert_volume(&vol("v1", "a", "v9")).unwrap();
            s.insert_volume(&vol("v2", "a", "alpha")).unwrap();
            s.insert_volume(&NamedVolume {
                size_bytes: u64::MAX,
                ..vol("v3", "0", "huge")
            })
            .unwrap();
            assert_eq!(s.find_volume("a", "v9").unwrap().unwrap().id, "v1", "{e}");
            assert_eq!(s.find_volume("a", "zeta").unwrap().unwrap().id, "v9", "{e}");
            let names = |t| -> Vec<String> {
                s.list_volumes(t)
                    .unwrap()
                    .into_iter()
                    .map(|v| format!("{}/{}", v.tenant, v.name))
                    .collect()
            };
            assert_eq!(names(None), ["0/huge", "a/alpha", "a/v9", "a/zeta"], "{e}");
            assert_eq!(names(Some("a")), ["a/alpha", "a/v9", "a/zeta"], "{e}");
            assert!(names(Some("nobody")).is_empty(), "{e}");
            assert_eq!(
                s.find_volume("0", "huge").unwrap().unwrap().size_bytes,
                u64::MAX,
                "{e}"
            );
            s.set_volume_size("v2", (1 << 63) + 5).unwrap();
            assert_eq!(
                s.find_volume("a", "alpha").unwrap().unwrap().size_bytes,
                (1 << 63) + 5,
                "{e}"
            );
        }
    }

    #[test]
    fn volume_usage_adds_up_per_hour() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.insert_volume(&vol("v1", "a", "data")).unwrap();
            let hour = 3_600_000;
            s.add_volume_usage("v1", "a", 5 * hour + 10, 1.5).unwrap();
            s.add_volume_usage("v1", "a", 5 * hour + 20, 2.25).unwrap();
            s.add_volume_usage("v1", "a", 6 * hour, 0.5).unwrap();
            assert_eq!(
                storage_usage(&s, "v1"),
                [(5 * hour, 3.75), (6 * hour, 0.5)],
                "{e}"
            );
            assert_eq!(s.volume_metered_at("v1").unwrap(), Some(6 * hour), "{e}");
            let others: i64 = s
                .db()
                .unwrap()
                .query_one(
                    "SELECT COUNT(*) FROM usage WHERE vcpu_seconds <> 0 OR memory_gib_seconds <> 0 \
                     OR cpu_used_seconds <> 0 OR memory_used_gib_seconds <> 0",
                    args![],
                )
                .unwrap()
                .get(0)
                .unwrap();
            assert_eq!(others, 0, "{e}: a volume has storage only");
        }
    }
}
