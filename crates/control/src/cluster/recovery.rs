//! When a node is lost, and when it comes back.
//!
//! Recovery: the node that declares another lost ([`super::node::beat`],
//! exactly one node declares each) walks the lost node's live sandboxes.
//! With `--on-node-loss restart` (the default), each that has a copy in
//! the object store (its newest backup or archive, see
//! [`crate::backup::newest_copy`]) is handed to a node [`placement`]
//! picks, in one statement that also makes it `archived` (its volume is
//! that copy now), keeps its desired state (running stays running; any
//! other becomes archived: a paused or hibernated sandbox's memory was on
//! the lost node) and says in its reason what was lost (the changes after
//! the copy was taken). The new owner takes it over at its next reconcile
//! pass and starts it from the copy; a backup survives being restored
//! from. The others stay with the lost node, their reason and an event
//! say so, and requests for them are answered 503 naming the node (see
//! `Controller::owner`) until it comes back.
//!
//! Fencing: a sandbox runs on one node at most. A node stops every local
//! copy of a sandbox that another node owns (it was recovered elsewhere
//! while this node was lost, or this node lost its lease) and sets its
//! volume aside under `<data-dir>/fenced/<id>-<time>` (never deleted: it
//! may hold changes made after the copy the sandbox runs from now). It does
//! so before it registers at start (so before it serves), at once when a
//! heartbeat finds its lease gone (and then registers again, with a new
//! epoch), and in every orphans sweep.

use std::sync::Arc;

use dwell_store::NodeState;

use crate::archive::ArchiveRef;
use crate::backup::{self, OnNodeLoss};
use crate::cluster::handoff::Handoff;
use crate::cluster::placement::{self, Needs};
use crate::context::{blocking, Context};
use crate::error::Result;
use crate::model::{SandboxSpec, State};

/// Words every recovery reason holds (a start keeps such a reason).
pub(crate) const RESTORED: &str = "; restored from the ";

/// Whether `reason` is a recovery's.
pub(crate) fn is_recovery(reason: &str) -> bool {
    reason.starts_with("node ") && reason.contains(RESTORED)
}

/// Whether snapshot `m` was taken before `ms` (Unix; None: never). Its
/// time is to the second: only a second wholly before `ms` is older (one
/// taken in the same second may well be later).
fn older_than(m: &dwell_snapshot::Manifest, ms: Option<i64>) -> bool {
    let Some(ms) = ms else { return false };
    match humantime::parse_rfc3339_weak(&m.created_at) {
        Ok(t) => t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| (d.as_secs() as i64 + 1) * 1000 <= ms)
            .unwrap_or(true),
        // A time that does not parse: not trusted as current.
        Err(_) => true,
    }
}

/// `ms` (Unix) as RFC 3339, to the second.
fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Recovers the sandboxes of node `lost` in the background (called by
/// the node that declared it lost).
pub(crate) fn spawn(inner: &Context, lost: String) {
    let (Some(inner), Ok(rt)) = (inner.me.upgrade(), tokio::runtime::Handle::try_current()) else {
        return;
    };
    rt.spawn(async move {
        let i = inner.clone();
        let name = lost.clone();
        match blocking(move || recover(&i, &name)).await {
            Ok(Ok(lines)) => {
                for l in lines {
                    tracing::warn!(node = lost, "{l}");
                }
            }
            Ok(Err(e)) | Err(e) => tracing::error!(
                node = lost,
                "cannot recover the sandboxes of lost node {lost}: {e}; they stay with it"
            ),
        }
    });
}

/// What becomes of each live sandbox of node `lost` (see the module
/// docs); one line per sandbox. Blocking.
pub(crate) fn recover(inner: &Context, lost: &str) -> Result<Vec<String>> {
    let ids = inner.store.sandboxes_of_node(lost)?;
    recover_ids(inner, lost, ids)
}

/// How long after its lease ended a lost node's sandboxes that no
/// recovery looked at are taken as missed (see [`recover_leftovers`]).
const LEFTOVER_AFTER_MS: i64 = 30_000;

/// The sandboxes of lost nodes that no recovery looked at (the node that
/// declared their node lost stopped before it did): recovered now, by
/// whichever node gets there (a sandbox changes hands once: only from its
/// lost owner). One line per sandbox. Blocking.
pub(crate) fn recover_leftovers(inner: &Context) -> Result<Vec<String>> {
    // Leases are on the cluster's clock.
    let now = inner.store.db_now()?;
    let mut lines = Vec::new();
    for n in inner.store.list_nodes()? {
        if n.state != NodeState::Lost || n.lease_until + LEFTOVER_AFTER_MS > now {
            continue;
        }
        let seen = format!("node {} lost", n.name);
        let mut ids = Vec::new();
        for id in inner.store.sandboxes_of_node(&n.name)? {
            if let Some(r) = inner.store.get_sandbox::<SandboxSpec>(&id)? {
                if !r.reason.starts_with(&seen) {
                    ids.push(id);
                }
            }
        }
        lines.extend(recover_ids(inner, &n.name, ids)?);
    }
    Ok(lines)
}

/// [`recover`] of the sandboxes `ids` of node `lost`.
fn recover_ids(inner: &Context, lost: &str, ids: Vec<String>) -> Result<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let policy = inner.backups.get().on_node_loss;
    let now = inner.store.db_now()?;
    let at = rfc3339(now);
    let copies = match policy {
        OnNodeLoss::Restart => dwell_snapshot::list(&*inner.snapshots, None)?,
        OnNodeLoss::Keep => Vec::new(),
    };
    let mut nodes = inner.store.list_nodes()?;
    let mut lines = Vec::new();
    for id in ids {
        let Some(rec) = inner.store.get_sandbox::<SandboxSpec>(&id)? else {
            continue;
        };
        if rec.state == State::Deleted {
            continue;
        }
        let stays = |why: String| -> Result<String> {
            inner
                .store
                .set_state_with_event(&id, rec.state, &why, "node", &why)?;
            Ok(format!("sandbox {} ({id}): {why}", rec.name))
        };
        // An archive taken before the sandbox's last start is a leftover
        // (a start restores from its archive and deletes it, best effort):
        // not a copy of what ran since.
        let current: Vec<dwell_snapshot::Manifest> = copies
            .iter()
            .filter(|m| backup::is_backup(m) || !older_than(m, rec.started_at))
            .cloned()
            .collect();
        let copy = backup::newest_copy(&current, &id);
        let Some(m) = copy.filter(|_| policy == OnNodeLoss::Restart) else {
            lines.push(stays(match policy {
                OnNodeLoss::Keep => format!(
                    "node {lost} lost at {at}; kept with it (serve --on-node-loss keep): it runs \
                     again when {lost} comes back"
                ),
                OnNodeLoss::Restart => format!(
                    "node {lost} lost at {at}; no backup: it runs again when {lost} comes back"
                ),
            })?);
            continue;
        };
        let kind = if backup::is_backup(m) {
            "backup"
        } else {
            "archive"
        };
        let needs = Needs {
            vcpus: rec.spec.vcpus,
            memory: rec.spec.memory_bytes,
            disk: rec.spec.disk_bytes,
            selector: rec.spec.node_selector.clone(),
        };
        let target = match placement::choose(&nodes, &needs, now) {
            Ok(t) => t.name.clone(),
            Err(e) => {
                lines.push(stays(format!(
                    "node {lost} lost at {at}; its {kind} of {} cannot run elsewhere ({e}); it \
                     runs again when {lost} comes back",
                    m.created_at
                ))?);
                continue;
            }
        };
        let why = format!(
            "node {lost} lost at {at}{RESTORED}{kind} of {}: changes after it are lost",
            m.created_at
        );
        let handoff = Handoff {
            archive: ArchiveRef::of(m),
            from: lost.to_string(),
            why: why.clone(),
        }
        .encode()?;
        // Running stays running; the memory of a paused or hibernated
        // sandbox was on the lost node: it waits archived.
        let desired = if rec.desired_state == State::Running {
            State::Running
        } else {
            State::Archived
        };
        if inner
            .store
            .recover_sandbox(&id, lost, &target, &handoff, desired, &why)?
        {
            // What it holds counts on its new node for the next choices.
            if let Some(n) = nodes.iter_mut().find(|n| n.name == target) {
                n.load.sandboxes += 1;
                n.load.allocated_vcpus += needs.vcpus;
                n.load.allocated_memory += needs.memory;
                n.load.allocated_disk += needs.disk;
            }
            lines.push(format!(
                "sandbox {} ({id}) handed to node {target}: {why}",
                rec.name
            ));
        }
    }
    Ok(lines)
}

/// The stale copies on this node: ids of sandboxes with something here
/// (processes, a volume, a state dir) whose live record names another
/// node as owner.
fn stale_ids(inner: &Context, me: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for runtime in inner.runtimes.available() {
        ids.extend(runtime.list_host().unwrap_or_default());
    }
    ids.extend(inner.volumes.list().unwrap_or_default());
    if let Ok(rd) = std::fs::read_dir(inner.data_dir.join("sandboxes")) {
        ids.extend(
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
    }
    ids.sort();
    ids.dedup();
    ids.retain(|id| stale(inner, me, id));
    ids
}

fn stale(inner: &Context, me: &str, id: &str) -> bool {
    match inner.store.get_sandbox::<SandboxSpec>(id) {
        Ok(Some(r)) => r.state != State::Deleted && r.node.as_deref().is_some_and(|n| n != me),
        _ => false,
    }
}

/// Stops this node's stale copies and sets their volumes aside (see the
/// module docs); one line per copy. Blocking; takes each sandbox's lock.
pub(crate) fn fence(inner: &Context) -> Vec<String> {
    let Some(m) = inner.cluster.get() else {
        return Vec::new();
    };
    let me = m.name().to_string();
    let mut lines = Vec::new();
    for id in stale_ids(inner, &me) {
        let _g = inner.lock_for(&id).blocking_lock_owned();
        // Judged again under the lock.
        if !stale(inner, &me, &id) {
            continue;
        }
        let owner = inner
            .store
            .sandbox_node(&id)
            .ok()
            .flatten()
            .unwrap_or_default();
        // Only a state dir left (a sandbox moved off this node as usual):
        // removed without a word.
        let running = inner
            .runtimes
            .available()
            .iter()
            .any(|r| r.list_host().unwrap_or_default().contains(&id));
        if !running && inner.volumes.info(&id).is_err() {
            // What a start may have left under it (mounts) first: the
            // removal never crosses a mount.
            let bare = crate::reconcile::config::bare_config(inner, &id);
            for kind in dwell_runtime::Kind::ALL {
                kind.release_leftovers(&bare);
            }
            crate::reconcile::config::forget(inner, &id);
            if let Err(e) = dwell_hostfs::remove_tree(inner.state_dir(&id)) {
                tracing::warn!(
                    sandbox = id,
                    "cannot remove the state dir of a moved sandbox: {e}"
                );
            }
            continue;
        }
        let line = fence_one(inner, &me, &id, &owner);
        let _ = inner.store.add_event(&id, "node", &line);
        tracing::warn!(sandbox = id, "{line}");
        lines.push(format!("{id}: {line}"));
    }
    lines
}

fn fence_one(inner: &Context, me: &str, id: &str, owner: &str) -> String {
    let cfg = crate::reconcile::config::config_of(inner, id)
        .unwrap_or_else(|_| crate::reconcile::config::bare_config(inner, id));
    let mut problems = Vec::new();
    for runtime in inner.runtimes.available() {
        if let Err(e) = runtime.stop(&cfg) {
            problems.push(format!("stopping its {} processes: {e}", runtime.name()));
        }
    }
    for kind in dwell_runtime::Kind::ALL {
        kind.release_leftovers(&cfg);
    }
    crate::reconcile::config::forget(inner, id);
    let mut kept = None;
    if inner.volumes.info(id).is_ok() {
        if let Err(e) = inner.volumes.unmount(id) {
            problems.push(format!("unmounting its volume: {e}"));
        }
        let aside = inner
            .data_dir
            .join("fenced")
            .join(format!("{id}-{}", inner.clock.now_ms()));
        let moved = std::fs::create_dir_all(aside.parent().expect("fenced dir"))
            .and_then(|_| std::fs::rename(inner.volumes.root().join(id), &aside));
        match moved {
            Ok(()) => kept = Some(aside),
            Err(e) => problems.push(format!(
                "setting its volume aside at {}: {e} (it stays where it is)",
                aside.display()
            )),
        }
    }
    // An archive pointer of this node's copy names nothing it may use.
    let _ = crate::archive::remove_ref(inner, id);
    let _ = dwell_hostfs::remove_tree(inner.state_dir(id));
    format!(
        "node {me} stopped its stale copy: the sandbox is owned by node {owner} now{}{}",
        match &kept {
            Some(p) => format!(
                "; this node's volume is kept aside at {} (never deleted: it may hold \
                 changes made after the copy the sandbox runs from; remove it by hand once \
                 you have what you need)",
                p.display()
            ),
            None => String::new(),
        },
        if problems.is_empty() {
            String::new()
        } else {
            format!("; could not finish: {}", problems.join("; "))
        }
    )
}

/// After this node registered again: its sandboxes whose reason says it
/// was lost say it came back (they run here again: the reconcile passes
/// adopt them). Blocking.
pub(crate) fn came_back(inner: &Context) {
    let Some(m) = inner.cluster.get() else {
        return;
    };
    let lost = format!("node {} lost", m.name());
    let Ok(recs) = inner.own_sandboxes() else {
        return;
    };
    let why = format!(
        "node {} came back at {}; it runs here again",
        m.name(),
        rfc3339(inner.clock.now_ms())
    );
    for r in recs.iter().filter(|r| r.reason.starts_with(&lost)) {
        let _ = inner
            .store
            .set_state_with_event(&r.id, r.state, &why, "node", &why);
    }
}

/// After a heartbeat found this node's lease gone: if the cluster declared
/// it lost, fence, then register again (a new epoch). When another daemon
/// registered the same name, nothing is done but say so.
pub(crate) async fn rejoin(inner: &Arc<Context>) -> Result<bool> {
    let i = inner.clone();
    blocking(move || -> Result<bool> {
        let Some(m) = i.cluster.get() else {
            return Ok(true);
        };
        let Some(node) = i.store.get_node(m.name())? else {
            return Ok(false);
        };
        if node.state != NodeState::Lost && node.epoch != m.epoch() {
            return Ok(false);
        }
        m.set_fenced(true);
        let lines = fence(&i);
        tracing::warn!(
            "this node was declared lost; stopped {} stale copies, registering again",
            lines.len()
        );
        super::node::register(&i)?;
        fence(&i);
        came_back(&i);
        m.set_fenced(false);
        Ok(true)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_from_before_the_last_start_is_no_copy() {
        let m: dwell_snapshot::Manifest = serde_json::from_value(serde_json::json!({
            "version": 2,
            "id": "a",
            "created_at": "2026-12-05T10:00:00Z",
            "tenant": "default",
            "source": {"volume_size": 1048576},
            "chunk_size": 4194304,
            "compression": "zstd",
            "sizes": {"total": 0, "data": 0, "stored": 0, "uploaded": 0},
            "extents": []
        }))
        .expect("a manifest");
        let at = humantime::parse_rfc3339("2026-12-05T10:00:00Z")
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(older_than(&m, Some(at + 1000)));
        // The same second: maybe later than the start, so not older.
        assert!(!older_than(&m, Some(at + 999)));
        assert!(!older_than(&m, Some(at)));
        assert!(!older_than(&m, None));
    }

    #[test]
    fn recovery_reasons_are_told_from_others() {
        let why = format!(
            "node n3 lost at 2026-12-05T10:00:00Z{RESTORED}backup of 2026-12-05T09:59:00Z: \
             changes after it are lost"
        );
        assert!(is_recovery(&why));
        assert!(!is_recovery(
            "node n3 lost at T; no backup: it runs again when n3 comes back"
        ));
        assert!(!is_recovery("restored from its archive and started"));
        assert_eq!(rfc3339(1_000), "1970-01-01T00:00:01Z");
    }
}
