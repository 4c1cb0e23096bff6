//! Activity: exec, file and stream activity that holds the idle timeout
//! off, keepalives, and changing a live sandbox's policies.

use std::sync::Arc;

use super::Controller;
use crate::context::Context;
use crate::error::Result;
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
        if let Some(n) = m.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.id);
            }
        }
        drop(m);
        self.inner.touch(&self.id);
    }
}
