//! The control plane's context: what every operation and every
//! reconciler step reads (the store, the runtimes, volumes, images,
//! settings) and the small per-sandbox bookkeeping they share (locks,
//! cached runtime configs, open streams). Data and bookkeeping only: the
//! operations are in [`crate::controller`]'s modules and [`crate::reconcile`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dwell_proto::AgentClient;
use dwell_runtime::Runtime;
use dwell_storage::{ImageStore, VolumeManager};
use dwell_store::Store;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::model::{HostLimits, Record};
use crate::policy::PolicyArgs;

pub(crate) struct Context {
    /// This context, for what must outlive a borrow of it (wake hooks).
    pub(crate) me: std::sync::Weak<Context>,
    /// Idle sandboxes doze after this long (see [`crate::doze`]); None:
    /// never.
    pub(crate) doze_after: Mutex<Option<Duration>>,
    /// What the doze timer knows of each sandbox.
    pub(crate) dozing: crate::doze_book::Dozing,
    /// Registry mirrors and plain-HTTP hosts (set by the daemon at start).
    pub(crate) registry: Mutex<crate::registry::RegistrySettings>,
    /// Where pulled image blobs are shared with other daemons (the object
    /// store, when the daemon keeps snapshots in one).
    pub(crate) image_share: Mutex<Option<Arc<dyn dwell_snapshot::ChunkStore>>>,
    pub(crate) data_dir: PathBuf,
    pub(crate) store: Store,
    pub(crate) runtimes: crate::runtimes::Runtimes,
    pub(crate) volumes: VolumeManager,
    /// Named volumes (`<data dir>/named-volumes`, by record id).
    pub(crate) named: VolumeManager,
    /// Which running sandboxes use each named volume (by volume id): the
    /// volume stays mounted on the host while the set is not empty (see
    /// [`crate::volumes`]).
    pub(crate) named_users: Mutex<HashMap<String, std::collections::BTreeSet<String>>>,
    pub(crate) images: ImageStore,
    pub(crate) agent_binary: PathBuf,
    pub(crate) host: HostLimits,
    pub(crate) resync_every: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) default_policies: PolicyArgs,
    pub(crate) prices: crate::metering::Prices,
    pub(crate) audit_retention: Duration,
    pub(crate) snapshots: Arc<dyn dwell_snapshot::ChunkStore>,
    pub(crate) snapshot_settings: crate::snapshot_settings::SnapshotSettings,
    pub(crate) limits: crate::limits::DaemonLimits,
    /// Progress of snapshot operations in flight, by sandbox.
    pub(crate) progress: crate::progress::Board,
    pub(crate) gc_state: GcState,
    pub(crate) cpu_marks: crate::metering::CpuMarks,
    /// Runtime configs by sandbox id (mirrors `sandboxes/<id>/sandbox.json`).
    pub(crate) configs: Mutex<HashMap<String, dwell_runtime::SandboxConfig>>,
    /// Seals secret env vars; `Err` says why secrets cannot be used.
    pub(crate) sealer: std::result::Result<crate::secrets::Sealer, String>,
    /// Held while a quota is checked and the request recorded, so two
    /// concurrent creates cannot both pass the last free slot.
    pub(crate) quota_lock: tokio::sync::Mutex<()>,
    /// Storage held by named-volume work still running outside
    /// `quota_lock` (a create, a create from a snapshot, a resize): by
    /// key (`create:<tenant>/<name>`, `resize:<volume id>`), the tenant
    /// and its bytes. The quota check counts them, so the slow part (a
    /// restore, e2fsck + resize2fs) never holds the lock every tenant's
    /// create and start wait on.
    pub(crate) quota_pending: Mutex<HashMap<String, (String, u64)>>,
    /// Named volumes under slow maintenance (a resize, a restore in
    /// place): no sandbox may mount them meanwhile, and they are not
    /// unmounted under the work (see [`crate::volumes`]).
    pub(crate) named_busy: Mutex<std::collections::HashSet<String>>,
    /// Open exec/attach streams per sandbox: a sandbox with one is not idle.
    pub(crate) streams: Mutex<HashMap<String, usize>>,
    /// When activity was last written per sandbox (to write at most once a
    /// second).
    pub(crate) touched: Mutex<HashMap<String, i64>>,
    /// One lock per sandbox: transitions of a sandbox never overlap.
    pub(crate) locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Open agent connections, by sandbox id.
    pub(crate) agents: tokio::sync::Mutex<HashMap<String, AgentClient>>,
    /// Sandboxes woken on use since the daemon started, by tenant and the
    /// state they were woken from (`paused`, `hibernated`).
    pub(crate) wakes: Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
    /// The port proxy's settings and redeemed login links.
    pub(crate) ports: crate::ports::PortState,
    /// The DNS resolver of NAT sandboxes (None: not served, as in tests).
    pub(crate) dns: Option<Arc<dwell_dns::Resolver>>,
    /// Egress rules of NAT sandboxes created without rules of their own
    /// whose tenant has no defaults (`serve --allow-out/--deny-out`).
    pub(crate) default_egress: dwell_runtime::host::egress::EgressRules,
    /// Bumped whenever an SSH key is removed (see
    /// [`crate::Controller::ssh_keys_changed`]).
    pub(crate) ssh_keys_changed: tokio::sync::watch::Sender<u64>,
    /// What agents were told about, and said of, their services.
    pub(crate) services: crate::service_book::Bookkeeping,
    /// Builds running per tenant and the build limits.
    pub(crate) builds: Mutex<crate::build::BuildSlots>,
    /// Tells the deadline timer ([`crate::reconcile::deadlines`]) which
    /// sandboxes' deadlines may have moved.
    pub(crate) deadlines: crate::deadline_wakes::DeadlineWakes,
    /// This daemon as a node of a cluster (unset on a single node): see
    /// [`crate::cluster`].
    pub(crate) cluster: std::sync::OnceLock<crate::cluster::Membership>,
    /// Backup settings (see [`crate::backup`]).
    pub(crate) backups: crate::backup_settings::Backups,
}

impl Context {
    /// The live sandboxes this daemon looks after: all of them on a single
    /// node, those it owns in a cluster. Background passes walk these.
    pub(crate) fn own_sandboxes(&self) -> Result<Vec<Record>> {
        let recs = self
            .store
            .list_sandboxes::<crate::model::SandboxSpec>(None)?;
        let Some(m) = self.cluster.get() else {
            return Ok(recs);
        };
        Ok(recs
            .into_iter()
            .filter(|r| m.owns(r.node.as_deref()))
            .collect())
    }

    pub(crate) fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    pub(crate) fn configs(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, dwell_runtime::SandboxConfig>> {
        self.configs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn streams_open(&self, id: &str) -> bool {
        let m = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        m.get(id).copied().unwrap_or(0) > 0
    }

    /// Record activity, at most one write a second per sandbox.
    pub(crate) fn touch(&self, id: &str) {
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
    pub(crate) fn runtime_of(&self, id: &str) -> crate::error::Result<Arc<dyn Runtime>> {
        let rec: Record = self
            .store
            .get_sandbox(id)?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        self.runtimes.get(rec.runtime.as_str())
    }

    /// The state dir of sandbox `id` (see [`crate::state_dir`]).
    pub(crate) fn state_dir(&self, id: &str) -> PathBuf {
        crate::state_dir::path(&self.data_dir, id)
    }
}

/// When the last snapshot-store collection started, and whether one runs
/// now (see [`crate::snapshot_gc`]).
#[derive(Default)]
pub(crate) struct GcState {
    pub(crate) last_ms: std::sync::atomic::AtomicI64,
    pub(crate) running: std::sync::atomic::AtomicBool,
}

/// Run blocking work (syscalls, mkfs, SQLite) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a worker thread failed: {e}")))
}
