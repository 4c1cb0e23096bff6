//! Creating a sandbox: validate the request, resolve its image, runtime and
//! source (a snapshot, a hibernated template), check quotas, record it, fill
//! its volume, and reconcile it up. Nothing half-created stays behind.

use super::Controller;
use crate::context::blocking;
use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::model::{validate_name, CreateRequest, Record, Sandbox, State};
use crate::policy::{Policies, PolicyArgs};
use crate::reconcile;

impl Controller {
    /// Create a sandbox and bring it up. Returns once it runs (or failed).
    pub async fn create(&self, tenant: &str, req: CreateRequest) -> Result<Sandbox> {
        let mut spec = req.to_spec(&self.inner.host)?;
        self.inner.limits.ceilings.clamp_defaults(&req, &mut spec);
        crate::backup::check_every(&self.inner, spec.backup_every_ms)?;
        // From a hibernated sandbox of a runtime that saves memory: a
        // memory-snapshot template.
        let template = match &req.from {
            Some(f) => self
                .inner
                .store
                .find_sandbox(tenant, f)?
                .filter(|r: &Record| {
                    crate::runtimes::capabilities(r.runtime.as_str())
                        .hibernate
                        .is_some()
                }),
            None => None,
        };
        if let Some(t) = &template {
            crate::templates::check(t)?;
            // The same rules as a snapshot with memory: the template's
            // image, runtime and network; its resources unless asked.
            crate::memory::apply(&crate::memory::Description::of(t)?, &req, &mut spec)?;
            spec.disk_bytes = t.spec.disk_bytes;
            // Its saved memory has the template's named volumes open: the
            // copy binds the same ones (unless it names its own).
            if spec.volumes.is_empty() {
                spec.volumes = t.spec.volumes.clone();
            }
        }
        // From a snapshot: its volume size wins over --disk.
        let from = match &req.from {
            Some(_) if template.is_some() => None,
            Some(snap) => {
                let store = self.inner.snapshots.clone();
                let (t, s) = (tenant.to_string(), snap.clone());
                let m = blocking(move || crate::snapshots::find(&*store, &t, &s)).await??;
                crate::volumes::not_a_volume_snapshot(&m)?;
                spec.disk_bytes = m.source.volume_size;
                Some(m)
            }
            None => None,
        };
        // A snapshot with saved memory starts warm, as what it was taken of.
        let warm = match &from {
            Some(m) if crate::memory::has_memory(m) => {
                let d = self.memory_description(tenant, m).await?;
                crate::memory::apply(&d, &req, &mut spec)?;
                Some(d)
            }
            _ => None,
        };
        if !req.secret_env.is_empty() {
            let sealer = self
                .inner
                .sealer
                .as_ref()
                .map_err(|e| Error::Internal(e.clone()))?;
            spec.sealed_env = Some(sealer.seal(&req.secret_env)?);
        }
        if spec.network == dwell_runtime::NetworkMode::Nat
            && req.allow_out.is_none()
            && req.deny_out.is_none()
        {
            spec.egress = crate::egress::defaults_for(&self.inner, tenant)?;
        }
        if spec.policies == Policies::default() {
            // The tenant's defaults, else the daemon's.
            let tenant_defaults = self
                .inner
                .store
                .get_tenant(tenant)?
                .and_then(|t| t.default_policies)
                .and_then(|v| serde_json::from_value::<PolicyArgs>(v).ok());
            match tenant_defaults {
                Some(d) => d.apply(&mut spec.policies)?,
                None => self.inner.default_policies.apply(&mut spec.policies)?,
            }
        }
        let name = match &req.name {
            Some(n) => {
                validate_name(n)?;
                crate::model::check_no_separator("name", n)?;
                n.clone()
            }
            None => format!("sandbox-{}", &new_id()[..6]),
        };
        let image = match (&warm, &template) {
            (Some(d), _) => d.image.clone(),
            // A template's copy runs the template's image (its config is
            // copied as is).
            (None, Some(t)) => t.image.clone(),
            (None, None) => {
                let asked = req.image.clone().unwrap_or_else(|| "host".to_string());
                self.image_for_create(tenant, &asked).await?
            }
        };
        // Resolve the image now so a typo fails before anything is made.
        let img = {
            let inner = self.inner.clone();
            let image = image.clone();
            blocking(move || inner.images.get(&image)).await??
        };
        // Its start command runs as the service (a template's copy keeps
        // the template's, unless the request says otherwise).
        spec.service = match (&template, &req.service) {
            (Some(t), None) => t.spec.service.clone(),
            _ => crate::service::resolve(&img, req.service.as_ref())?,
        };
        let mode = req.mode.unwrap_or_default();
        // Saved memory runs on the runtime that saved it.
        let runtime = match (&req.runtime, &template, &warm) {
            (_, Some(t), _) => crate::runtimes::canonical(t.runtime.as_str())?,
            (_, None, Some(d)) => crate::runtimes::canonical(&d.runtime)?,
            (Some(r), None, None) => crate::runtimes::canonical(r)?,
            (None, None, None) => self.inner.runtimes.default_kind(),
        };
        // A runtime this host lacks fails now, with how to get it.
        self.inner.runtimes.of(runtime)?;
        // Unknown (or another tenant's) networks fail before anything is made.
        let nets = self.resolve_networks(tenant, &req.networks)?;
        let _quota = self.quota_guard(tenant).await?;
        // Named volumes must exist (no volume is made on the fly: its size
        // would be a guess, and it would count towards the quota unasked);
        // checked under the quota lock, which their removal takes too.
        for m in &spec.volumes {
            if self.inner.store.find_volume(tenant, &m.name)?.is_none() {
                return Err(Error::VolumeNotFound(m.name.clone()));
            }
        }
        // The daemon's ceilings hold for every tenant, admins included.
        self.inner.limits.ceilings.check(
            &spec,
            crate::limits::free_bytes(&self.inner.data_dir.join("volumes")),
        )?;
        self.check_quota(
            tenant,
            &crate::quota::Held {
                sandboxes: 1,
                vcpus: spec.vcpus,
                memory: spec.memory_bytes,
                storage: spec.disk_bytes,
            },
        )
        .await?;
        let now = self.inner.clock.now_ms();
        let rec = Record {
            id: new_id(),
            name,
            tenant: tenant.to_string(),
            image,
            mode,
            runtime: dwell_store::RuntimeName::new(runtime.name()),
            spec,
            state: State::Creating,
            desired_state: State::Running,
            reason: "create requested".into(),
            created_at: now,
            updated_at: now,
            state_changed_at: now,
            started_at: None,
            stopped_at: None,
            deleted_at: None,
            last_activity_at: None,
            hold_until: None,
            // The owner, in the same insert: no record is ever unowned.
            node: self.node_name().map(String::from),
        };
        // Held (from before the record exists) while the volume and saved
        // memory are filled in: a resync must not start the sandbox cold on
        // a half-filled volume meanwhile. Released before any reconcile of
        // this sandbox below (it takes the same lock).
        let fill_lock = self.inner.lock_for(&rec.id);
        let mut fill = Some(fill_lock.lock().await);
        let fills = template.is_some() || from.is_some();
        if fills {
            // Durable before the record exists: a restart after a crash
            // mid-fill deletes the sandbox (see `fill`).
            let inner = self.inner.clone();
            let id = rec.id.clone();
            if let Err(e) = blocking(move || reconcile::fill::begin(&inner, &id)).await? {
                let _ = dwell_hostfs::remove_tree(self.inner.state_dir(&rec.id));
                return Err(e);
            }
        }
        if let Err(e) = self.inner.store.insert_sandbox(&rec) {
            if fills {
                let _ = dwell_hostfs::remove_tree(self.inner.state_dir(&rec.id));
            }
            return Err(e.into());
        }
        drop(_quota);
        let filled: Result<()> = async {
            self.inner
                .store
                .add_event(&rec.id, "request", "create requested")?;
            for n in &nets {
                self.join(n, &rec.id)?;
            }
            if let Some(t) = template {
                let lock = self.inner.lock_for(&t.id);
                let _g = lock.lock().await;
                let inner = self.inner.clone();
                let (id, name, tid) = (rec.id.clone(), rec.name.clone(), t.id.clone());
                blocking(move || {
                    let t: Record = inner
                        .store
                        .get_sandbox(&tid)?
                        .ok_or_else(|| Error::NotFound(tid.clone()))?;
                    crate::templates::check(&t)?;
                    crate::templates::prepare(&inner, &t, &id, &name)
                })
                .await??;
                drop(_g);
                self.inner.store.add_event(
                    &rec.id,
                    "step",
                    &format!(
                        "volume and saved memory copied from hibernated sandbox {}",
                        t.name
                    ),
                )?;
            }
            if let Some(m) = from {
                let inner = self.inner.clone();
                let id = rec.id.clone();
                let snap = m.id.clone();
                let rec2 = rec.clone();
                blocking(move || -> Result<()> {
                    let info = inner.volumes.create(&id, m.source.volume_size)?;
                    let image = info.image.ok_or_else(|| {
                        Error::Conflict(
                            "snapshots need loop-backed volumes; this host gives directory \
                             volumes"
                                .into(),
                        )
                    })?;
                    let tracker = inner.progress.track(&id, "restore");
                    let ctx = inner.snap_ctx(&m.tenant, false, Some(&tracker))?;
                    crate::snapshots::restore_into(&*inner.snapshots, &m, &image, &ctx)?;
                    crate::crashpoint::crashpoint("create:mid-fill");
                    if crate::memory::has_memory(&m) {
                        let agent =
                            crate::memory::restore(&inner, &*inner.snapshots, &m, &id, &ctx)?;
                        // This host's runtime config: its image store,
                        // paths; the agent version the memory runs.
                        let img = inner.images.get(&rec2.image)?;
                        let upper = inner.volumes.mount_path(&id);
                        let mut cfg = reconcile::config::build(
                            &inner, &id, &rec2.name, &rec2.spec, &img, upper,
                        )?;
                        if let Some(agent) = agent {
                            cfg.agent_binary = agent;
                        }
                        reconcile::config::save(&inner, &cfg)?;
                    }
                    Ok(())
                })
                .await??;
                self.inner.store.add_event(
                    &rec.id,
                    "step",
                    &format!("volume restored from snapshot {snap}"),
                )?;
            }
            if fills {
                let inner = self.inner.clone();
                let id = rec.id.clone();
                blocking(move || reconcile::fill::end(&inner, &id)).await??;
            }
            Ok(())
        }
        .await;
        if let Err(e) = filled {
            // Nothing half-created stays behind.
            fill.take();
            self.inner.store.set_desired(&rec.id, State::Deleted)?;
            reconcile::reconcile(&self.inner, &rec.id).await;
            return Err(e);
        }
        drop(fill);
        reconcile::reconcile(&self.inner, &rec.id).await;
        // Its volume may have come from the pool: make the next one.
        crate::volume_pool::refill_soon(&self.inner);
        let sb = self.get_by_id(&rec.id)?;
        if sb.state == State::Error {
            // Nothing half-created stays behind: undo and report.
            self.inner.store.set_desired(&rec.id, State::Deleted)?;
            reconcile::reconcile(&self.inner, &rec.id).await;
            return Err(Error::Conflict(format!(
                "sandbox {} could not be created: {}",
                sb.name, sb.reason
            )));
        }
        if !nets.is_empty() {
            // Its peers learn its name.
            let ids: Vec<String> = nets.iter().map(|n| n.id.clone()).collect();
            crate::networks::refresh_members(&self.inner, &ids).await;
        }
        Ok(sb)
    }

    /// What the saved memory of snapshot `m` was taken of.
    pub(crate) async fn memory_description(
        &self,
        tenant: &str,
        m: &dwell_snapshot::Manifest,
    ) -> Result<crate::memory::Description> {
        let inner = self.inner.clone();
        let (t, m) = (tenant.to_string(), m.clone());
        blocking(move || {
            let ctx = inner.snap_ctx(&t, false, None)?;
            let scratch = inner.data_dir.join("tmp");
            crate::memory::description(&*inner.snapshots, &m, &scratch, &ctx)
        })
        .await?
    }
}
