//! Activity: exec, file and stream activity that holds the idle timeout
//! off, keepalives, and changing a live sandbox's policies and egress
//! rules.

use std::sync::Arc;

use dwell_runtime::host::egress::{self, Precedence};

use super::Controller;
use crate::context::{blocking, Context};
use crate::error::{Error, Result};
use crate::model::Sandbox;
use crate::policy::PolicyArgs;

impl Controller {
    /// Note activity on a sandbox (exec, file operation): it pushes the
    /// idle timeout.
    pub fn touch(&self, id: &str) {
        self.inner.touch(id);
    }

    /// Mark a stream (exec, shell, attach) open until the guard drops: a
    /// sandbox with an open stream is never idle.
    pub fn stream_opened(&self, id: &str) -> StreamGuard {
        self.inner.touch(id);
        let mut m = self.inner.streams.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(id.to_string()).or_default() += 1;
        StreamGuard {
            inner: self.inner.clone(),
            id: id.to_string(),
        }
    }

    /// Push the idle and TTL timers: the sandbox counts as active, and those
    /// policies cannot fire before `now + duration` (as an agent's
    /// heartbeat would).
    pub fn keepalive(&self, tenant: &str, id_or_name: &str, duration_ms: u64) -> Result<Sandbox> {
        let rec = self.record(tenant, id_or_name)?;
        let now = self.inner.clock.now_ms();
        self.inner
            .store
            .keepalive(&rec.id, now, now + duration_ms as i64)?;
        self.inner.store.add_event(
            &rec.id,
            "request",
            &format!("keepalive for {}", crate::policy::human(duration_ms)),
        )?;
        self.inner.deadlines.changed(&rec.id);
        self.get_by_id(&rec.id)
    }

    /// Change the policies of a live sandbox.
    pub fn update_policies(
        &self,
        tenant: &str,
        id_or_name: &str,
        args: &PolicyArgs,
    ) -> Result<Sandbox> {
        let rec = self.record(tenant, id_or_name)?;
        // From the stored spec, not the view: the view hides sealed secrets.
        let mut spec = rec.spec;
        args.apply(&mut spec.policies)?;
        self.inner.store.set_spec(&rec.id, &spec)?;
        let policies = spec.policies;
        self.inner.store.add_event(
            &rec.id,
            "request",
            &format!(
                "policies set to {}",
                serde_json::to_string(&policies).unwrap_or_default()
            ),
        )?;
        // A deadline may be nearer now (a shortened timeout).
        self.inner.deadlines.changed(&rec.id);
        self.get_by_id(&rec.id)
    }
}

/// A change of a sandbox's egress rules: each list given replaces the
/// current one (an empty list clears it); absent ones are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressChange {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    pub precedence: Option<Precedence>,
}

impl Controller {
    /// Change the egress rules of a NAT sandbox. A running (or paused) one
    /// gets them at once, without a restart: its nftables sets are
    /// replaced in one transaction and its DNS resolver decides by them.
    /// Bad entries change nothing.
    pub async fn update_egress(
        &self,
        tenant: &str,
        id_or_name: &str,
        change: &EgressChange,
    ) -> Result<Sandbox> {
        let first = self.record(tenant, id_or_name)?;
        self.here(first.node.as_deref(), &first.name)?;
        let lock = self.inner.lock_for(&first.id);
        let _g = lock.lock().await;
        let rec = self.record(tenant, &first.id)?;
        if rec.spec.network != dwell_runtime::NetworkMode::Nat {
            return Err(Error::invalid(
                "allow_out",
                format!(
                    "sandbox {} has no network (it was created without --net), so it has no \
                     egress to rule; create a sandbox with --net to use egress rules",
                    rec.name
                ),
            ));
        }
        let mut rules = rec.spec.egress.clone();
        if let Some(a) = &change.allow {
            rules.allow = a.iter().filter(|e| !e.trim().is_empty()).cloned().collect();
        }
        if let Some(d) = &change.deny {
            rules.deny = d.iter().filter(|e| !e.trim().is_empty()).cloned().collect();
        }
        if let Some(p) = change.precedence {
            rules.precedence = p;
        }
        crate::model::check_egress(&rules)?;
        // The record and the saved runtime config first (a restore of a
        // hibernated gVisor sandbox installs what the config holds), then
        // the live sets; a failure on the way puts the old rules back, so
        // what runs, what `inspect` shows and what a restore installs never
        // disagree.
        let old_spec = rec.spec.clone();
        let mut spec = rec.spec;
        spec.egress = rules.clone();
        self.inner.store.set_spec(&rec.id, &spec)?;
        let saved = crate::reconcile::config::config_of(&self.inner, &rec.id).ok();
        let restore = |inner: &crate::context::Context| {
            let _ = inner.store.set_spec(&rec.id, &old_spec);
            if let Some(cfg) = &saved {
                let _ = crate::reconcile::config::save(inner, cfg);
            }
        };
        if let Some(cfg) = &saved {
            let mut cfg = cfg.clone();
            cfg.egress = rules.clone();
            if let Err(e) = crate::reconcile::config::save(&self.inner, &cfg) {
                restore(&self.inner);
                return Err(e);
            }
        }
        let applied = match &self.inner.dns {
            Some(dns) => dns.update(&rec.id, &rules).await,
            None => {
                let r = rules.clone();
                let table = dwell_runtime::host::network::table_name(&rec.id);
                blocking(move || {
                    let p = egress::Policy::compile(&r)?;
                    egress::apply_if_present(&table, &p, &[]).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
            }
        };
        if let Err(e) = applied {
            restore(&self.inner);
            return Err(Error::Internal(format!(
                "applying the new egress rules to the running sandbox failed: {e}; its rules \
                 are unchanged"
            )));
        }
        self.inner.store.add_event(
            &rec.id,
            "request",
            &format!(
                "egress rules set: allow [{}], deny [{}], {}",
                rules.allow.join(", "),
                rules.deny.join(", "),
                rules.precedence.as_str()
            ),
        )?;
        self.get_by_id(&rec.id)
    }
}

/// Keeps a sandbox "not idle" while an exec, shell or attach stream is
/// open.
pub struct StreamGuard {
    inner: Arc<Context>,
    id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut m = self.inner.streams.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = false;
        if let Some(n) = m.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.id);
                last = true;
            }
        }
        drop(m);
        self.inner.touch(&self.id);
        if last {
            // The idle timeout counts again from now on (while another
            // stream is open it does not count at all).
            self.inner.deadlines.changed(&self.id);
        }
    }
}
