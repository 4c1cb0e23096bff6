//! Metered usage, in hourly buckets per sandbox: allocated vCPU-seconds and
//! memory GiB-seconds while a sandbox runs, what it really used (from its
//! cgroups), and storage GiB-seconds while its volume exists.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::{Result, Store};

/// Usage added over one interval.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct UsageDelta {
    pub vcpu_seconds: f64,
    pub memory_gib_seconds: f64,
    pub cpu_used_seconds: f64,
    pub memory_used_gib_seconds: f64,
    pub storage_gib_seconds: f64,
}

/// Summed usage of a sandbox or tenant.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UsageRow {
    pub sandbox_id: String,
    pub tenant: String,
    #[serde(flatten)]
    pub usage: UsageDelta,
}

impl Store {
    /// Add `d` to the sandbox's bucket of the hour containing `at`, and move
    /// its metering mark to `at`.
    pub fn add_usage(&self, sandbox_id: &str, tenant: &str, at: i64, d: &UsageDelta) -> Result<()> {
        let hour = at.div_euclid(3_600_000) * 3_600_000;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO usage (sandbox_id, tenant, hour, vcpu_seconds, memory_gib_seconds, cpu_used_seconds, memory_used_gib_seconds, storage_gib_seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(sandbox_id, hour) DO UPDATE SET
               vcpu_seconds = vcpu_seconds + excluded.vcpu_seconds,
               memory_gib_seconds = memory_gib_seconds + excluded.memory_gib_seconds,
               cpu_used_seconds = cpu_used_seconds + excluded.cpu_used_seconds,
               memory_used_gib_seconds = memory_used_gib_seconds + excluded.memory_used_gib_seconds,
               storage_gib_seconds = storage_gib_seconds + excluded.storage_gib_seconds",
            params![
                sandbox_id,
                tenant,
                hour,
                d.vcpu_seconds,
                d.memory_gib_seconds,
                d.cpu_used_seconds,
                d.memory_used_gib_seconds,
                d.storage_gib_seconds
            ],
        )?;
        tx.execute(
            "UPDATE sandboxes SET metered_at = ?2 WHERE id = ?1",
            params![sandbox_id, at],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// When a sandbox was last metered.
    pub fn metered_at(&self, sandbox_id: &str) -> Result<Option<i64>> {
        let conn = self.conn();
        Ok(conn.query_row(
            "SELECT metered_at FROM sandboxes WHERE id = ?1",
            [sandbox_id],
            |r| r.get(0),
        )?)
    }

    /// Usage per sandbox since `since` (Unix ms), of one tenant or all.
    pub fn usage(&self, tenant: Option<&str>, since: i64) -> Result<Vec<UsageRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT sandbox_id, tenant, SUM(vcpu_seconds), SUM(memory_gib_seconds), SUM(cpu_used_seconds), SUM(memory_used_gib_seconds), SUM(storage_gib_seconds)
             FROM usage WHERE hour >= ?1 - 3599999 AND (?2 IS NULL OR tenant = ?2)
             GROUP BY sandbox_id, tenant ORDER BY tenant, sandbox_id",
        )?;
        let rows = stmt.query_map(params![since, tenant], |r| {
            Ok(UsageRow {
                sandbox_id: r.get(0)?,
                tenant: r.get(1)?,
                usage: UsageDelta {
                    vcpu_seconds: r.get(2)?,
                    memory_gib_seconds: r.get(3)?,
                    cpu_used_seconds: r.get(4)?,
                    memory_used_gib_seconds: r.get(5)?,
                    storage_gib_seconds: r.get(6)?,
                },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
