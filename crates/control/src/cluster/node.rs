//! This node's registration and lease: registered before the first
//! reconcile pass, renewed every third of the lease with what the node
//! holds (for placement), and, on every tick, other nodes whose lease ran
//! out are declared lost (one node wins each declaration).

use std::sync::Arc;

use dwell_store::{NodeLoad, NodeRecord, NodeState};

use crate::context::{blocking, Context};
use crate::error::{Error, Result};
use crate::model::Record;
use crate::transitions::Rules;

/// Every this many heartbeats, sandboxes of lost nodes that no recovery
/// looked at are recovered (see `recovery::recover_leftovers`).
const LEFTOVERS_EVERY: u64 = 30;

/// The dwell version nodes report.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the sandboxes `recs` (this node's) hold.
pub(crate) fn load_of(recs: &[Record]) -> NodeLoad {
    let mut l = NodeLoad::default();
    for r in recs {
        if r.state.holds_compute() {
            l.sandboxes += 1;
            l.allocated_vcpus += r.spec.vcpus;
            l.allocated_memory += r.spec.memory_bytes;
        }
        if r.state != crate::model::State::Archived {
            l.allocated_disk += r.spec.disk_bytes;
        }
    }
    l
}

/// Registers this node; returns what became of its previous incarnation.
pub(crate) fn register(inner: &Context) -> Result<dwell_store::Registration> {
    let m = inner
        .cluster
        .get()
        .ok_or_else(|| Error::Internal("not a node of a cluster".into()))?;
    // Leases are on the cluster's clock (the database's), not this host's.
    let now = inner.store.db_now()?;
    let rec = NodeRecord {
        name: m.opts.node.clone(),
        advertise: m.opts.advertise.clone(),
        labels: m.opts.labels.clone(),
        vcpus: m.opts.capacity.vcpus,
        memory: m.opts.capacity.memory,
        disk: m.opts.capacity.disk,
        load: load_of(&inner.own_sandboxes()?),
        state: NodeState::Up,
        epoch: 0,
        version: VERSION.into(),
        started_at: now,
        heartbeat_at: now,
        lease_until: now,
    };
    let reg = inner.store.register_node(
        &rec,
        &m.opts.instance,
        now + m.opts.lease.as_millis() as i64,
    )?;
    m.set_epoch(reg.epoch);
    tracing::info!(
        node = m.name(),
        epoch = reg.epoch,
        "registered as a node of the cluster ({})",
        match reg.previous {
            None => "new".to_string(),
            Some((state, lease)) if state == NodeState::Lost || lease < now =>
                "back after its lease ended".to_string(),
            Some((state, _)) => format!("restarted, was {}", state.as_str()),
        }
    );
    Ok(reg)
}

/// One heartbeat: renews the lease with the node's load and declares
/// lost the nodes whose lease ended. False when this incarnation lost its
/// lease (another registration of the name, or declared lost).
pub(crate) fn beat(inner: &Context) -> Result<bool> {
    let Some(m) = inner.cluster.get() else {
        return Ok(true);
    };
    let now = inner.store.db_now()?;
    let load = load_of(&inner.own_sandboxes()?);
    let kept = inner.store.heartbeat_node(
        m.name(),
        m.epoch(),
        now + m.opts.lease.as_millis() as i64,
        &load,
    )?;
    // Half a lease of grace after a lease ends: the node itself freezes
    // its sandboxes when its lease ends (see `heartbeats`), before any
    // other node may run them.
    let grace = m.opts.lease.as_millis() as i64 / 2;
    for lost in inner.store.expire_nodes(now - grace)? {
        tracing::warn!(
            node = lost,
            "declared node {lost} lost: its lease ended without a heartbeat"
        );
        // Its sandboxes with a copy in the object store run elsewhere.
        super::recovery::spawn(inner, lost);
    }
    Ok(kept)
}

/// The heartbeat loop of this node.
pub(crate) async fn heartbeats(inner: Arc<Context>) {
    let Some(m) = inner.cluster.get() else {
        return;
    };
    let every = m.opts.lease / 3;
    let lease = m.opts.lease;
    // When this node last renewed its lease, on its own monotonic clock,
    // taken before the heartbeat was sent (the database set the lease
    // from a later instant): past `renewed + lease` another node may
    // declare this one lost and run its sandboxes, so they are frozen
    // here first, without needing the database (see `freeze_all`).
    let mut renewed = std::time::Instant::now();
    // `Some` while fenced: the sandboxes this node froze (maybe none).
    let mut frozen: Option<Vec<String>> = None;
    // A heartbeat still waiting on the database, and when it was sent: it
    // is waited for again, not sent a second time.
    let mut inflight: Option<(tokio::task::JoinHandle<Result<bool>>, std::time::Instant)> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lost = false;
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        if ticks.is_multiple_of(LEFTOVERS_EVERY) && renewed.elapsed() < lease {
            // Lost nodes' sandboxes a recovery missed.
            let pass = inner.clone();
            match blocking(move || super::recovery::recover_leftovers(&pass)).await {
                Ok(Ok(lines)) => lines.iter().for_each(|l| tracing::warn!("{l}")),
                Ok(Err(e)) | Err(e) => tracing::warn!("cannot look for missed recoveries: {e}"),
            }
        }
        let (mut pending, sent) = inflight.take().unwrap_or_else(|| {
            let pass = inner.clone();
            (
                tokio::task::spawn_blocking(move || beat(&pass)),
                std::time::Instant::now(),
            )
        });
        // A database that does not answer must not hold the freeze back:
        // the heartbeat is waited for until the lease runs out (or for a
        // tick, once it has), then the lease is judged without it.
        let now = std::time::Instant::now();
        let deadline = (renewed + lease).max(now + every / 2);
        let answer = match tokio::time::timeout_at(deadline.into(), &mut pending).await {
            Ok(joined) => joined.map_err(|e| Error::Internal(format!("the heartbeat failed: {e}"))),
            Err(_) => {
                tracing::warn!(
                    "a heartbeat has waited on the database for {:?}",
                    sent.elapsed()
                );
                inflight = Some((pending, sent));
                Err(Error::Unavailable(
                    "the database has not answered the heartbeat".into(),
                ))
            }
        };
        match answer {
            Ok(Ok(true)) => {
                lost = false;
                renewed = sent;
                if let Some(ids) = frozen.take() {
                    thaw_all(&inner, ids).await;
                }
            }
            Ok(Ok(false)) => {
                // Declared lost: stale copies stop at once, then the node
                // registers again (see `recovery::rejoin`).
                match super::recovery::rejoin(&inner).await {
                    Ok(true) => {
                        lost = false;
                        renewed = std::time::Instant::now();
                        // Copies now owned elsewhere were stopped by the
                        // rejoin; the rest are this node's again.
                        if let Some(ids) = frozen.take() {
                            thaw_all(&inner, ids).await;
                        }
                    }
                    Ok(false) if !lost => {
                        lost = true;
                        tracing::error!(
                            "this node's lease is no longer its own: another daemon registered \
                             the name {}; give each daemon its own --node-name",
                            inner.cluster.get().map(|m| m.name()).unwrap_or("")
                        );
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!("cannot register again yet: {e}; retrying"),
                }
            }
            Ok(Err(e)) | Err(e) => tracing::warn!("heartbeat failed: {e}; retrying"),
        }
        if frozen.is_none() && renewed.elapsed() >= lease {
            let pass = inner.clone();
            let ids = blocking(move || freeze_all(&pass))
                .await
                .unwrap_or_default();
            tracing::error!(
                "no heartbeat of this node reached the database for {lease:?} (its lease): froze \
                 its {} running sandboxes until one does, since another node may run them now",
                ids.len()
            );
            frozen = Some(ids);
        }
    }
}

/// Freezes every running sandbox on this host (the runtimes' own view:
/// no database needed) and marks the node fenced; the ids frozen.
/// Blocking.
fn freeze_all(inner: &Context) -> Vec<String> {
    if let Some(m) = inner.cluster.get() {
        m.set_fenced(true);
    }
    let mut frozen = Vec::new();
    for runtime in inner.runtimes.available() {
        for id in runtime.list_host().unwrap_or_default() {
            let Ok(cfg) = crate::reconcile::config::config_of(inner, &id) else {
                continue;
            };
            // Only what runs: a sandbox paused already stays paused after.
            if !matches!(runtime.observe(&cfg), Ok(dwell_runtime::Observed::Running)) {
                continue;
            }
            match runtime.pause(&cfg) {
                Ok(()) => frozen.push(id),
                Err(e) => tracing::error!(sandbox = id, "cannot freeze it: {e}"),
            }
        }
    }
    frozen
}

/// Thaws what [`freeze_all`] froze that still has a config here (a copy
/// fenced meanwhile is gone), and lifts the fence.
async fn thaw_all(inner: &Arc<Context>, ids: Vec<String>) {
    let pass = inner.clone();
    let n = ids.len();
    let _ = blocking(move || {
        let on_host: Vec<_> = pass
            .runtimes
            .available()
            .into_iter()
            .map(|r| {
                let ids = r.list_host().unwrap_or_default();
                (r, ids)
            })
            .collect();
        for id in ids {
            let Ok(cfg) = crate::reconcile::config::config_of(&pass, &id) else {
                continue;
            };
            for (runtime, here) in &on_host {
                if here.contains(&id) {
                    if let Err(e) = runtime.resume(&cfg) {
                        tracing::error!(sandbox = id, "cannot thaw it: {e}");
                    }
                }
            }
        }
        if let Some(m) = pass.cluster.get() {
            m.set_fenced(false);
        }
    })
    .await;
    tracing::warn!("the lease is this node's again: thawed {n} sandboxes");
}
