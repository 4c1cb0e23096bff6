//! The operations behind the API. Each writes the desired state and then
//! reconciles that one sandbox right away, so the caller learns the outcome
//! (and any error) in the same request; the background loop in
//! [`crate::reconcile`] retries and repairs drift.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dwell_proto::AgentClient;
use dwell_runtime::Runtime;
use dwell_storage::{ImageStore, VolumeManager};
use dwell_store::{Event, Store};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::model::{
    validate_name, CreateRequest, HostLimits, Mode, Record, Sandbox, SandboxSpec, State, VolumeView,
};
use crate::policy::{Policies, PolicyArgs};
use crate::reconcile;

/// How the daemon wires a controller.
pub struct ControllerOptions {
    /// Root of everything the daemon keeps (`/var/lib/dwell`).
    pub data_dir: PathBuf,
    pub store: Store,
    /// The namespace runtime.
    pub runtime: Arc<dyn Runtime>,
    /// The gVisor runtime, or why this host cannot run it.
    pub gvisor: std::result::Result<Arc<dyn Runtime>, String>,
    /// The runtime of sandboxes created without one (`ns` or `gvisor`).
    pub default_isolation: String,
    pub volumes: VolumeManager,
    pub images: ImageStore,
    /// The static agent binary started as PID 1 in every sandbox.
    pub agent_binary: PathBuf,
    /// How often every sandbox is observed to catch drift (and policies
    /// are evaluated).
    pub resync_every: Duration,
    /// "Now" for policies.
    pub clock: Arc<dyn Clock>,
    /// Policies given to sandboxes that do not set their own.
    pub default_policies: PolicyArgs,
    /// Prices for usage reports.
    pub prices: crate::metering::Prices,
    /// How long audit entries are kept.
    pub audit_retention: Duration,
    /// Where snapshots go (a local directory by default).
    pub snapshots: Arc<dyn dwell_snapshot::ChunkStore>,
    /// Snapshot encryption and garbage collection.
    pub snapshot_settings: crate::snapshot_settings::SnapshotSettings,
    /// Per-sandbox ceilings and the quota of tenants without a record.
    pub limits: crate::limits::DaemonLimits,
}

/// The control plane. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub data_dir: PathBuf,
    pub store: Store,
    pub runtimes: crate::runtimes::Runtimes,
    pub volumes: VolumeManager,
    pub images: ImageStore,
    pub agent_binary: PathBuf,
    pub host: HostLimits,
    pub resync_every: Duration,
    pub clock: Arc<dyn Clock>,
    pub default_policies: PolicyArgs,
    pub prices: crate::metering::Prices,
    pub audit_retention: Duration,
    pub snapshots: Arc<dyn dwell_snapshot::ChunkStore>,
    pub snapshot_settings: crate::snapshot_settings::SnapshotSettings,
    pub limits: crate::limits::DaemonLimits,
    /// Progress of snapshot operations in flight, by sandbox.
    pub progress: crate::progress::Board,
    pub gc_state: crate::snapshot_gc::GcState,
    pub cpu_marks: crate::metering::CpuMarks,
    /// Runtime configs by sandbox id (mirrors `sandboxes/<id>/sandbox.json`).
    configs: Mutex<HashMap<String, dwell_runtime::SandboxConfig>>,
    /// Seals secret env vars; `Err` says why secrets cannot be used.
    pub sealer: std::result::Result<crate::secrets::Sealer, String>,
    /// Held while a quota is checked and the request recorded, so two
    /// concurrent creates cannot both pass the last free slot.
    quota_lock: tokio::sync::Mutex<()>,
    /// Open exec/attach streams per sandbox: a sandbox with one is not idle.
    streams: Mutex<HashMap<String, usize>>,
    /// When activity was last written per sandbox (to write at most once a
    /// second).
    touched: Mutex<HashMap<String, i64>>,
    /// One lock per sandbox: transitions of a sandbox never overlap.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Open agent connections, by sandbox id.
    agents: tokio::sync::Mutex<HashMap<String, AgentClient>>,
}

impl Inner {
    pub fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    pub fn configs(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, dwell_runtime::SandboxConfig>> {
        self.configs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn streams_open(&self, id: &str) -> bool {
        let m = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        m.get(id).copied().unwrap_or(0) > 0
    }

    /// Record activity, at most one write a second per sandbox.
    pub fn touch(&self, id: &str) {
        let now = self.clock.now_ms();
        {
            let mut t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            if t.get(id).is_some_and(|last| now - last < 1000) {
                return;
            }
            t.insert(id.to_string(), now);
        }
        if let Err(e) = self.store.touch(id, now) {
            tracing::warn!(sandbox = id, "cannot record activity: {e}");
        }
    }

    /// The runtime of sandbox `id` (as its record names it).
    pub fn runtime_of(&self, id: &str) -> crate::error::Result<Arc<dyn Runtime>> {
        let rec: Record = self
            .store
            .get_sandbox(id)?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        self.runtimes.get(rec.runtime.as_str())
    }

    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("sandboxes").join(id)
    }

    /// Where a gVisor sandbox's agent listens on the host (in its run dir);
    /// only looked at, never connected to by path (see [`Self::connect_agent`]).
    pub fn agent_socket(&self, id: &str) -> PathBuf {
        self.state_dir(id).join("run/agent.sock")
    }

    pub async fn forget_agent(&self, id: &str) {
        self.agents.lock().await.remove(id);
    }

    /// Connect to a sandbox's agent and keep the connection for later
    /// calls. The cache lock is not held while connecting, so one slow or
    /// hung agent never delays calls to the others.
    ///
    /// The one way the daemon reaches an agent: the runtime opens the
    /// socket safely and checks the peer is the sandbox's
    /// ([`Runtime::connect_agent`]), then the handshake proves the
    /// sandbox's agent key both ways, so a connection that reaches another
    /// sandbox's agent fails closed.
    pub async fn connect_agent(
        &self,
        id: &str,
    ) -> std::result::Result<AgentClient, dwell_proto::Error> {
        let unreachable = |e: String| dwell_proto::Error::Unreachable(e);
        let cfg = reconcile::config_of(self, id).map_err(|e| unreachable(e.to_string()))?;
        let runtime = self
            .runtime_of(id)
            .map_err(|e| unreachable(e.to_string()))?;
        let key = match &cfg.agent_key {
            Some(k) => Some(dwell_proto::AgentKey::from_hex(k).map_err(|e| {
                unreachable(format!(
                    "the config of sandbox {id} has a bad agent key: {e}"
                ))
            })?),
            None => None,
        };
        let std_stream = tokio::time::timeout(
            dwell_proto::client::CONNECT_TIMEOUT,
            tokio::task::spawn_blocking(move || runtime.connect_agent(&cfg)),
        )
        .await
        .map_err(|_| unreachable(format!("connecting to the agent of sandbox {id} timed out")))?
        .map_err(|e| unreachable(format!("a worker thread failed: {e}")))?
        .map_err(|e| unreachable(format!("sandbox {id}: {e} (is the sandbox running?)")))?;
        let stream = std_stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(std_stream))
            .map_err(|e| unreachable(format!("sandbox {id}: {e}")))?;
        let peer = dwell_proto::Peer {
            sandbox: id.to_string(),
            key,
        };
        let client = AgentClient::from_stream_to(stream, &peer).await?;
        self.agents
            .lock()
            .await
            .insert(id.to_string(), client.clone());
        Ok(client)
    }

    /// The cached connection to sandbox `id`'s agent while it is up, or a
    /// new one.
    pub async fn agent_client(
        &self,
        id: &str,
    ) -> std::result::Result<AgentClient, dwell_proto::Error> {
        if let Some(c) = self.agents.lock().await.get(id) {
            if c.is_connected() {
                return Ok(c.clone());
            }
        }
        self.connect_agent(id).await
    }

    /// Connect to a freshly started sandbox's agent now, so its first exec
    /// does not pay for the connection and handshake. Best effort.
    pub async fn preconnect_agent(&self, id: &str) {
        let _ = self.connect_agent(id).await;
    }
}

/// How long the daemon's start waits for the first reconcile pass before
/// it serves anyway (see [`Controller::start_background`]).
pub const RECOVERY_WAIT: Duration = Duration::from_secs(5);

impl Controller {
    pub fn new(opts: ControllerOptions) -> Controller {
        Controller {
            inner: Arc::new(Inner {
                sealer: crate::secrets::Sealer::load_or_create(&opts.data_dir.join("secret.key"))
                    .map_err(|e| format!("the daemon's secret key is unusable: {e}")),
                data_dir: opts.data_dir,
                store: {
                    let clock = opts.clock.clone();
                    opts.store.with_clock(move || clock.now_ms())
                },
                runtimes: crate::runtimes::Runtimes::new(
                    opts.runtime.clone(),
                    opts.gvisor.clone(),
                    &opts.default_isolation,
                )
                .unwrap_or_else(|e| {
                    tracing::warn!("{e}; new sandboxes default to the namespace runtime");
                    crate::runtimes::Runtimes::new(opts.runtime, opts.gvisor, "ns")
                        .expect("the namespace runtime is always available")
                }),
                volumes: opts.volumes,
                images: opts.images,
                agent_binary: opts.agent_binary,
                host: HostLimits::detect(),
                resync_every: opts.resync_every,
                clock: opts.clock,
                default_policies: opts.default_policies,
                prices: opts.prices,
                audit_retention: opts.audit_retention,
                snapshots: opts.snapshots,
                snapshot_settings: opts.snapshot_settings,
                limits: opts.limits,
                progress: Default::default(),
                gc_state: Default::default(),
                cpu_marks: Default::default(),
                configs: Mutex::new(HashMap::new()),
                quota_lock: tokio::sync::Mutex::new(()),
                streams: Mutex::new(HashMap::new()),
                touched: Mutex::new(HashMap::new()),
                locks: Mutex::new(HashMap::new()),
                agents: tokio::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The image store.
    pub fn images(&self) -> &ImageStore {
        &self.inner.images
    }

    /// The default runtime's name.
    pub fn runtime_name(&self) -> &'static str {
        self.inner.runtimes.default_name()
    }

    /// Reconcile every live sandbox once (at daemon start: adopt what runs,
    /// finish half-done work) and then keep doing so in the background.
    ///
    /// Returns once that first pass is done, or after [`RECOVERY_WAIT`]
    /// with the pass still going: finishing an interrupted archive or
    /// restore moves the whole volume, and the daemon must not stay
    /// unreachable meanwhile. Lifecycle requests for a sandbox still being
    /// recovered wait for it (the per-sandbox lock); reads show its state.
    pub async fn start_background(&self) {
        {
            let inner = self.inner.clone();
            blocking(move || {
                crate::thaw::thaw_all(&inner);
                reconcile::hibernate::sweep_discarded(&inner);
            })
            .await
            .ok();
        }
        let inner = self.inner.clone();
        let mut first = tokio::spawn(async move {
            reconcile::resync_all(&inner).await;
            let gone = blocking(move || crate::agents::prune(&inner))
                .await
                .unwrap_or_default();
            if !gone.is_empty() {
                tracing::info!("deleted {} agent binaries no sandbox uses", gone.len());
            }
        });
        let waited = tokio::time::timeout(RECOVERY_WAIT, &mut first).await;
        let done = waited.is_ok();
        if let Ok(Err(e)) = waited {
            tracing::error!("the first reconcile pass failed: {e}; the periodic passes go on");
        }
        if !done {
            tracing::info!(
                "recovery of interrupted work is still running after {} s; serving meanwhile \
                 (`dwell ls` shows the sandboxes still in a transition)",
                RECOVERY_WAIT.as_secs()
            );
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if !done {
                // (A finished JoinHandle must not be polled again.)
                if let Err(e) = first.await {
                    tracing::error!(
                        "the first reconcile pass failed: {e}; the periodic passes go on"
                    );
                }
            }
            let mut tick = tokio::time::interval(inner.resync_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                // Each pass in a task of its own: a panic in one (a bug)
                // is logged and the next pass runs, instead of ending the
                // loop and with it every policy and the metering.
                let pass = inner.clone();
                if let Err(e) =
                    tokio::spawn(async move { reconcile::resync_all(&pass).await }).await
                {
                    tracing::error!("a reconcile pass failed: {e}; the next one runs as usual");
                }
            }
        });
    }

    /// Create a sandbox and bring it up. Returns once it runs (or failed).
    pub async fn create(&self, tenant: &str, req: CreateRequest) -> Result<Sandbox> {
        let mut spec = req.to_spec(&self.inner.host)?;
        self.inner.limits.ceilings.clamp_defaults(&req, &mut spec);
        // From a hibernated gVisor sandbox: a memory-snapshot template.
        let template = match &req.from {
            Some(f) => self
                .inner
                .store
                .find_sandbox(tenant, f)?
                .filter(|r: &Record| r.runtime.as_str() == crate::runtimes::GVISOR),
            None => None,
        };
        if let Some(t) = &template {
            crate::templates::check(t)?;
            // The same rules as a snapshot with memory: the template's
            // image, runtime and network; its resources unless asked.
            crate::memory::apply(&crate::memory::Description::of(t)?, &req, &mut spec)?;
            spec.disk_bytes = t.spec.disk_bytes;
        }
        // From a snapshot: its volume size wins over --disk.
        let from = match &req.from {
            Some(_) if template.is_some() => None,
            Some(snap) => {
                let store = self.inner.snapshots.clone();
                let (t, s) = (tenant.to_string(), snap.clone());
                let m = blocking(move || crate::snapshots::find(&*store, &t, &s)).await??;
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
                n.clone()
            }
            None => format!("sandbox-{}", &new_id()[..6]),
        };
        let image = match (&warm, &template) {
            (Some(d), _) => d.image.clone(),
            // A template's copy runs the template's image (its config is
            // copied as is).
            (None, Some(t)) => t.image.clone(),
            (None, None) => req.image.clone().unwrap_or_else(|| "host".to_string()),
        };
        // Resolve the image now so a typo fails before anything is made.
        {
            let inner = self.inner.clone();
            let image = image.clone();
            blocking(move || inner.images.get(&image).map(|_| ())).await??;
        }
        let mode = req.mode.unwrap_or_default();
        let runtime = match (&req.runtime, &template) {
            (_, Some(_)) => crate::runtimes::GVISOR,
            _ if warm.is_some() => crate::runtimes::GVISOR,
            (Some(r), None) => crate::runtimes::canonical(r)?,
            (None, None) => self.inner.runtimes.default_name(),
        };
        // A runtime this host lacks fails now, with how to get it.
        self.inner.runtimes.get(runtime)?;
        let _quota = self.inner.quota_lock.lock().await;
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
            runtime: dwell_store::RuntimeName::new(runtime),
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
                        let mut cfg = reconcile::build_config(
                            &inner, &id, &rec2.name, &rec2.spec, &img, upper,
                        )?;
                        if let Some(agent) = agent {
                            cfg.agent_binary = agent;
                        }
                        reconcile::save_config(&inner, &cfg)?;
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
        Ok(sb)
    }

    /// What the saved memory of snapshot `m` was taken of.
    async fn memory_description(
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

    fn get_by_id(&self, id: &str) -> Result<Sandbox> {
        let rec = self
            .inner
            .store
            .get_sandbox(id)?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        self.view(&rec)
    }

    fn record(&self, tenant: &str, id_or_name: &str) -> Result<Record> {
        self.inner
            .store
            .find_sandbox(tenant, id_or_name)?
            .ok_or_else(|| Error::NotFound(id_or_name.to_string()))
    }

    /// A sandbox by id or name.
    pub fn get(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        self.view(&self.record(tenant, id_or_name)?)
    }

    fn view(&self, rec: &Record) -> Result<Sandbox> {
        let mut sb = Sandbox::from_record(rec);
        sb.archive = crate::archive::read_ref(&self.inner, &sb.id);
        if sb.state == State::Hibernated {
            sb.saved_state_bytes = reconcile::hibernate::saved_bytes(&self.inner, &sb.id);
        }
        if self.inner.streams_open(&sb.id) {
            sb.schedule = crate::policy::schedule(rec, &sb.spec.policies, true);
        }
        Ok(sb)
    }

    /// The secret variables of a sandbox, opened, for the exec requests
    /// sent to its agent (never stored or shown elsewhere).
    pub fn secret_env(&self, id: &str) -> Result<std::collections::BTreeMap<String, String>> {
        let rec: Record = self
            .inner
            .store
            .get_sandbox(id)?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        match &rec.spec.sealed_env {
            None => Ok(Default::default()),
            Some(sealed) => self
                .inner
                .sealer
                .as_ref()
                .map_err(|e| Error::Internal(e.clone()))?
                .open(sealed),
        }
    }

    /// The access token of a sandbox's in-sandbox API (E2B's "envd access
    /// token"), derived from the daemon key and the sandbox id.
    pub fn sandbox_token(&self, id: &str) -> Result<String> {
        Ok(self.sealer()?.sandbox_token(id))
    }

    /// Whether `token` is the access token of sandbox `id`.
    pub fn sandbox_token_matches(&self, id: &str, token: &str) -> bool {
        self.sealer().is_ok_and(|s| s.token_matches(id, token))
    }

    fn sealer(&self) -> Result<&crate::secrets::Sealer> {
        self.inner
            .sealer
            .as_ref()
            .map_err(|e| Error::Internal(e.clone()))
    }

    /// What a sandbox changed relative to its image: files added, changed
    /// and deleted (with sizes) and packages installed, removed and changed.
    pub async fn diff(&self, tenant: &str, id_or_name: &str) -> Result<crate::diff::Drift> {
        let sb = self.get(tenant, id_or_name)?;
        let lock = self.inner.lock_for(&sb.id);
        let _g = lock.lock().await;
        let inner = self.inner.clone();
        let (id, image) = (sb.id.clone(), sb.image.clone());
        blocking(move || -> Result<crate::diff::Drift> {
            let image = inner.images.get(&image)?;
            let info = inner.volumes.info(&id)?;
            // A stopped sandbox's volume is mounted just for the walk.
            let was_mounted = info.mounted;
            let root = inner.volumes.mount(&id)?;
            let mut layers = vec![crate::diff::Layer {
                upper: root.join("root/upper"),
                lowers: image.layers.clone(),
                at: "/".into(),
            }];
            for h in &image.host_dirs {
                let name = dwell_runtime::ns::layout::host_dir_name(h);
                layers.push(crate::diff::Layer {
                    upper: root.join("host").join(name).join("upper"),
                    lowers: vec![h.clone()],
                    at: h.clone(),
                });
            }
            // What the sandbox planted (a symlink, a fifo, a huge file) is
            // its own doing: a conflict that names it, not a daemon failure.
            let d = crate::diff::drift(&layers).map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::InvalidData
                | std::io::ErrorKind::Other => {
                    Error::Conflict(format!("cannot diff sandbox {id}: {e}"))
                }
                _ => Error::Internal(format!("reading the volume of {id}: {e}")),
            });
            if !was_mounted {
                let _ = inner.volumes.unmount(&id);
            }
            d
        })
        .await?
    }

    /// Snapshot a sandbox's volume. A running sandbox is frozen (processes
    /// and filesystem) while its data is read.
    pub async fn snapshot_create(
        &self,
        tenant: &str,
        id_or_name: &str,
        name: Option<String>,
    ) -> Result<dwell_snapshot::Manifest> {
        let sb = self.get(tenant, id_or_name)?;
        if sb.state == State::Archived {
            return Err(Error::Conflict(format!(
                "sandbox {} is archived: its files are already in the snapshot store; `dwell start {}` brings it back, then snapshot it",
                sb.name, sb.name
            )));
        }
        if let Some(n) = &name {
            validate_name(n).map_err(|_| {
                Error::invalid(
                    "name",
                    format!("{n:?}: use 1-63 lowercase letters, digits, '-', '_' or '.'"),
                )
            })?;
        }
        // A snapshot adds at most the volume's data (and saved memory):
        // refuse one that cannot fit.
        let used = self
            .inner
            .volumes
            .info(&sb.id)
            .map(|v| v.used_bytes)
            .unwrap_or(0)
            + reconcile::hibernate::saved_bytes(&self.inner, &sb.id).unwrap_or(0);
        self.check_quota(
            tenant,
            &crate::quota::Held {
                storage: used,
                ..Default::default()
            },
        )
        .await?;
        let lock = self.inner.lock_for(&sb.id);
        let _g = lock.lock().await;
        // Re-read under the lock: a transition (a resume, an archive) may
        // have finished since, and the capture depends on the state.
        let sb = self.get_by_id(&sb.id)?;
        if sb.state == State::Archived {
            return Err(Error::Conflict(format!(
                "sandbox {} was archived meanwhile: `dwell start {}` brings it back, then snapshot it",
                sb.name, sb.name
            )));
        }
        let inner = self.inner.clone();
        let (tenant, id, state) = (tenant.to_string(), sb.id.clone(), sb.state);
        let m = blocking(move || -> Result<dwell_snapshot::Manifest> {
            let info = inner.volumes.info(&id)?;
            let image = info.image.clone().ok_or_else(|| {
                Error::Conflict(
                    "snapshots need loop-backed volumes; this sandbox has a directory volume"
                        .into(),
                )
            })?;
            let parent = crate::snapshots::list(&*inner.snapshots, &tenant)?
                .into_iter()
                .filter(|m| m.source.sandbox.as_deref() == Some(id.as_str()))
                .max_by(|a, b| a.created_at.cmp(&b.created_at));
            let tracker = inner.progress.track(&id, "snapshot");
            let mut ctx = inner.snap_ctx(&tenant, true, Some(&tracker))?;
            if state != State::Running && state != State::Paused {
                // Nothing runs: the volume is read as it is. A hibernated
                // sandbox's saved memory goes with it, so the snapshot
                // starts warm (`create --from`), here or on another host.
                let warm = state == State::Hibernated && reconcile::hibernate::saved(&inner, &id);
                if warm {
                    let rec = inner
                        .store
                        .get_sandbox(&id)?
                        .ok_or_else(|| Error::NotFound(id.clone()))?;
                    ctx.attachments = crate::memory::attachments(&inner, &rec)?;
                }
                let m = crate::snapshots::capture(
                    &*inner.snapshots,
                    &image,
                    &tenant,
                    &id,
                    name.as_deref(),
                    parent.as_ref(),
                    None,
                    &ctx,
                );
                if warm {
                    crate::memory::capture_done(&inner, &id);
                }
                return m;
            }
            // Freeze the processes, then the filesystem (which flushes it);
            // reflink the image if the data dir allows it, or else read it
            // while frozen; thaw both whatever happened.
            let cfg = reconcile::config_of(&inner, &id)?;
            let runtime = inner.runtime_of(&id)?;
            crate::snapshots::preflush(&info.path, &image);
            let t0 = std::time::Instant::now();
            if state == State::Running {
                runtime.pause(&cfg)?;
            }
            use crate::snapshots::Frozen;
            let frozen = crate::snapshots::FsFreeze::new(&info.path).and_then(|_frozen| {
                match crate::snapshots::reflink_clone(&image)? {
                    Some(clone) => Ok(Frozen::Cloned(clone)),
                    None => crate::snapshots::capture(
                        &*inner.snapshots,
                        &image,
                        &tenant,
                        &id,
                        name.as_deref(),
                        parent.as_ref(),
                        None,
                        &ctx,
                    )
                    .map(|m| Frozen::Captured(Box::new(m))),
                }
            });
            if state == State::Running {
                runtime.resume(&cfg)?;
            }
            let freeze = t0.elapsed();
            match frozen? {
                Frozen::Captured(mut m) => {
                    m.freeze_us = Some(freeze.as_micros() as u64);
                    Ok(*m)
                }
                Frozen::Cloned(clone) => crate::snapshots::capture_clone(
                    &*inner.snapshots,
                    clone,
                    &tenant,
                    &id,
                    name.as_deref(),
                    parent.as_ref(),
                    freeze,
                    ctx,
                ),
            }
        })
        .await??;
        self.inner.store.add_event(
            &sb.id,
            "snapshot",
            &format!(
                "snapshot {} taken ({} bytes new{})",
                m.id,
                m.sizes.uploaded,
                m.freeze_us
                    .map(|us| format!(", frozen {:.1} ms", us as f64 / 1000.0))
                    .unwrap_or_default()
            ),
        )?;
        Ok(m)
    }

    /// Snapshots of a tenant, oldest first, optionally of one sandbox.
    pub async fn snapshots(
        &self,
        tenant: &str,
        sandbox: Option<&str>,
    ) -> Result<Vec<dwell_snapshot::Manifest>> {
        let filter = match sandbox {
            Some(s) => Some(self.get(tenant, s)?.id),
            None => None,
        };
        let store = self.inner.snapshots.clone();
        let t = tenant.to_string();
        let mut all = blocking(move || crate::snapshots::list(&*store, &t)).await??;
        if let Some(id) = filter {
            all.retain(|m| m.source.sandbox.as_deref() == Some(id.as_str()));
        }
        // Archives belong to their sandbox (`inspect` shows them).
        all.retain(|m| !m.labels.contains_key(crate::archive::LABEL));
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(all)
    }

    /// A snapshot by id or name.
    pub async fn snapshot(
        &self,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<dwell_snapshot::Manifest> {
        let store = self.inner.snapshots.clone();
        let (t, s) = (tenant.to_string(), id_or_name.to_string());
        blocking(move || crate::snapshots::find(&*store, &t, &s)).await?
    }

    /// Delete a snapshot and the chunks no other snapshot uses.
    pub async fn snapshot_delete(
        &self,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<dwell_snapshot::GcReport> {
        let m = self.snapshot(tenant, id_or_name).await?;
        let store = self.inner.snapshots.clone();
        let t = tenant.to_string();
        blocking(move || crate::snapshots::delete(&*store, &t, &m.id)).await?
    }

    /// Roll a sandbox back to a snapshot: stop it, replace its volume with
    /// the snapshot's content (verified chunk by chunk), and start it again
    /// if it was running.
    pub async fn restore(&self, tenant: &str, id_or_name: &str, snapshot: &str) -> Result<Sandbox> {
        let sb = self.get(tenant, id_or_name)?;
        if sb.state == State::Archived {
            return Err(Error::Conflict(format!(
                "sandbox {} is archived; start it first (`dwell start {}`), then restore",
                sb.name, sb.name
            )));
        }
        if sb.state == State::Hibernated {
            // Its saved memory holds the state of its current files.
            return Err(Error::Conflict(format!(
                "sandbox {} is hibernated and its saved memory belongs to its current files; \
                 `dwell resume {}` (or `dwell stop {}`, which discards the memory) first, then \
                 restore; `dwell create --from SNAPSHOT` starts a snapshot's memory warm",
                sb.name, sb.name, sb.name
            )));
        }
        let m = self.snapshot(tenant, snapshot).await?;
        let was_running = matches!(sb.state, State::Running | State::Paused);
        if was_running {
            self.stop(tenant, &sb.id).await?;
        }
        {
            let lock = self.inner.lock_for(&sb.id);
            let _g = lock.lock().await;
            // Checked again under the lock: hibernated (or running) since.
            let now = self.get_by_id(&sb.id)?;
            if !matches!(now.state, State::Stopped | State::Error) {
                return Err(Error::Conflict(format!(
                    "sandbox {} became {} during the restore; run `dwell restore` again",
                    now.name,
                    now.state.as_str()
                )));
            }
            let inner = self.inner.clone();
            let id = sb.id.clone();
            let m2 = m.clone();
            let tenant2 = tenant.to_string();
            blocking(move || -> Result<()> {
                if crate::reconcile::hibernate::saved(&inner, &id) {
                    return Err(Error::Conflict(
                        "the sandbox has saved memory that belongs to its current files; \
                         resume or stop it first"
                            .into(),
                    ));
                }
                inner.volumes.unmount(&id)?;
                let info = inner.volumes.info(&id)?;
                if info.size_bytes != m2.source.volume_size {
                    return Err(Error::Conflict(format!(
                        "snapshot {} is of a {} volume, this sandbox has {}; create a new sandbox from it with `dwell create --from {}`",
                        m2.id,
                        crate::size::format_size(m2.source.volume_size),
                        crate::size::format_size(info.size_bytes),
                        m2.id
                    )));
                }
                let image = info.image.ok_or_else(|| Error::Conflict("snapshots need loop-backed volumes".into()))?;
                let tracker = inner.progress.track(&id, "restore");
                let ctx = inner.snap_ctx(&tenant2, false, Some(&tracker))?;
                crate::snapshots::restore_into(&*inner.snapshots, &m2, &image, &ctx)
            })
            .await??;
            self.inner.store.add_event(
                &sb.id,
                "snapshot",
                &format!("volume restored from snapshot {}", m.id),
            )?;
        }
        if was_running {
            self.start(tenant, &sb.id).await
        } else {
            self.get(tenant, &sb.id)
        }
    }

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

    async fn check_quota(&self, tenant: &str, more: &crate::quota::Held) -> Result<()> {
        let t = self.tenant_limits(tenant)?;
        let mut held = crate::quota::held(&self.inner.store.list_sandboxes(Some(tenant))?);
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
        if self.inner.store.get_tenant(&t.name)?.is_some() {
            return Err(Error::Conflict(format!(
                "tenant {:?} already exists; change its limits with `dwell tenant update`",
                t.name
            )));
        }
        Ok(self.inner.store.insert_tenant(t)?)
    }

    /// Change a tenant's limits.
    pub fn update_tenant(&self, t: &dwell_store::Tenant) -> Result<()> {
        if !self.inner.store.update_tenant(t)? {
            return Err(Error::NotFound(t.name.clone()));
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

    /// The daemon's per-sandbox ceilings and default quota.
    pub fn limits(&self) -> &crate::limits::DaemonLimits {
        &self.inner.limits
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
        for t in self.inner.store.list_tenants()? {
            let recs = by_tenant.remove(&t.name).unwrap_or_default();
            out.push((t, crate::quota::held(&recs), false));
        }
        for (name, recs) in by_tenant {
            let t = self.inner.limits.default_quota.tenant(&name);
            out.push((t, crate::quota::held(&recs), true));
        }
        Ok(out)
    }

    /// Usage and cost since `since` (Unix ms), of one tenant or all.
    pub fn usage(&self, tenant: Option<&str>, since: i64) -> Result<crate::metering::Report> {
        let rows = self.inner.store.usage(tenant, since)?;
        let mut names = HashMap::new();
        for r in &rows {
            if let Some(rec) = self.inner.store.get_sandbox::<SandboxSpec>(&r.sandbox_id)? {
                names.insert(r.sandbox_id.clone(), rec.name);
            }
        }
        Ok(crate::metering::report(
            &rows,
            &names,
            &self.inner.prices,
            since,
        ))
    }

    /// Every live sandbox of every tenant with live kernel stats where it
    /// runs (for `/metrics`).
    pub async fn metrics(&self) -> Result<Vec<(Sandbox, Option<dwell_runtime::Stats>)>> {
        let recs = self.inner.store.list_sandboxes(None)?;
        let inner = self.inner.clone();
        blocking(move || {
            recs.iter()
                .map(Sandbox::from_record)
                .map(|sb| {
                    let stats = matches!(sb.state, State::Running | State::Paused)
                        .then(|| {
                            reconcile::config_of(&inner, &sb.id)
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

    /// Run one sweep now: policies and drift (tests use this with a manual
    /// clock).
    pub async fn sweep(&self) {
        reconcile::resync_all(&self.inner).await;
    }

    /// A sandbox with its volume and live usage.
    pub async fn inspect(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        let mut sb = self.get(tenant, id_or_name)?;
        let inner = self.inner.clone();
        let id = sb.id.clone();
        let running = matches!(sb.state, State::Running | State::Paused);
        let (vol, stats) = blocking(move || {
            let vol = inner.volumes.info(&id).ok();
            let stats = if running {
                reconcile::config_of(&inner, &id)
                    .ok()
                    .and_then(|c| inner.runtime_of(&id).ok()?.stats(&c).ok())
            } else {
                None
            };
            (vol, stats)
        })
        .await?;
        sb.volume = vol.map(|v| VolumeView {
            kind: match v.kind {
                dwell_storage::VolumeKind::Loop => "loop".to_string(),
                dwell_storage::VolumeKind::Directory => "directory".to_string(),
            },
            size_bytes: v.size_bytes,
            used_bytes: v.used_bytes,
            mounted: v.mounted,
            limit_enforced: v.limit_enforced,
        });
        sb.stats = stats;
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

    /// Events of a sandbox after `after` (a sequence number).
    /// Deleted sandboxes keep their events (the audit trail): ask by id.
    pub fn events(&self, tenant: &str, id_or_name: &str, after: i64) -> Result<Vec<Event>> {
        let rec = match self.record(tenant, id_or_name) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => self
                .inner
                .store
                .get_sandbox(id_or_name)?
                .filter(|r| r.tenant == tenant)
                .ok_or_else(|| Error::NotFound(id_or_name.to_string()))?,
            Err(e) => return Err(e),
        };
        Ok(self.inner.store.events(&rec.id, after, 1000)?)
    }

    /// Ask for a state and reconcile towards it; `check` says whether the
    /// request makes sense from the current state.
    async fn transition(
        &self,
        tenant: &str,
        id_or_name: &str,
        desired: State,
        what: &str,
        check: impl FnOnce(&Sandbox) -> Result<()>,
    ) -> Result<Sandbox> {
        let rec = self.record(tenant, id_or_name)?;
        let lock = self.inner.lock_for(&rec.id);
        {
            let _g = lock.lock().await;
            // Re-read under the lock: a concurrent transition may have won.
            let rec = self.record(tenant, &rec.id)?;
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
        let _quota = self.inner.quota_lock.lock().await;
        if matches!(
            sb.state,
            State::Stopped | State::Error | State::Archived | State::Hibernated
        ) {
            self.check_quota(
                tenant,
                &crate::quota::Held {
                    vcpus: sb.spec.vcpus,
                    memory: sb.spec.memory_bytes,
                    ..Default::default()
                },
            )
            .await?;
        }
        self.transition(tenant, id_or_name, State::Running, "start", |sb| {
            match sb.state {
                State::Paused => Err(Error::Conflict(format!(
                    "sandbox {} is paused; resume it with `dwell resume {}`",
                    sb.name, sb.name
                ))),
                _ => Ok(()),
            }
        })
        .await
    }

    /// Stop a sandbox: its processes end; a persistent sandbox keeps its
    /// volume, an ephemeral one is deleted.
    pub async fn stop(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        self.transition(tenant, id_or_name, State::Stopped, "stop", |sb| {
            match sb.state {
                State::Archived => Err(Error::Conflict(format!(
                    "sandbox {} is archived (stopped, its volume in the snapshot store); `dwell start {}` brings it back",
                    sb.name, sb.name
                ))),
                _ => Ok(()),
            }
        })
        .await
    }

    /// Archive a sandbox: stop it, move its volume into the snapshot store
    /// and free it locally (`start` brings it back).
    pub async fn archive(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        self.transition(tenant, id_or_name, State::Archived, "archive", |sb| match (
            sb.mode, sb.state,
        ) {
            (Mode::Ephemeral, _) => Err(Error::Conflict(format!(
                "sandbox {} is ephemeral: its data goes when it stops, there is nothing to archive",
                sb.name
            ))),
            (_, State::Creating) => Err(Error::Conflict(format!(
                "sandbox {} is still being created",
                sb.name
            ))),
            _ => Ok(()),
        })
        .await
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

    /// Collect unreferenced chunks (and archive snapshots nothing points
    /// at) in the snapshot store. Admin only: it spans every tenant.
    pub async fn snapshot_gc(&self) -> Result<crate::snapshot_gc::GcSummary> {
        crate::snapshot_gc::run_now(&self.inner).await
    }

    /// Freeze every process of a running sandbox.
    pub async fn pause(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        self.transition(tenant, id_or_name, State::Paused, "pause", |sb| {
            match sb.state {
                State::Running | State::Paused => Ok(()),
                s => Err(Error::Conflict(format!(
                    "sandbox {} is {}; only a running sandbox can be paused (start it with `dwell start {}`)",
                    sb.name,
                    s.as_str(),
                    sb.name
                ))),
            }
        })
        .await
    }

    /// Thaw a paused sandbox, or restore a hibernated one from disk (or
    /// from its archive, when it was archived while hibernated).
    pub async fn resume(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        let sb = self.get(tenant, id_or_name)?;
        let _quota = self.inner.quota_lock.lock().await;
        if matches!(sb.state, State::Hibernated | State::Archived) {
            // Its memory and vCPUs count again once it runs.
            self.check_quota(
                tenant,
                &crate::quota::Held {
                    vcpus: sb.spec.vcpus,
                    memory: sb.spec.memory_bytes,
                    ..Default::default()
                },
            )
            .await?;
        }
        self.transition(
            tenant,
            id_or_name,
            State::Running,
            "resume",
            |sb| match sb.state {
                State::Paused | State::Running | State::Hibernated => Ok(()),
                // Archived while hibernated: its memory is in the archive.
                State::Archived
                    if crate::archive::read_ref(&self.inner, &sb.id)
                        .is_some_and(|r| r.hibernated) =>
                {
                    Ok(())
                }
                s => Err(Error::Conflict(format!(
                    "sandbox {} is {}, not paused; start it with `dwell start {}`",
                    sb.name,
                    s.as_str(),
                    sb.name
                ))),
            },
        )
        .await
    }

    /// Save a running or paused gVisor sandbox whole to disk (memory,
    /// processes, open files); nothing of it stays on the host until
    /// `resume`.
    pub async fn hibernate(&self, tenant: &str, id_or_name: &str) -> Result<Sandbox> {
        self.transition(tenant, id_or_name, State::Hibernated, "hibernate", |sb| {
            if sb.runtime != crate::runtimes::GVISOR {
                return Err(Error::Runtime(dwell_runtime::not_hibernatable(&sb.runtime)));
            }
            match sb.state {
                State::Running | State::Paused | State::Hibernated => Ok(()),
                s => Err(Error::Conflict(format!(
                    "sandbox {} is {}; only a running or paused sandbox can be hibernated \
                         (start it with `dwell start {}`)",
                    sb.name,
                    s.as_str(),
                    sb.name
                ))),
            }
        })
        .await
    }

    /// Delete a sandbox and wipe its volume. A running sandbox needs
    /// `force`.
    pub async fn delete(&self, tenant: &str, id_or_name: &str, force: bool) -> Result<()> {
        self.transition(
            tenant,
            id_or_name,
            State::Deleted,
            "delete",
            |sb| match sb.state {
                State::Running | State::Paused | State::Creating if !force => {
                    Err(Error::Conflict(format!(
                        "sandbox {} is {}; stop it first or remove it anyway with `dwell rm -f {}`",
                        sb.name,
                        sb.state.as_str(),
                        sb.name
                    )))
                }
                _ => Ok(()),
            },
        )
        .await
        .map(|_| ())
    }

    /// The sandbox (which must be running) and a connection to its agent.
    pub async fn agent(&self, tenant: &str, id_or_name: &str) -> Result<(Sandbox, AgentClient)> {
        let sb = self.get(tenant, id_or_name)?;
        match sb.state {
            State::Running => {}
            State::Paused | State::Hibernated => {
                return Err(Error::Conflict(format!(
                    "sandbox {} is {}; resume it with `dwell resume {}`",
                    sb.name,
                    sb.state.as_str(),
                    sb.name
                )))
            }
            s => {
                return Err(Error::Conflict(format!(
                    "sandbox {} is {}; start it with `dwell start {}`",
                    sb.name,
                    s.as_str(),
                    sb.name
                )))
            }
        }
        let client = self.inner.agent_client(&sb.id).await?;
        Ok((sb, client))
    }

    /// Drop a cached agent connection that failed, so the next call
    /// reconnects (the agent may have been restarted with its sandbox).
    pub async fn agent_failed(&self, id: &str) {
        self.inner.forget_agent(id).await;
    }

    /// Kernel usage counters of a running sandbox.
    pub async fn stats(&self, sb: &Sandbox) -> Result<dwell_runtime::Stats> {
        let inner = self.inner.clone();
        let id = sb.id.clone();
        let runtime = self.inner.runtimes.get(&sb.runtime)?;
        blocking(move || {
            let cfg = reconcile::config_of(&inner, &id)?;
            Ok::<_, Error>(runtime.stats(&cfg)?)
        })
        .await?
    }

    /// Whether a sandbox is ephemeral.
    pub fn is_ephemeral(sb: &Sandbox) -> bool {
        sb.mode == Mode::Ephemeral
    }
}

/// Keeps a sandbox "not idle" while an exec, shell or attach stream is
/// open.
pub struct StreamGuard {
    inner: Arc<Inner>,
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

/// Run blocking work (syscalls, mkfs, SQLite) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a worker thread failed: {e}")))
}
