//! Tenants: their records and limits, what each holds, quota checks, and
//! usage reports.

use std::collections::HashMap;

use super::Controller;
use crate::context::blocking;
use crate::error::{Error, Result};
use crate::model::{Record, SandboxSpec};

/// A tenant's quota lock: this daemon's, and in a cluster the tenant's
/// across nodes (so that a check and the write it allows never interleave
/// with another node's).
pub(crate) struct QuotaGuard<'a> {
    _local: tokio::sync::MutexGuard<'a, ()>,
    _cluster: Option<dwell_store::TenantLock<'a>>,
}

impl Controller {
    /// Takes `tenant`'s quota lock (see [`QuotaGuard`]).
    pub(crate) async fn quota_guard(&self, tenant: &str) -> Result<QuotaGuard<'_>> {
        let local = self.inner.quota_lock.lock().await;
        // Waiting for another node blocks this thread: tell the runtime.
        let cluster = if self.inner.store.engine() == "postgres" {
            tokio::task::block_in_place(|| self.inner.store.tenant_lock(tenant))?
        } else {
            None
        };
        Ok(QuotaGuard {
            _local: local,
            _cluster: cluster,
        })
    }

    pub(crate) async fn check_quota(&self, tenant: &str, more: &crate::quota::Held) -> Result<()> {
        let t = self.tenant_limits(tenant)?;
        let mut held = crate::quota::held(&self.inner.store.list_sandboxes(Some(tenant))?);
        // Named volumes hold their size limit, used by sandboxes or not.
        held.storage += crate::volumes::held_bytes(&self.inner, tenant)?;
        // ... and named-volume work still running (a create, a resize).
        held.storage += crate::volumes::pending_bytes(&self.inner, tenant);
        if t.max_storage.is_some() && more.storage > 0 {
            // Snapshots count towards storage too (their stored bytes);
            // a request that adds no storage (start, resume) need not
            // list them.
            // Listing them may block on the object store (S3): off the
            // async workers.
            let store = self.inner.snapshots.clone();
            let owner = tenant.to_string();
            held.storage += blocking(move || crate::snapshots::list(&*store, &owner))
                .await??
                .iter()
                .map(|m| m.sizes.uploaded)
                .sum::<u64>();
        }
        crate::quota::check(&t, &held, more)
    }

    /// Create a tenant with its limits.
    pub fn create_tenant(&self, t: &dwell_store::Tenant) -> Result<()> {
        crate::model::validate_name(&t.name).map_err(|_| {
            Error::invalid(
                "tenant",
                format!(
                    "{:?}: use 1-63 lowercase letters, digits, '-', '_' or '.'",
                    t.name
                ),
            )
        })?;
        crate::model::check_no_separator("tenant", &t.name)?;
        if self.inner.store.get_tenant(&t.name)?.is_some() {
            return Err(Error::Conflict(format!(
                "tenant {:?} already exists; update its limits instead",
                t.name
            )));
        }
        Ok(self.inner.store.insert_tenant(t)?)
    }

    /// Change a tenant's limits.
    pub fn update_tenant(&self, t: &dwell_store::Tenant) -> Result<()> {
        if !self.inner.store.update_tenant(t)? {
            return Err(Error::TenantNotFound(t.name.clone()));
        }
        Ok(())
    }

    /// The limits `tenant` is held to: its record, or the daemon's
    /// default quota when it has none.
    pub fn tenant_limits(&self, tenant: &str) -> Result<dwell_store::Tenant> {
        Ok(match self.inner.store.get_tenant(tenant)? {
            Some(t) => t,
            None => self.inner.limits.default_quota.tenant(tenant),
        })
    }

    /// Tenants with what each holds, and whether it is held to the
    /// daemon's default quota (no record of its own): every recorded
    /// tenant, `default_tenant`, and any other tenant that holds sandboxes.
    pub fn tenants(
        &self,
        default_tenant: &str,
    ) -> Result<Vec<(dwell_store::Tenant, crate::quota::Held, bool)>> {
        let mut out = Vec::new();
        let mut by_tenant: std::collections::BTreeMap<String, Vec<Record>> =
            std::collections::BTreeMap::new();
        by_tenant.entry(default_tenant.to_string()).or_default();
        for r in self.inner.store.list_sandboxes(None)? {
            by_tenant.entry(r.tenant.clone()).or_default().push(r);
        }
        // Named volumes hold storage too.
        let held = |tenant: &str, recs: &[Record]| -> Result<crate::quota::Held> {
            let mut h = crate::quota::held(recs);
            h.storage += crate::volumes::held_bytes(&self.inner, tenant)?;
            Ok(h)
        };
        for t in self.inner.store.list_tenants()? {
            let recs = by_tenant.remove(&t.name).unwrap_or_default();
            let h = held(&t.name, &recs)?;
            out.push((t, h, false));
        }
        for (name, recs) in by_tenant {
            let t = self.inner.limits.default_quota.tenant(&name);
            let h = held(&name, &recs)?;
            out.push((t, h, true));
        }
        Ok(out)
    }

    /// One tenant as [`Controller::tenants`] lists it, reading only its own
    /// sandboxes; `None` for a tenant with no record, no sandboxes and
    /// that is not `default_tenant`.
    pub fn tenant_view(
        &self,
        name: &str,
        default_tenant: &str,
    ) -> Result<Option<(dwell_store::Tenant, crate::quota::Held, bool)>> {
        let recs = self.inner.store.list_sandboxes(Some(name))?;
        let (t, default_quota) = match self.inner.store.get_tenant(name)? {
            Some(t) => (t, false),
            None if !recs.is_empty() || name == default_tenant => {
                (self.inner.limits.default_quota.tenant(name), true)
            }
            None => return Ok(None),
        };
        let mut h = crate::quota::held(&recs);
        h.storage += crate::volumes::held_bytes(&self.inner, name)?;
        Ok(Some((t, h, default_quota)))
    }

    /// Usage and cost since `since` (Unix ms), of one tenant or all.
    pub fn usage(&self, tenant: Option<&str>, since: i64) -> Result<crate::metering::Report> {
        let rows = self.inner.store.usage(tenant, since)?;
        let mut names = HashMap::new();
        let vols = self.inner.store.list_volumes(tenant)?;
        for r in &rows {
            if let Some(rec) = self.inner.store.get_sandbox::<SandboxSpec>(&r.sandbox_id)? {
                names.insert(r.sandbox_id.clone(), rec.name);
            } else if let Some(v) = vols.iter().find(|v| v.id == r.sandbox_id) {
                // A named volume's storage row.
                names.insert(r.sandbox_id.clone(), format!("volume:{}", v.name));
            }
        }
        Ok(crate::metering::report(
            &rows,
            &names,
            &self.inner.prices,
            since,
        ))
    }

    /// Usage and cost per tenant (of `tenant` with `Some`) over time, in
    /// buckets of `step_ms`, in `[since, until)`.
    pub fn usage_series(
        &self,
        tenant: Option<&str>,
        since: i64,
        until: i64,
        step_ms: i64,
    ) -> Result<crate::metering::Series> {
        let buckets = self
            .inner
            .store
            .usage_series(tenant, since, until, step_ms)?;
        Ok(crate::metering::series(
            &buckets,
            &self.inner.prices,
            since,
            until,
            step_ms,
        ))
    }
}
