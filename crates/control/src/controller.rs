//! The control plane's façade: [`Controller`], the operations behind the
//! API. Each request writes the desired state and then reconciles that one
//! sandbox right away, so the caller learns the outcome (and any error) in
//! the same request; the background loop in [`crate::reconcile`] retries
//! and repairs drift.
//!
//! The operations live one group per module, each an `impl Controller`
//! over the shared [`Context`]: [`create`], [`lifecycle`] (start, stop,
//! pause, resume, hibernate, archive, delete), [`snapshot`], [`fork`], [`diff`],
//! [`views`] (reads, inspect, metrics), [`activity`] (touch, streams,
//! keepalive, policies), [`tenants`] (limits, quotas, usage), [`networks`]
//! (private networks and their members), [`access`]
//! (API keys, audit, lookups for the gateways), [`credentials`],
//! [`agent`], [`cluster`] (joining a cluster, nodes, placement, owners) and
//! [`moves`] (moving sandboxes between nodes).

mod access;
mod activity;
mod agent;
mod agent_link;
mod build;
mod cluster;
mod create;
mod credentials;
mod diff;
mod fork;
mod images;
mod lifecycle;
mod moves;
mod networks;
mod ports;
mod service;
pub(crate) mod snapshot;
mod tenants;
mod views;
mod volumes;
mod wake;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dwell_runtime::Kind;
use dwell_storage::{ImageStore, VolumeManager};
use dwell_store::Store;

use crate::clock::Clock;
use crate::context::{blocking, Context};
use crate::model::{HostLimits, Mode, Sandbox};
use crate::policy::PolicyArgs;
use crate::reconcile;

pub use crate::cluster::{AgentLink, Elsewhere};
pub use activity::{EgressChange, StreamGuard};

/// How the daemon wires a controller.
pub struct ControllerOptions {
    /// Root of everything the daemon keeps (`/var/lib/dwell`).
    pub data_dir: PathBuf,
    pub store: Store,
    /// Every runtime the daemon offers, by kind: the runtime, or why this
    /// host cannot run it. At least one must be available.
    pub runtimes: Vec<crate::runtimes::Offered>,
    /// The runtime of sandboxes created without one (when unavailable, the
    /// first available one is, with a warning).
    pub default_isolation: Kind,
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
    /// The DNS resolver of NAT sandboxes (egress domain rules, peer
    /// names); None serves no DNS (tests without networks).
    pub dns: Option<Arc<dwell_dns::Resolver>>,
    /// Egress rules of NAT sandboxes that give none and whose tenant has
    /// no defaults.
    pub default_egress: dwell_runtime::host::egress::EgressRules,
}

/// The control plane. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    pub(crate) inner: Arc<Context>,
}

/// How long the daemon's start waits for the first reconcile pass before
/// it serves anyway (see [`Controller::start_background`]).
pub const RECOVERY_WAIT: Duration = Duration::from_secs(5);

impl Controller {
    pub fn new(opts: ControllerOptions) -> Controller {
        let named =
            VolumeManager::with_kind(opts.data_dir.join(crate::volumes::DIR), opts.volumes.kind())
                .with_max_size(dwell_storage::MAX_NAMED_VOLUME_SIZE)
                .without_template_cache()
                .with_nosuid();
        Controller {
            inner: Arc::new_cyclic(|me| Context {
                me: me.clone(),
                doze_after: Mutex::new(None),
                dozing: Default::default(),
                image_share: Mutex::new(None),
                registry: Mutex::new(crate::registry::RegistrySettings {
                    parallel: 4,
                    ..Default::default()
                }),
                sealer: crate::secrets::Sealer::load_or_create(&opts.data_dir.join("secret.key"))
                    .map_err(|e| format!("the daemon's secret key is unusable: {e}")),
                data_dir: opts.data_dir,
                store: {
                    let clock = opts.clock.clone();
                    opts.store.with_clock(move || clock.now_ms())
                },
                runtimes: crate::runtimes::Runtimes::choose(opts.runtimes, opts.default_isolation),
                named,
                named_users: Mutex::new(HashMap::new()),
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
                quota_pending: Default::default(),
                named_busy: Default::default(),
                streams: Mutex::new(HashMap::new()),
                touched: Mutex::new(HashMap::new()),
                locks: Mutex::new(HashMap::new()),
                agents: tokio::sync::Mutex::new(HashMap::new()),
                wakes: Mutex::new(Default::default()),
                ports: Default::default(),
                dns: opts.dns,
                default_egress: opts.default_egress,
                ssh_keys_changed: tokio::sync::watch::channel(0).0,
                services: Default::default(),
                builds: Default::default(),
                deadlines: Default::default(),
                cluster: Default::default(),
                backups: Default::default(),
            }),
        }
    }

    /// Doze idle sandboxes after this long on runtimes whose idle
    /// sandboxes cost CPU (None: never; see [`crate::doze`]). Takes effect
    /// at [`Controller::start`].
    pub fn set_doze_after(&self, after: Option<Duration>) {
        *self
            .inner
            .doze_after
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = after;
    }

    /// The shortest `backup_every` and what becomes of a lost node's
    /// sandboxes (see [`crate::backup`]).
    pub fn set_backup_settings(&self, s: crate::backup::BackupSettings) {
        self.inner.backups.set(s)
    }

    /// How many sandboxes doze right now, and how many times a call has
    /// woken one since the daemon started.
    pub fn doze_counts(&self) -> (usize, u64) {
        (self.inner.dozing.count(), self.inner.dozing.wakes())
    }

    /// Sets registry mirrors and plain-HTTP hosts for pulls.
    pub fn set_registry_settings(&self, s: crate::registry::RegistrySettings) {
        *self
            .inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// Where snapshots (and shared image blobs) go.
    pub fn snapshot_store(&self) -> Arc<dyn dwell_snapshot::ChunkStore> {
        self.inner.snapshots.clone()
    }

    /// Shares pulled image blobs through `store` (an object store other
    /// daemons use too).
    pub fn set_image_share(&self, store: Option<Arc<dyn dwell_snapshot::ChunkStore>>) {
        *self
            .inner
            .image_share
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = store;
    }

    pub(crate) fn image_share(&self) -> Option<Arc<dyn dwell_snapshot::ChunkStore>> {
        self.inner
            .image_share
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The registry settings pulls use.
    pub fn registry_settings(&self) -> crate::registry::RegistrySettings {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The image store.
    pub fn images(&self) -> &ImageStore {
        &self.inner.images
    }

    /// The metadata store, for the E2B layer's own records (templates
    /// and their builds); sandbox records are written only through the
    /// controller's operations.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The daemon's data directory (`--data-dir`), under which a layer
    /// keeps its own files in a directory of its own.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.data_dir
    }

    /// The DNS resolver of NAT sandboxes, if the daemon serves one (to
    /// install a [`dwell_dns::PeerNames`] hook).
    pub fn dns(&self) -> Option<&Arc<dwell_dns::Resolver>> {
        self.inner.dns.as_ref()
    }

    /// The warm pools of the daemon's runtimes (by runtime name).
    pub fn warm_pools(&self) -> Vec<(&'static str, dwell_runtime::gvisor::pool::PoolStatus)> {
        self.inner
            .runtimes
            .available()
            .iter()
            .filter_map(|r| r.warm_pool().map(|p| (r.name(), p)))
            .collect()
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
        // What builds interrupted by the last stop left (in the background:
        // deleting sandboxes waits for their recovery).
        {
            let ctl = self.clone();
            let started = self.inner.clock.now_ms();
            tokio::spawn(async move { ctl.sweep_build_leftovers(started).await });
        }
        {
            let inner = self.inner.clone();
            blocking(move || {
                crate::thaw::thaw_all(&inner);
                crate::volumes::remove_unrecorded(&inner);
                reconcile::hibernate::sweep_discarded(&inner);
            })
            .await
            .ok();
        }
        // The pool of ready volumes, beside the first pass.
        tokio::spawn(crate::volume_pool::fill(self.inner.clone()));
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
                 (listing sandboxes shows those still in a transition)",
                RECOVERY_WAIT.as_secs()
            );
        }
        {
            // The agents' service status, in a loop of its own: an agent
            // lives in its sandbox and may stall, which must never hold up
            // the reconcile passes (policies, metering) of every tenant.
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(inner.resync_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let pass = inner.clone();
                    if let Err(e) =
                        tokio::spawn(async move { crate::service::sweep_all(&pass).await }).await
                    {
                        tracing::error!("a service sweep failed: {e}; the next one runs as usual");
                    }
                }
            });
        }
        // This node's lease, renewed while the daemon runs.
        tokio::spawn(crate::cluster::node::heartbeats(self.inner.clone()));
        // Policies fire at their deadlines, not only at the sweeps.
        tokio::spawn(reconcile::deadlines::timer(self.inner.clone()));
        // Idle sandboxes of runtimes that cost CPU while idle doze.
        tokio::spawn(crate::doze::timer(self.inner.clone()));
        // Sandboxes with `backup_every` are backed up by their owner.
        tokio::spawn(crate::backup::timer(self.inner.clone()));
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

    /// The daemon's per-sandbox ceilings and default quota.
    pub fn limits(&self) -> &crate::limits::DaemonLimits {
        &self.inner.limits
    }

    /// Run one sweep now: policies and drift (tests use this with a manual
    /// clock).
    pub async fn sweep(&self) {
        reconcile::resync_all(&self.inner).await;
        crate::service::sweep_all(&self.inner).await;
    }

    /// Whether a sandbox is ephemeral.
    pub fn is_ephemeral(sb: &Sandbox) -> bool {
        sb.mode == Mode::Ephemeral
    }
}
