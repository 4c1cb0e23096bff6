//! Reading sandboxes: by id or name, lists, `inspect` with volume and live
//! usage, events, kernel stats, `/metrics` and the progress of snapshot
//! operations.

use dwell_store::Event;

use super::Controller;
use crate::context::{blocking, Context};
use crate::error::{Error, Result};
use crate::model::{Record, Sandbox, State, VolumeView};
use crate::reconcile;
use crate::transitions::Rules;

impl Controller {
    pub(crate) fn get_by_id(&self, id: &str) -> Result<Sandbox> {
        let rec = self
            .inner
            .store
            .get_sandbox(id)?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        self.view(&rec)
    }

    pub(crate) fn record(&self, tenant: &str, id_or_name: &str) -> Result<Record> {
        self.inner
            .store
            .find_sandbox(tenant, id_or_name)?
            .ok_or_else(|| Error::NotFound(id_or_name.to_string()))
    }

    /// A sandbox by id or name.
    pub fn get(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        self.view(&self.record(tenant, id_or_name)?)
    }

    pub(crate) fn view(&self, rec: &Record) -> Result<Sandbox> {
        let mut sb = Sandbox::from_record(rec);
        sb.networks = crate::networks::attachments(&self.inner, &sb.id)?;
        sb.archive = crate::archive::read_ref(&self.inner, &sb.id);
        if rec.spec.backup_every_ms.is_some() {
            sb.last_backup_at = crate::backup::last_at(&self.inner, &sb.id);
        }
        if sb.state == State::Hibernated {
            sb.saved_state_bytes = reconcile::hibernate::saved_bytes(&self.inner, &sb.id);
        }
        if self.inner.streams_open(&sb.id) {
            sb.schedule = crate::policy::schedule(rec, &sb.spec.policies, true);
        }
        Ok(sb)
    }

    /// Live sandboxes of a tenant, oldest first.
    pub fn list(&self, tenant: &str) -> Result<Vec<Sandbox>> {
        self.inner
            .store
            .list_sandboxes(Some(tenant))?
            .iter()
            .map(|r| self.view(r))
            .collect()
    }

    /// `tenant`'s sandboxes, each with its volume's size and use and, if it
    /// runs, its live usage (one read of its cgroup). In a cluster only the
    /// sandboxes this node runs have them: the others' are their nodes'.
    pub async fn list_with_stats(&self, tenant: &str) -> Result<Vec<Sandbox>> {
        let mut all = self.list(tenant)?;
        let wanted: Vec<(usize, String, bool)> = all
            .iter()
            .enumerate()
            .filter(|(_, s)| self.here(s.node.as_deref(), &s.name).is_ok())
            .map(|(i, s)| (i, s.id.clone(), s.state.has_processes()))
            .collect();
        let inner = self.inner.clone();
        let found = blocking(move || {
            wanted
                .into_iter()
                .map(|(i, id, running)| {
                    let (vol, stats) = live_of(&inner, &id, running);
                    (i, vol, stats)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        for (i, vol, stats) in found {
            all[i].volume = vol.map(volume_view);
            all[i].stats = stats;
        }
        Ok(all)
    }

    /// A sandbox with its volume and live usage.
    pub async fn inspect(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        let mut sb = self.get(tenant, id_or_name)?;
        let inner = self.inner.clone();
        let id = sb.id.clone();
        let running = sb.state.has_processes();
        let image = sb.image.clone();
        let (vol, stats, image_config) = blocking(move || {
            let image_config = inner
                .images
                .get(&image)
                .ok()
                .map(|i| crate::model::ImageConfigView::of(&i))
                .filter(|v| !v.is_empty());
            let (vol, stats) = live_of(&inner, &id, running);
            (vol, stats, image_config)
        })
        .await?;
        sb.image_config = image_config;
        if sb.state == State::Running && sb.spec.service.is_some() {
            match crate::service::status(&self.inner, &sb.id).await {
                Ok(s) => sb.service = s,
                Err(e) => tracing::debug!(sandbox = %sb.id, "service status: {e}"),
            }
        }
        sb.volume = vol.map(volume_view);
        sb.stats = stats;
        Ok(sb)
    }

    /// Events of a sandbox after `after` (a sequence number).
    /// Deleted sandboxes keep their events (the audit trail): ask by id.
    pub fn events(&self, tenant: &str, id_or_name: &str, after: i64) -> Result<Vec<Event>> {
        let id = self.event_owner(tenant, id_or_name)?;
        Ok(self.inner.store.events(&id, after, 1000)?)
    }

    /// The events of a sandbox that match `q` (filtered and limited by
    /// the store, among the sandbox's newest
    /// [`dwell_store::EVENTS_KEPT`]). Blocking (SQLite): call it off the
    /// async threads. Deleted sandboxes keep their events: ask by id.
    pub fn find_events(
        &self,
        tenant: &str,
        id_or_name: &str,
        q: &dwell_store::EventQuery,
    ) -> Result<Vec<Event>> {
        let id = self.event_owner(tenant, id_or_name)?;
        Ok(self.inner.store.find_events(&id, q)?)
    }

    /// The id of the caller's sandbox `id_or_name`, live or (by id)
    /// deleted, whose events may be read.
    fn event_owner(&self, tenant: &str, id_or_name: &str) -> Result<String> {
        match self.record(tenant, id_or_name) {
            Ok(r) => Ok(r.id),
            Err(Error::NotFound(_)) => Ok(self
                .inner
                .store
                .get_sandbox::<crate::model::SandboxSpec>(id_or_name)?
                .filter(|r| r.tenant == tenant)
                .ok_or_else(|| Error::NotFound(id_or_name.to_string()))?
                .id),
            Err(e) => Err(e),
        }
    }

    /// Every live sandbox of every tenant on this node, with live kernel
    /// stats where it runs (for `/metrics`).
    pub async fn metrics(&self) -> Result<Vec<(Sandbox, Option<dwell_runtime::Stats>)>> {
        // This node's (in a cluster, each node reports what it runs).
        let recs = self.inner.own_sandboxes()?;
        let inner = self.inner.clone();
        blocking(move || {
            recs.iter()
                .map(Sandbox::from_record)
                .map(|sb| {
                    let stats = sb
                        .state
                        .has_processes()
                        .then(|| {
                            reconcile::config::config_of(&inner, &sb.id)
                                .ok()
                                .and_then(|c| inner.runtimes.get(&sb.runtime).ok()?.stats(&c).ok())
                        })
                        .flatten();
                    (sb, stats)
                })
                .collect()
        })
        .await
    }

    /// Kernel usage counters of a running sandbox.
    pub async fn stats(&self, sb: &Sandbox) -> Result<dwell_runtime::Stats> {
        let inner = self.inner.clone();
        let id = sb.id.clone();
        let runtime = self.inner.runtimes.get(&sb.runtime)?;
        blocking(move || {
            let cfg = reconcile::config::config_of(&inner, &id)?;
            Ok::<_, Error>(runtime.stats(&cfg)?)
        })
        .await?
    }

    /// The sandbox's OOM kill count when its runtime reads it without
    /// blocking (see [`dwell_runtime::Runtime::oom_kills_now`]); `None`:
    /// use [`Controller::stats`].
    pub fn oom_kills_now(&self, sb: &Sandbox) -> Option<u64> {
        self.inner
            .runtimes
            .get(&sb.runtime)
            .ok()?
            .oom_kills_now(&sb.id)
    }

    /// Progress of the snapshot operation running on a sandbox, if any.
    pub fn progress(
        &self,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<Option<crate::progress::OpProgress>> {
        let rec = self.record(tenant, id_or_name)?;
        Ok(self.inner.progress.get(&rec.id))
    }
}

/// What inspect shows of a sandbox's volume.
fn volume_view(v: dwell_storage::VolumeInfo) -> VolumeView {
    VolumeView {
        kind: match v.kind {
            dwell_storage::VolumeKind::Loop => "loop".to_string(),
            dwell_storage::VolumeKind::Directory => "directory".to_string(),
        },
        size_bytes: v.size_bytes,
        used_bytes: v.used_bytes,
        mounted: v.mounted,
        limit_enforced: v.limit_enforced,
    }
}

/// A sandbox's volume and, if it runs, its live usage (blocking: files
/// of the volume and the cgroup).
fn live_of(
    inner: &Context,
    id: &str,
    running: bool,
) -> (
    Option<dwell_storage::VolumeInfo>,
    Option<dwell_runtime::Stats>,
) {
    let vol = inner.volumes.info(id).ok();
    let stats = if running {
        reconcile::config::config_of(inner, id)
            .ok()
            .and_then(|c| inner.runtime_of(id).ok()?.stats(&c).ok())
    } else {
        None
    };
    (vol, stats)
}
