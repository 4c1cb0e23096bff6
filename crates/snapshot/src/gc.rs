//! Deleting snapshots and collecting chunks that no snapshot references.
//!
//! Both follow the lease rule of `lease.rs`: publish a collector lease, read the live writers'
//! leases, then the manifests, and delete only chunks named by neither. `gc` also waits out a
//! grace period on each chunk's modification time, a second line of defence for writers that do
//! not follow the lease rule (older versions, or a clock far off).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use crate::error::Result;
use crate::lease::{create_leases, still_dead, GcLease, DEFAULT_LEASE_TTL};
use crate::manifest::{ChunkId, Manifest};
use crate::par;
use crate::snapshot;
use crate::store::ChunkStore;

const DELETE_BATCH: usize = 256;

/// How to collect.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Chunks modified more recently than this are kept even when unreferenced (default 60 s).
    pub grace: Duration,
    /// Lease time-to-live (default 10 min); must match the writers'.
    pub lease_ttl: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(60),
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }
}

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Manifests read.
    pub manifests: usize,
    /// Chunks examined.
    pub chunks_examined: usize,
    /// Chunks deleted.
    pub chunks_deleted: usize,
    /// Stored bytes freed.
    pub bytes_freed: u64,
    /// Unreferenced chunks kept because a snapshot being written names them.
    pub kept_leased: usize,
    /// Unreferenced chunks kept because they are younger than the grace period.
    pub kept_young: usize,
    /// Leases of crashed writers removed.
    pub dead_leases_removed: usize,
}

/// Removes every chunk that no manifest and no live writer references.
pub fn gc(store: &dyn ChunkStore, opts: &GcOptions) -> Result<GcReport> {
    sweep(store, opts, None)
}

/// Deletes snapshot `id` (only if it belongs to `tenant`, when given) and those of its chunks
/// that no other snapshot and no live writer references. The manifest goes first, so a crash
/// midway leaves only unreferenced chunks, which `gc` removes later.
pub fn delete(
    store: &dyn ChunkStore,
    id: &str,
    tenant: Option<&str>,
    opts: &GcOptions,
) -> Result<GcReport> {
    let m = snapshot::load(store, id, tenant)?;
    store.delete(&Manifest::key_for(id))?;
    let only = m.chunk_ids();
    // The deleted snapshot's chunks need no grace: a writer relying on them holds a lease.
    let opts = GcOptions {
        grace: Duration::ZERO,
        ..opts.clone()
    };
    sweep(store, &opts, Some(&only))
}

fn sweep(
    store: &dyn ChunkStore,
    opts: &GcOptions,
    only: Option<&BTreeSet<ChunkId>>,
) -> Result<GcReport> {
    let mut report = GcReport::default();
    let mut lease = GcLease::acquire(store, opts.lease_ttl)?;
    // Leases strictly before manifests (see lease.rs).
    let (leased, dead) = create_leases(store, opts.lease_ttl)?;
    let mut referenced = BTreeSet::new();
    for m in snapshot::list(store, None)? {
        report.manifests += 1;
        referenced.extend(m.chunk_ids());
    }
    let candidates: Vec<crate::store::ObjectInfo> = match only {
        None => store
            .list("chunks/")?
            .into_iter()
            .filter(|o| ChunkId::from_key(&o.key).is_some())
            .collect(),
        Some(ids) => {
            let mut v = Vec::new();
            for id in ids {
                if let Some(o) = store.head(&id.key())? {
                    v.push(o);
                }
            }
            v
        }
    };
    report.chunks_examined = candidates.len();
    let now = SystemTime::now();
    let mut doomed = Vec::new();
    for o in candidates {
        let id = ChunkId::from_key(&o.key).expect("filtered above");
        if referenced.contains(&id) {
            continue;
        }
        if leased.contains(&id) {
            report.kept_leased += 1;
            continue;
        }
        let age = now.duration_since(o.modified).unwrap_or_default();
        if age < opts.grace {
            report.kept_young += 1;
            continue;
        }
        doomed.push(o);
    }
    for batch in doomed.chunks(DELETE_BATCH) {
        lease.refresh()?;
        par::map(batch, store.parallelism(), |o| store.delete(&o.key))?;
        report.chunks_deleted += batch.len();
        report.bytes_freed += batch.iter().map(|o| o.size).sum::<u64>();
    }
    if only.is_none() {
        for k in dead {
            if still_dead(store, &k, opts.lease_ttl)? {
                store.delete(&k)?;
                report.dead_leases_removed += 1;
            }
        }
        store.cleanup_tmp(opts.grace.max(opts.lease_ttl))?;
    }
    Ok(report)
}
