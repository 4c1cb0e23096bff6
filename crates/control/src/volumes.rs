//! Named volumes: a tenant's volumes that live on their own (`dwell volume
//! create NAME --size 20G`) and are bound into sandboxes at create
//! (`--volume NAME:/path[:ro]`).
//!
//! Each is a volume of the daemon's second [`dwell_storage::VolumeManager`]
//! under `<data dir>/named-volumes`, keyed by its record's id (a loop-mounted
//! ext4 image with a hard size limit, 32 MiB to 64 TiB). The ext4 is mounted
//! once on the host, at `named-volumes/<id>/mnt`, while at least one sandbox
//! that uses it runs, and each such sandbox gets a bind of that mount (the
//! namespace runtime an idmapped one, gVisor an OCI bind mount its gofer
//! serves). So several sandboxes share one filesystem read-write: writes
//! are visible to all at once, with no locking beyond what programs do
//! themselves (flock and fcntl locks work between namespace sandboxes on
//! the one ext4; gVisor sandboxes see each other's data through the gofer).
//!
//! Who uses a volume is in the sandboxes' specs; which running sandboxes
//! hold its mount is counted in memory ([`attach`] at start and restore,
//! [`detach`] at stop, hibernation and delete) and re-derived from the
//! records by every reconcile pass ([`resync`]), which also unmounts a
//! volume no running sandbox holds (after a daemon restart, say). The
//! daemon never reads or writes inside a volume: what sandboxes plant
//! there (symlinks to `/`, say) is never followed on the host.

use std::collections::BTreeSet;

use dwell_runtime::Bind;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::Record;
use crate::transitions::Rules;

pub use crate::volume_spec::*;

/// A named volume as the API shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct NamedVolumeView {
    pub id: String,
    pub name: String,
    /// The size limit in bytes.
    pub size_bytes: u64,
    /// Bytes in use (the filesystem's while mounted, else the image's
    /// allocated blocks).
    pub used_bytes: u64,
    /// Mounted on the host now (a sandbox that uses it runs).
    pub mounted: bool,
    /// Names of the tenant's sandboxes that use it.
    pub used_by: Vec<String>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// The label that marks a snapshot as one of a named volume (its id);
/// `volume` holds the volume's name when it was taken.
pub const SNAPSHOT_LABEL: &str = "volume-of";

/// Refuse a named volume's snapshot where a sandbox's is needed (its
/// image holds files, not a sandbox's overlay layout).
pub(crate) fn not_a_volume_snapshot(m: &dwell_snapshot::Manifest) -> Result<()> {
    if m.labels.contains_key(SNAPSHOT_LABEL) {
        let vol = m.labels.get("volume").cloned().unwrap_or_default();
        return Err(Error::invalid(
            "from",
            format!(
                "snapshot {} is of the named volume {vol:?}, not of a sandbox; restore it with \
                 `dwell volume restore {vol} {}` or make a new volume from it with `dwell volume \
                 create NAME --from {}`",
                m.id, m.id, m.id
            ),
        ));
    }
    Ok(())
}

/// The live sandboxes of `tenant` that name volume `name`, by name.
pub(crate) fn users(inner: &Context, tenant: &str, name: &str) -> Result<Vec<String>> {
    let mut v: Vec<String> = inner
        .store
        .list_sandboxes::<crate::model::SandboxSpec>(Some(tenant))?
        .into_iter()
        .filter(|r| r.spec.volumes.iter().any(|m| m.name == name))
        .map(|r| r.name)
        .collect();
    v.sort();
    Ok(v)
}

/// Storage `tenant`'s running named-volume work holds (see
/// `Context::quota_pending`).
pub(crate) fn pending_bytes(inner: &Context, tenant: &str) -> u64 {
    inner
        .quota_pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter(|(t, _)| t == tenant)
        .map(|(_, b)| *b)
        .sum()
}

/// Storage set aside in `Context::quota_pending` until dropped: the work
/// it was for has then recorded what it made (or failed).
pub(crate) struct Pending {
    inner: std::sync::Arc<Context>,
    key: String,
}

impl Pending {
    /// Sets aside `bytes` of `tenant`'s storage under `key`; `None` when
    /// work under the same key is already running. Called under
    /// `quota_lock`, after the quota check.
    pub(crate) fn reserve(
        inner: &std::sync::Arc<Context>,
        key: String,
        tenant: &str,
        bytes: u64,
    ) -> Option<Pending> {
        let mut p = inner
            .quota_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if p.contains_key(&key) {
            return None;
        }
        p.insert(key.clone(), (tenant.to_string(), bytes));
        Some(Pending {
            inner: inner.clone(),
            key,
        })
    }

    /// Whether work under `key` is running.
    pub(crate) fn running(inner: &Context, key: &str) -> bool {
        inner
            .quota_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.inner
            .quota_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// Marks a named volume busy (see `Context::named_busy`) until dropped.
pub(crate) struct Busy {
    inner: std::sync::Arc<Context>,
    id: String,
}

impl Busy {
    /// Marks volume `id` busy; `None` when it already is. Called with the
    /// users lock held, so no sandbox mounts it in between.
    pub(crate) fn mark(inner: &std::sync::Arc<Context>, id: &str) -> Option<Busy> {
        let mut b = inner.named_busy.lock().unwrap_or_else(|p| p.into_inner());
        b.insert(id.to_string()).then(|| Busy {
            inner: inner.clone(),
            id: id.to_string(),
        })
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.inner
            .named_busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

fn busy(inner: &Context, id: &str) -> bool {
    inner
        .named_busy
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(id)
}

/// Mount the named volumes of `rec` on the host (those not mounted yet)
/// and count it as a user of each; returns the binds for its runtime
/// config. On failure nothing it counted or mounted stays.
pub(crate) fn attach(inner: &Context, rec: &Record) -> Result<Vec<Bind>> {
    let mut binds = Vec::new();
    for m in &rec.spec.volumes {
        let vol = match inner.store.find_volume(&rec.tenant, &m.name) {
            Ok(Some(v)) => v,
            Ok(None) => {
                detach(inner, &rec.id);
                return Err(Error::VolumeNotFound(m.name.clone()));
            }
            Err(e) => {
                detach(inner, &rec.id);
                return Err(e.into());
            }
        };
        let mounted = {
            let mut users = inner.named_users.lock().unwrap_or_else(|p| p.into_inner());
            if busy(inner, &vol.id) {
                drop(users);
                detach(inner, &rec.id);
                return Err(Error::Conflict(format!(
                    "volume {} is being resized or restored; start the sandbox again when that \
                     finishes",
                    m.name
                )));
            }
            users
                .entry(vol.id.clone())
                .or_default()
                .insert(rec.id.clone());
            inner.named.mount(&vol.id)
        };
        match mounted {
            Ok(source) => binds.push(Bind {
                source,
                target: m.path.clone(),
                read_only: m.read_only,
            }),
            Err(e) => {
                detach(inner, &rec.id);
                return Err(e.into());
            }
        }
    }
    Ok(binds)
}

/// Sandbox `id` no longer runs: it stops counting as a user, and each
/// volume it was the last user of is unmounted (lazily: the kernel frees
/// the loop device once the sandbox's copies of the mount are gone).
pub(crate) fn detach(inner: &Context, id: &str) {
    let mut users = inner.named_users.lock().unwrap_or_else(|p| p.into_inner());
    let mut emptied = Vec::new();
    for (vol, set) in users.iter_mut() {
        if set.remove(id) && set.is_empty() {
            emptied.push(vol.clone());
        }
    }
    for vol in emptied {
        users.remove(&vol);
        // (Under a resize it stays: the periodic pass unmounts it later.)
        if busy(inner, &vol) {
            continue;
        }
        if let Err(e) = inner.named.unmount(&vol) {
            tracing::warn!(volume = %vol, "unmounting a named volume no sandbox runs with: {e}");
        }
    }
}

/// Re-derive which running sandboxes hold each named volume from the
/// records (`recs`: every live sandbox), and unmount the volumes none
/// holds. A sandbox in a transition (desired state not reached) keeps
/// what it holds: its start or stop settles it.
pub(crate) fn resync(inner: &Context, recs: &[Record]) {
    let vols = match inner.store.list_volumes(None) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("named volumes: cannot list them: {e}");
            return;
        }
    };
    let mut users = inner.named_users.lock().unwrap_or_else(|p| p.into_inner());
    for v in &vols {
        let holders: BTreeSet<String> = recs
            .iter()
            .filter(|r| r.tenant == v.tenant && r.spec.volumes.iter().any(|m| m.name == v.name))
            .filter(|r| r.state.holds_compute())
            .map(|r| r.id.clone())
            .collect();
        let set = users.entry(v.id.clone()).or_default();
        // (A sandbox in `error` is settled: it no longer runs.)
        set.retain(|id| {
            holders.contains(id)
                || recs.iter().any(|r| {
                    &r.id == id
                        && r.desired_state != r.state
                        && r.state != crate::model::State::Error
                })
        });
        set.extend(holders);
        if set.is_empty() {
            users.remove(&v.id);
            if !busy(inner, &v.id) && inner.named.info(&v.id).is_ok_and(|i| i.mounted) {
                match inner.named.unmount(&v.id) {
                    Ok(()) => tracing::info!(
                        volume = %v.name, tenant = %v.tenant,
                        "unmounted a named volume no running sandbox uses"
                    ),
                    Err(e) => tracing::warn!(volume = %v.name, "unmount: {e}"),
                }
            }
        }
    }
    // Entries of volumes that are gone.
    users.retain(|id, _| vols.iter().any(|v| &v.id == id));
}

/// Remove named volumes whose record is gone (a create or remove cut short
/// by a crash). Run once at daemon start, before requests are served.
pub(crate) fn remove_unrecorded(inner: &Context) {
    let Ok(vols) = inner.store.list_volumes(None) else {
        return;
    };
    for id in inner.named.list().unwrap_or_default() {
        if !vols.iter().any(|v| v.id == id) {
            match inner.named.delete(&id) {
                Ok(()) => tracing::info!(volume = %id, "removed a named volume no record explains"),
                Err(e) => tracing::warn!(volume = %id, "removing an unrecorded named volume: {e}"),
            }
        }
    }
}

/// Charge every named volume's storage since its last mark (its size, as
/// a sandbox's volume is charged), as a usage row of the volume's id.
pub(crate) fn meter(inner: &Context) {
    let Ok(vols) = inner.store.list_volumes(None) else {
        return;
    };
    let now = inner.clock.now_ms();
    // Named volumes live on the node that made them: in a cluster, each
    // node meters those it has (the records are everyone's).
    let here: Option<std::collections::HashSet<String>> = inner
        .cluster
        .get()
        .map(|_| inner.named.list().unwrap_or_default().into_iter().collect());
    for v in vols {
        if here.as_ref().is_some_and(|h| !h.contains(&v.id)) {
            continue;
        }
        let last = match inner.store.volume_metered_at(&v.id) {
            Ok(Some(t)) => t,
            Ok(None) => v.created_at,
            Err(_) => continue,
        };
        let secs = (now - last).max(0) as f64 / 1000.0;
        let gib_s = v.size_bytes as f64 / (1u64 << 30) as f64 * secs;
        if let Err(e) = inner.store.add_volume_usage(&v.id, &v.tenant, now, gib_s) {
            tracing::warn!(volume = %v.id, "metering: {e}");
        }
    }
}

/// The storage a tenant's named volumes hold (their size limits).
pub(crate) fn held_bytes(inner: &Context, tenant: &str) -> Result<u64> {
    Ok(inner
        .store
        .list_volumes(Some(tenant))?
        .iter()
        .map(|v| v.size_bytes)
        .sum())
}
