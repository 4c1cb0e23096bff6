//! Lifecycle requests: start, stop, pause, resume, hibernate, archive and
//! delete. Each writes the desired state under the sandbox's lock and
//! reconciles it at once, so the caller learns the outcome.

use super::Controller;
use crate::error::{Error, Result};
use crate::model::{Mode, Sandbox, State};
use crate::reconcile;
use crate::transitions::{refused, Request, Rules};

impl Controller {
    /// Ask for the state `request` targets (see [`Request::target`]) and
    /// reconcile towards it; `check` says whether the request makes sense
    /// from the current state (by [`Rules::allows`], and whatever else the
    /// request needs).
    pub(crate) async fn transition(
        &self,
        tenant: &str,
        id_or_name: &str,
        request: Request,
        check: impl FnOnce(&Sandbox) -> Result<()>,
    ) -> Result<Sandbox> {
        let (what, desired) = match request.target() {
            Some(t) => (request.name(), t),
            None => {
                return Err(Error::Internal(format!(
                    "{} is not a lifecycle request",
                    request.name()
                )))
            }
        };
        let rec = self.record(tenant, id_or_name)?;
        let lock = self.inner.lock_for(&rec.id);
        {
            let _g = lock.lock().await;
            // Re-read under the lock: a concurrent transition may have won.
            let rec = self.record(tenant, &rec.id)?;
            self.here(rec.node.as_deref(), &rec.name)?;
            let sb = Sandbox::from_record(&rec);
            check(&sb)?;
            self.inner.store.set_desired(&rec.id, desired)?;
            self.inner
                .store
                .add_event(&rec.id, "request", &format!("{what} requested"))?;
        }
        reconcile::reconcile(&self.inner, &rec.id).await;
        let sb = self.get_by_id(&rec.id)?;
        if sb.state == State::Error {
            return Err(Error::Conflict(format!(
                "{what} of sandbox {} failed: {}",
                sb.name, sb.reason
            )));
        }
        Ok(sb)
    }

    /// Start a stopped (or failed) sandbox.
    pub async fn start(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        let sb = self.get(tenant, id_or_name)?;
        let _quota = self.quota_guard(tenant).await?;
        // Its memory and vCPUs count again once it runs.
        if !sb.state.holds_compute() {
            self.check_compute_quota(tenant, &sb).await?;
        }
        self.transition(tenant, id_or_name, Request::Start, |sb| {
            if sb.state.allows(Request::Start) {
                return Ok(());
            }
            Err(refused(
                sb,
                Request::Start,
                format!(
                    "sandbox {} is paused; a paused sandbox is resumed, not started",
                    sb.name
                ),
            ))
        })
        .await
    }

    /// Stop a sandbox: its processes end; a persistent sandbox keeps its
    /// volume, an ephemeral one is deleted.
    pub async fn stop(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        self.transition(tenant, id_or_name, Request::Stop, |sb| {
            if sb.state.allows(Request::Stop) {
                return Ok(());
            }
            Err(refused(sb, Request::Stop, format!(
                "sandbox {} is archived (stopped, its volume in the snapshot store); starting it brings it back",
                sb.name
            )))
        })
        .await
    }

    /// Archive a sandbox: stop it, move its volume into the snapshot store
    /// and free it locally (`start` brings it back).
    pub async fn archive(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        self.transition(tenant, id_or_name, Request::Archive, |sb| {
            match (sb.mode, sb.state) {
                (Mode::Ephemeral, _) => Err(Error::Conflict(format!(
                "sandbox {} is ephemeral: its data goes when it stops, there is nothing to archive",
                sb.name
            ))),
                (_, s) if !s.allows(Request::Archive) => Err(refused(
                    sb,
                    Request::Archive,
                    format!("sandbox {} is still being created", sb.name),
                )),
                _ => Ok(()),
            }
        })
        .await
    }

    /// Freeze every process of a running sandbox.
    pub async fn pause(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        self.transition(tenant, id_or_name, Request::Pause, |sb| match sb.state {
            s if s.allows(Request::Pause) => Ok(()),
            s => Err(refused(
                sb,
                Request::Pause,
                format!(
                    "sandbox {} is {}; only a running sandbox can be paused",
                    sb.name,
                    s.as_str()
                ),
            )),
        })
        .await
    }

    /// Thaw a paused sandbox, or restore a hibernated one from disk (or
    /// from its archive, when it was archived while hibernated).
    pub async fn resume(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        let sb = self.get(tenant, id_or_name)?;
        let _quota = self.quota_guard(tenant).await?;
        let checked = matches!(sb.state, State::Hibernated | State::Archived);
        if checked {
            // Its memory and vCPUs count again once it runs.
            self.check_compute_quota(tenant, &sb).await?;
        }
        self.transition(tenant, id_or_name, Request::Resume, |sb| match sb.state {
            // Hibernated (by a policy) since it was read above, so its
            // compute was not checked: refuse rather than skip the quota.
            State::Hibernated | State::Archived if !checked => Err(Error::Conflict(format!(
                "sandbox {} was {} while this resume was being checked; resume it again",
                sb.name,
                sb.state.as_str()
            ))),
            s if s.allows(Request::Resume) => Ok(()),
            // Archived while hibernated: its memory is in the archive.
            State::Archived
                if crate::archive::read_ref(&self.inner, &sb.id).is_some_and(|r| r.hibernated) =>
            {
                Ok(())
            }
            s => Err(refused(
                sb,
                Request::Resume,
                format!(
                    "sandbox {} is {}, not paused or hibernated; it is started, not resumed",
                    sb.name,
                    s.as_str()
                ),
            )),
        })
        .await
    }

    /// Save a running or paused gVisor sandbox whole to disk (memory,
    /// processes, open files); nothing of it stays on the host until
    /// `resume`.
    pub async fn hibernate(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        self.transition(tenant, id_or_name, Request::Hibernate, |sb| {
            if crate::runtimes::capabilities(&sb.runtime)
                .hibernate
                .is_none()
            {
                return Err(Error::Runtime(dwell_runtime::not_hibernatable(&sb.runtime)));
            }
            match sb.state {
                s if s.allows(Request::Hibernate) => Ok(()),
                s => Err(refused(
                    sb,
                    Request::Hibernate,
                    format!(
                        "sandbox {} is {}; only a running or paused sandbox can be hibernated",
                        sb.name,
                        s.as_str()
                    ),
                )),
            }
        })
        .await
    }

    /// Delete a sandbox and wipe its volume. A running sandbox needs
    /// `force`.
    pub async fn delete(&self, tenant: &str, id_or_name: &str, force: bool) -> Result<()> {
        self.transition(tenant, id_or_name, Request::Delete, |sb| match sb.state {
            s if !force && !s.allows(Request::Delete) => Err(refused(
                sb,
                Request::Delete,
                format!(
                    "sandbox {} is {}; only a stopped sandbox is removed without forcing it",
                    sb.name,
                    sb.state.as_str()
                ),
            )),
            _ => Ok(()),
        })
        .await
        .map(|_| ())
    }

    /// Refuse bringing `sb` back to running when its vCPUs and memory
    /// would take its tenant over quota (they count only while it runs).
    pub(super) async fn check_compute_quota(&self, tenant: &str, sb: &Sandbox) -> Result<()> {
        self.check_quota(
            tenant,
            &crate::quota::Held {
                vcpus: sb.spec.vcpus,
                memory: sb.spec.memory_bytes,
                ..Default::default()
            },
        )
        .await
    }
}
