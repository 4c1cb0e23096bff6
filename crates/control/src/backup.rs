//! Backups: a sandbox created with `backup_every` is snapshotted into the
//! object store that often by the node that owns it, so that it can run
//! again elsewhere when that node is lost (see
//! [`crate::cluster::recovery`]).
//!
//! A backup is an ordinary snapshot labelled `backup-of=<sandbox id>`,
//! hidden from `snapshot ls` like archives. The newest [`KEEP`] of each
//! sandbox are kept (older ones deleted after each new one), each is an
//! event (kind `backup`; the newest such event is the `last_backup_at` that
//! `inspect` shows), and they are deleted with their sandbox (or by the
//! snapshot sweep when that was missed). A backup is taken of a sandbox
//! that runs (or is paused) when the last one is older than its interval,
//! and of a stopped one only when it stopped after its last backup: a
//! stopped volume does not change. Archived and hibernated sandboxes are
//! not backed up (an archive is already a copy in the object store; a
//! hibernated sandbox keeps its last backup). Restoring from a backup
//! (recovery, or a start from an archive pointer naming one) never
//! deletes it: it stays one of the sandbox's newest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dwell_snapshot::Manifest;

use crate::context::{blocking, Context};
use crate::error::{Error, Result};
use crate::model::{Record, SandboxSpec, State};
use crate::transitions::{Request, Rules};

/// The label of backup snapshots; its value is the sandbox id.
pub const LABEL: &str = crate::snapshots::BACKUP_LABEL;

/// Backups kept per sandbox (its newest).
pub const KEEP: usize = 2;

/// The event kind of backups.
const EVENT: &str = "backup";

pub use crate::backup_settings::{BackupSettings, OnNodeLoss, DEFAULT_MIN_EVERY};

/// Refuses a `backup_every` shorter than the daemon allows.
pub(crate) fn check_every(inner: &Context, every_ms: Option<u64>) -> Result<()> {
    let min = inner.backups.get().min_every;
    match every_ms {
        Some(ms) if (ms as u128) < min.as_millis() => Err(Error::invalid(
            "backup_every",
            format!(
                "{} is too often: backups go at most every {} on this daemon (serve \
                 --min-backup-every); give a longer interval or off",
                crate::policy::human(ms),
                crate::policy::human(min.as_millis() as u64)
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether `m` is a backup of `id`, and whether an archive of it.
fn copy_kind(m: &Manifest, id: &str) -> (bool, bool) {
    (
        m.labels.get(LABEL).map(String::as_str) == Some(id),
        m.labels.get(crate::archive::LABEL).map(String::as_str) == Some(id),
    )
}

/// The copy of sandbox `id` to restore it from, of `manifests`: its
/// newest backup or archive; of two taken at the same instant, the
/// archive (it is the volume as the sandbox left it).
pub(crate) fn newest_copy<'a>(manifests: &'a [Manifest], id: &str) -> Option<&'a Manifest> {
    manifests
        .iter()
        .filter(|m| {
            let (b, a) = copy_kind(m, id);
            b || a
        })
        .max_by(|x, y| {
            let ax = copy_kind(x, id).1;
            let ay = copy_kind(y, id).1;
            (&x.created_at, ax, &x.id).cmp(&(&y.created_at, ay, &y.id))
        })
}

/// Whether `m` is a backup (which a restore keeps).
pub(crate) fn is_backup(m: &Manifest) -> bool {
    crate::snapshots::is_backup(m)
}

/// When sandbox `id`'s last backup was taken (Unix ms), from its events.
pub(crate) fn last_at(inner: &Context, id: &str) -> Option<i64> {
    let q = dwell_store::EventQuery {
        kind: Some(EVENT.into()),
        contains: Some(" taken".into()),
        newest_first: true,
        limit: 1,
        ..Default::default()
    };
    match inner.store.find_events(id, &q) {
        Ok(ev) => ev.first().map(|e| e.at),
        Err(e) => {
            tracing::warn!(sandbox = id, "cannot read its backup events: {e}");
            None
        }
    }
}

/// Whether sandbox `rec` is due for a backup at `now`, its last one
/// taken at `last`.
pub(crate) fn due(rec: &Record, last: Option<i64>, now: i64) -> bool {
    let Some(every) = rec.spec.backup_every_ms else {
        return false;
    };
    if !rec.state.allows(Request::Snapshot) {
        return false;
    }
    match rec.state {
        State::Running | State::Paused => last.is_none_or(|l| now - l >= every as i64),
        // A stopped volume changes only by running: one backup after it
        // stopped is enough.
        State::Stopped => last.is_none_or(|l| rec.stopped_at.is_some_and(|s| s > l)),
        _ => false,
    }
}

/// The backup loop of this daemon: every tick, the sandboxes it owns that
/// are due are backed up, one at a time.
pub(crate) async fn timer(inner: Arc<Context>) {
    loop {
        let min = inner.backups.get().min_every;
        let tick = (min / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
        tokio::time::sleep(tick).await;
        let pass = inner.clone();
        if let Err(e) = tokio::spawn(async move { run_pass(&pass).await }).await {
            tracing::error!("a backup pass failed: {e}; the next one runs as usual");
        }
    }
}

async fn run_pass(inner: &Arc<Context>) {
    // Only while this node holds its lease: a node that lost it may no
    // longer own what its records say.
    if let Some(m) = inner.cluster.get() {
        if m.fenced() {
            return;
        }
    }
    let i = inner.clone();
    let recs = match blocking(move || i.own_sandboxes()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) | Err(e) => {
            tracing::warn!("backups: cannot list sandboxes: {e}");
            return;
        }
    };
    for rec in recs {
        if rec.spec.backup_every_ms.is_none() {
            continue;
        }
        let now = inner.clock.now_ms();
        if !due(&rec, last_at(inner, &rec.id), now) {
            continue;
        }
        if let Err(e) = take(inner, &rec.id).await {
            tracing::warn!(
                sandbox = rec.id,
                "backup failed: {e}; retrying at the next pass"
            );
            let _ = inner
                .store
                .add_event(&rec.id, EVENT, &format!("backup failed: {e}"));
        }
    }
}

/// Backs sandbox `id` up now (under its lock, judged again on its record
/// as it is then), then deletes its backups older than the newest
/// [`KEEP`]. None when it was no longer due.
pub(crate) async fn take(inner: &Arc<Context>, id: &str) -> Result<Option<Manifest>> {
    let lock = inner.lock_for(id);
    let _g = lock.lock().await;
    let i = inner.clone();
    let id = id.to_string();
    blocking(move || -> Result<Option<Manifest>> {
        let Some(rec) = i.store.get_sandbox::<SandboxSpec>(&id)? else {
            return Ok(None);
        };
        if let Some(m) = i.cluster.get() {
            if !m.owns(rec.node.as_deref()) {
                return Ok(None);
            }
        }
        if !due(&rec, last_at(&i, &id), i.clock.now_ms()) {
            return Ok(None);
        }
        let labels = BTreeMap::from([(LABEL.to_string(), id.clone())]);
        let m = crate::snapshots::take::capture_now(&i, &rec.tenant, &id, rec.state, None, labels)?;
        i.store.add_event(
            &id,
            EVENT,
            &format!(
                "backup {} taken ({} bytes new{}); it is the copy this sandbox runs again from \
                 if its node is lost",
                m.id,
                m.sizes.uploaded,
                m.freeze_us
                    .map(|us| format!(", frozen {:.1} ms", us as f64 / 1000.0))
                    .unwrap_or_default()
            ),
        )?;
        match prune(&i, &id) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(sandbox = id, "deleted {n} older backups"),
            Err(e) => tracing::warn!(sandbox = id, "cannot delete older backups yet: {e}"),
        }
        Ok(Some(m))
    })
    .await?
}

/// The backups of sandbox `id`, oldest first.
fn backups_of(inner: &Context, id: &str) -> Result<Vec<Manifest>> {
    let mut all = dwell_snapshot::list(&*inner.snapshots, None)?;
    all.retain(|m| copy_kind(m, id).0);
    Ok(all)
}

/// Deletes sandbox `id`'s backups but the newest [`KEEP`]; how many.
fn prune(inner: &Context, id: &str) -> Result<usize> {
    let all = backups_of(inner, id)?;
    let old = all.len().saturating_sub(KEEP);
    for m in &all[..old] {
        crate::archive::drop_snapshot(inner, &m.id);
    }
    Ok(old)
}

/// Deletes every backup of sandbox `id` (it was deleted). Best effort:
/// the snapshot sweep deletes what is left.
pub(crate) fn drop_all(inner: &Context, id: &str) {
    match backups_of(inner, id) {
        Ok(all) => {
            for m in all {
                crate::archive::drop_snapshot(inner, &m.id);
            }
        }
        Err(e) => tracing::warn!(sandbox = id, "cannot list its backups to delete them: {e}"),
    }
}

/// Deletes the backups of deleted sandboxes (a delete that could not
/// reach the object store). Backups of sandboxes this daemon has no record
/// of belong to another daemon sharing the object store and are left.
/// Blocking.
pub(crate) fn collect_orphans(inner: &Context) -> Result<usize> {
    let mut n = 0;
    for m in dwell_snapshot::list(&*inner.snapshots, None)? {
        let Some(sb) = m.labels.get(LABEL) else {
            continue;
        };
        let Some(rec) = inner.store.get_sandbox::<SandboxSpec>(sb)? else {
            continue;
        };
        if rec.state != State::Deleted {
            continue;
        }
        tracing::info!(sandbox = %sb, "deleting backup {} of a deleted sandbox", m.id);
        crate::archive::drop_snapshot(inner, &m.id);
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: &str, at: &str, label: &str, of: &str) -> Manifest {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "version": 2,
            "id": id,
            "created_at": at,
            "tenant": "default",
            "source": {"volume_size": 1048576},
            "chunk_size": 4194304,
            "compression": "zstd",
            "sizes": {"total": 0, "data": 0, "stored": 0, "uploaded": 0},
            "extents": []
        }))
        .expect("a manifest");
        m.labels.insert(label.into(), of.into());
        m
    }

    #[test]
    fn the_newest_backup_or_archive_of_the_sandbox_is_the_copy() {
        let all = [
            manifest("b1", "2026-12-05T10:00:00Z", LABEL, "sb1"),
            manifest("b2", "2026-12-05T10:05:00Z", LABEL, "sb1"),
            manifest("a0", "2026-12-05T09:00:00Z", crate::archive::LABEL, "sb1"),
            manifest("x9", "2026-12-05T11:00:00Z", LABEL, "sb2"),
            manifest("n1", "2026-12-05T12:00:00Z", "name", "sb1"),
        ];
        assert_eq!(newest_copy(&all, "sb1").unwrap().id, "b2");
        assert!(newest_copy(&all, "sb3").is_none());
        // A newer archive wins, and so does one taken at the same instant.
        let mut more = all.to_vec();
        more.push(manifest(
            "a1",
            "2026-12-05T10:05:00Z",
            crate::archive::LABEL,
            "sb1",
        ));
        assert_eq!(newest_copy(&more, "sb1").unwrap().id, "a1");
        more.push(manifest("b3", "2026-12-05T10:06:00Z", LABEL, "sb1"));
        assert_eq!(newest_copy(&more, "sb1").unwrap().id, "b3");
        assert!(is_backup(&more[0]) && !is_backup(&more[2]));
    }

    fn rec(state: State, every_ms: Option<u64>, stopped_at: Option<i64>) -> Record {
        let spec: SandboxSpec = serde_json::from_value(serde_json::json!({
            "vcpus": 1.0, "memory_bytes": 1, "pids": 8, "disk_bytes": 1,
            "backup_every_ms": every_ms,
        }))
        .expect("a spec");
        Record {
            id: "sb1".into(),
            name: "w".into(),
            tenant: "t".into(),
            image: "host".into(),
            mode: dwell_store::Mode::Persistent,
            runtime: dwell_store::RuntimeName::new(dwell_runtime::Kind::default().name()),
            spec,
            state,
            desired_state: state,
            reason: String::new(),
            created_at: 0,
            updated_at: 0,
            state_changed_at: 0,
            started_at: None,
            stopped_at,
            deleted_at: None,
            last_activity_at: None,
            hold_until: None,
            node: None,
        }
    }

    #[test]
    fn backups_are_due_by_interval_while_running_and_once_after_a_stop() {
        let hour: i64 = 3_600_000;
        let every = Some(hour as u64);
        // Never backed up: at once; then once the interval has passed.
        assert!(due(&rec(State::Running, every, None), None, 10));
        assert!(!due(&rec(State::Running, every, None), Some(10), hour));
        assert!(due(&rec(State::Paused, every, None), Some(10), hour + 10));
        // No backup_every: never.
        assert!(!due(&rec(State::Running, None, None), None, 10));
        // Stopped: once after it stopped, not again.
        assert!(due(&rec(State::Stopped, every, Some(50)), Some(10), 60));
        assert!(!due(
            &rec(State::Stopped, every, Some(50)),
            Some(55),
            10 * hour
        ));
        // Archived (already a copy), hibernated, creating: not backed up.
        for s in [
            State::Archived,
            State::Hibernated,
            State::Creating,
            State::Deleted,
        ] {
            assert!(!due(&rec(s, every, None), None, 10), "{s:?}");
        }
    }

    #[test]
    fn node_loss_policies_parse_and_say_what_they_take() {
        assert_eq!(OnNodeLoss::parse("keep"), Ok(OnNodeLoss::Keep));
        assert_eq!(OnNodeLoss::parse("restart"), Ok(OnNodeLoss::Restart));
        let e = OnNodeLoss::parse("move").unwrap_err();
        assert!(e.contains("restart") && e.contains("keep"), "{e}");
    }
}
