//! Metered usage, in hourly buckets per sandbox: allocated vCPU-seconds and
//! memory GiB-seconds while a sandbox runs, what it really used (from its
//! cgroups), and storage GiB-seconds while its volume exists.

use serde::{Deserialize, Serialize};

use crate::db::{Conn, Row};
use crate::{args, Error, Result, Store};

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
        let mut tx = self.tx()?;
        // The bucket's columns are named with their table: bare, they would
        // be ambiguous with `excluded`'s on PostgreSQL.
        tx.execute(
            "INSERT INTO usage (sandbox_id, tenant, hour, vcpu_seconds, memory_gib_seconds, cpu_used_seconds, memory_used_gib_seconds, storage_gib_seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(sandbox_id, hour) DO UPDATE SET
               vcpu_seconds = usage.vcpu_seconds + excluded.vcpu_seconds,
               memory_gib_seconds = usage.memory_gib_seconds + excluded.memory_gib_seconds,
               cpu_used_seconds = usage.cpu_used_seconds + excluded.cpu_used_seconds,
               memory_used_gib_seconds = usage.memory_used_gib_seconds + excluded.memory_used_gib_seconds,
               storage_gib_seconds = usage.storage_gib_seconds + excluded.storage_gib_seconds",
            args![
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
            args![sandbox_id, at],
        )?;
        tx.commit()
    }

    /// When a sandbox was last metered (`None`: never). An error when the
    /// store has no such sandbox.
    pub fn metered_at(&self, sandbox_id: &str) -> Result<Option<i64>> {
        match self.db()?.query_opt(
            "SELECT metered_at FROM sandboxes WHERE id = ?1",
            args![sandbox_id],
        )? {
            Some(r) => r.get(0),
            None => Err(Error::Sql(format!(
                "sandbox {sandbox_id} is not in the store, so it has no metering mark; \
                 it was removed while being metered (nothing to do)"
            ))),
        }
    }

    /// Usage per sandbox since `since` (Unix ms), of one tenant or all.
    /// The hour bucket holding `since` counts whole.
    pub fn usage(&self, tenant: Option<&str>, since: i64) -> Result<Vec<UsageRow>> {
        // The bound is computed here: PostgreSQL would type `?1 - 3599999`
        // from the literal, as a 32-bit integer, and refuse a timestamp.
        self.db()?
            .query(
                "SELECT sandbox_id, tenant, SUM(vcpu_seconds), SUM(memory_gib_seconds), SUM(cpu_used_seconds), SUM(memory_used_gib_seconds), SUM(storage_gib_seconds)
                 FROM usage WHERE hour >= ?1 AND (CAST(?2 AS TEXT) IS NULL OR tenant = ?2)
                 GROUP BY sandbox_id, tenant ORDER BY tenant, sandbox_id",
                args![since.saturating_sub(3_599_999), tenant],
            )?
            .iter()
            .map(usage_row)
            .collect()
    }
}

/// Usage summed over one bucket of time (of a tenant).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UsageBucket {
    /// Unix ms of the bucket's start (a multiple of its step).
    pub start: i64,
    pub tenant: String,
    #[serde(flatten)]
    pub usage: UsageDelta,
}

impl Store {
    /// Usage per tenant (one tenant's with `Some`) in buckets of `step_ms`
    /// (a multiple of an hour) whose hours fall in `[since, until)`, oldest
    /// first.
    pub fn usage_series(
        &self,
        tenant: Option<&str>,
        since: i64,
        until: i64,
        step_ms: i64,
    ) -> Result<Vec<UsageBucket>> {
        let step = step_ms.max(3_600_000);
        self.db()?
            .query(
                "SELECT (hour / ?4) * ?4 AS bucket, tenant, SUM(vcpu_seconds), SUM(memory_gib_seconds), SUM(cpu_used_seconds), SUM(memory_used_gib_seconds), SUM(storage_gib_seconds)
                 FROM usage WHERE hour >= ?1 AND hour < ?2 AND (CAST(?3 AS TEXT) IS NULL OR tenant = ?3)
                 GROUP BY bucket, tenant ORDER BY bucket, tenant",
                args![since.div_euclid(step) * step, until, tenant, step],
            )?
            .iter()
            .map(|r| {
                Ok(UsageBucket {
                    start: r.get(0)?,
                    tenant: r.get(1)?,
                    usage: sums_from(r)?,
                })
            })
            .collect()
    }
}

fn usage_row(r: &Row) -> Result<UsageRow> {
    Ok(UsageRow {
        sandbox_id: r.get(0)?,
        tenant: r.get(1)?,
        usage: sums_from(r)?,
    })
}

/// The five sums of a usage query, in columns 2 to 6.
fn sums_from(r: &Row) -> Result<UsageDelta> {
    Ok(UsageDelta {
        vcpu_seconds: r.get(2)?,
        memory_gib_seconds: r.get(3)?,
        cpu_used_seconds: r.get(4)?,
        memory_used_gib_seconds: r.get(5)?,
        storage_gib_seconds: r.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Conn;

    #[test]
    fn usage_series_sums_hours_into_buckets_per_tenant() {
        for s in crate::testing::stores() {
            let e = s.engine();
            let h = 3_600_000i64;
            let day = 24 * h;
            s.add_usage("sb-1", "acme", 10 * day + 3 * h, &delta(10.0))
                .unwrap();
            s.add_usage("sb-1", "acme", 10 * day + 5 * h, &delta(20.0))
                .unwrap();
            s.add_usage("sb-2", "acme", 10 * day + 5 * h + 10, &delta(1.0))
                .unwrap();
            s.add_usage("sb-3", "other", 11 * day, &delta(7.0)).unwrap();
            let hours = s.usage_series(Some("acme"), 0, 20 * day, h).unwrap();
            let got: Vec<(i64, f64)> = hours
                .iter()
                .map(|b| (b.start, b.usage.vcpu_seconds))
                .collect();
            assert_eq!(
                got,
                [(10 * day + 3 * h, 10.0), (10 * day + 5 * h, 21.0)],
                "{e}"
            );
            let days = s.usage_series(None, 0, 20 * day, day).unwrap();
            let got: Vec<(i64, &str, f64)> = days
                .iter()
                .map(|b| (b.start, b.tenant.as_str(), b.usage.vcpu_seconds))
                .collect();
            assert_eq!(
                got,
                [(10 * day, "acme", 31.0), (11 * day, "other", 7.0)],
                "{e}"
            );
            // The window: buckets of the hours in [since, until).
            assert!(
                s.usage_series(None, 12 * day, 20 * day, day)
                    .unwrap()
                    .is_empty(),
                "{e}"
            );
            assert_eq!(
                s.usage_series(None, 0, 10 * day + 4 * h, h).unwrap().len(),
                1,
                "{e}"
            );
        }
    }

    fn delta(v: f64) -> UsageDelta {
        UsageDelta {
            vcpu_seconds: v,
            memory_gib_seconds: v * 2.0,
            cpu_used_seconds: v / 2.0,
            memory_used_gib_seconds: 0.25,
            storage_gib_seconds: 1.5,
        }
    }

    /// A bare sandbox row, for its metering mark.
    fn sandbox(s: &Store, id: &str) {
        s.db()
            .unwrap()
            .execute(
                "INSERT INTO sandboxes (id, name, tenant, image, mode, runtime, spec, state, desired_state, created_at, updated_at, state_changed_at) \
                 VALUES (?1, ?1, 't', 'host', 'persistent', 'ns', '{}', 'running', 'running', 0, 0, 0)",
                args![id],
            )
            .unwrap();
    }

    const H: i64 = 3_600_000;
    /// An hour boundary of a real date (past 32 bits of milliseconds).
    const T0: i64 = 1_764_000_000_000 / H * H;

    #[test]
    fn usage_adds_up_in_hourly_buckets() {
        for s in crate::testing::stores() {
            let e = s.engine();
            sandbox(&s, "a");
            assert_eq!(s.metered_at("a").unwrap(), None, "{e}");
            s.add_usage("a", "t1", T0 + 10, &delta(1.0)).unwrap();
            s.add_usage("a", "t1", T0 + H - 1, &delta(2.0)).unwrap();
            s.add_usage("a", "t1", T0 + H, &delta(4.0)).unwrap();
            s.add_usage("b", "t2", T0 + 5, &delta(8.0)).unwrap();
            assert_eq!(s.metered_at("a").unwrap(), Some(T0 + H), "{e}");
            // One bucket per hour: two rows for a, the first summed.
            let buckets: Vec<(i64, f64)> = s
                .db()
                .unwrap()
                .query(
                    "SELECT hour, vcpu_seconds FROM usage WHERE sandbox_id = 'a' ORDER BY hour",
                    args![],
                )
                .unwrap()
                .iter()
                .map(|r| (r.get(0).unwrap(), r.get(1).unwrap()))
                .collect();
            assert_eq!(buckets, [(T0, 3.0), (T0 + H, 4.0)], "{e}");

            let all = s.usage(None, 0).unwrap();
            assert_eq!(
                all,
                [
                    UsageRow {
                        sandbox_id: "a".into(),
                        tenant: "t1".into(),
                        usage: UsageDelta {
                            vcpu_seconds: 7.0,
                            memory_gib_seconds: 14.0,
                            cpu_used_seconds: 3.5,
                            memory_used_gib_seconds: 0.75,
                            storage_gib_seconds: 4.5,
                        },
                    },
                    UsageRow {
                        sandbox_id: "b".into(),
                        tenant: "t2".into(),
                        usage: delta(8.0),
                    },
                ],
                "{e}"
            );
            let t2 = s.usage(Some("t2"), 0).unwrap();
            assert_eq!(t2.len(), 1, "{e}");
            assert_eq!(t2[0].sandbox_id, "b", "{e}");
            assert!(s.usage(Some("t3"), 0).unwrap().is_empty(), "{e}");
            // Since a time inside the first hour: that hour counts whole.
            let since = s.usage(Some("t1"), T0 + 30).unwrap();
            assert_eq!(since[0].usage.vcpu_seconds, 7.0, "{e}");
            // Since the second hour: only it.
            let since = s.usage(Some("t1"), T0 + H).unwrap();
            assert_eq!(since[0].usage.vcpu_seconds, 4.0, "{e}");
            assert!(s.usage(None, T0 + 2 * H).unwrap().is_empty(), "{e}");
            // The oldest time there is does not overflow.
            assert_eq!(s.usage(None, i64::MIN).unwrap().len(), 2, "{e}");
        }
    }

    #[test]
    fn usage_is_ordered_by_tenant_then_sandbox() {
        for s in crate::testing::stores() {
            let e = s.engine();
            for (id, tenant) in [("b", "t1"), ("c", "t0"), ("a", "t1")] {
                s.add_usage(id, tenant, T0, &delta(1.0)).unwrap();
            }
            let order: Vec<(String, String)> = s
                .usage(None, T0)
                .unwrap()
                .into_iter()
                .map(|r| (r.tenant, r.sandbox_id))
                .collect();
            assert_eq!(
                order,
                [
                    ("t0".to_string(), "c".to_string()),
                    ("t1".into(), "a".into()),
                    ("t1".into(), "b".into())
                ],
                "{e}"
            );
        }
    }

    #[test]
    fn the_metering_mark_of_an_unknown_sandbox_is_an_error() {
        for s in crate::testing::stores() {
            let err = s.metered_at("nope").unwrap_err().to_string();
            assert!(err.contains("nope"), "{}: {err}", s.engine());
            // Usage of a sandbox with no row is still kept.
            s.add_usage("nope", "t", T0, &delta(1.0)).unwrap();
            assert_eq!(s.usage(None, T0).unwrap().len(), 1, "{}", s.engine());
        }
    }
}
