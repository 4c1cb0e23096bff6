//! `hibernate` and its way back. Hibernate saves a gVisor sandbox whole
//! (memory, processes, open files) to `state_dir/hibernate` with the
//! runtime's checkpoint, then unmounts its volume: nothing of it runs or
//! stays mounted on the host, and the saved state survives daemon restarts
//! and reboots. [`restore`] mounts the volume again and restores the
//! image, so processes continue where they stopped; the image is removed
//! once the sandbox runs again. `stop` discards it ([`discard`]): a
//! stopped sandbox starts cold.

use std::path::PathBuf;
use std::sync::Arc;

use crate::model::Record;

use super::config::{self, config_of};
use super::journal::{record, step_event};
use crate::context::{blocking, Context};
use crate::error::{Error, Result};
use crate::model::State;
use dwell_runtime::{Observed, Runtime, SandboxConfig};

/// Directory of the saved state inside a sandbox's state dir.
pub(crate) const IMAGE_DIR: &str = "hibernate";

/// Where sandbox `id`'s saved state lives.
pub(crate) fn image_dir(inner: &Context, id: &str) -> PathBuf {
    inner.state_dir(id).join(IMAGE_DIR)
}

/// Whether a complete saved state of `id` is on disk (in the image format
/// of a runtime that hibernates: the answer needs no runtime installed).
pub(crate) fn saved(inner: &Context, id: &str) -> bool {
    let dir = image_dir(inner, id);
    dwell_runtime::Kind::ALL
        .iter()
        .filter_map(|k| k.capabilities().hibernate)
        .any(|f| f.is_complete(&dir))
}

/// Bytes of the saved state of `id` (disk usage of its files), if any.
pub(crate) fn saved_bytes(inner: &Context, id: &str) -> Option<u64> {
    if !saved(inner, id) {
        return None;
    }
    let rd = std::fs::read_dir(image_dir(inner, id)).ok()?;
    Some(
        rd.flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .sum(),
    )
}

/// Prefix of saved states set aside by [`discard`], deleted in the background.
const DISCARDED_PREFIX: &str = "hibernate.discarded-";

/// Drop the saved state of `id` (after a restore, or on stop). The
/// directory is renamed aside at once, so it can never be restored again,
/// and deleted by a background thread: unlinking a pages file of hundreds
/// of MiB takes 0.1-1 s that a resume should not wait for. The thread also
/// removes what an earlier discard left when the daemon died mid-way; the
/// sandbox's deletion removes its whole state dir anyway.
pub(crate) fn discard(inner: &Context, id: &str) -> Result<()> {
    let dir = image_dir(inner, id);
    let state_dir = inner.state_dir(id);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let aside = state_dir.join(format!("{DISCARDED_PREFIX}{stamp}"));
    match std::fs::rename(&dir, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Internal(format!(
                "cannot set the saved state {} aside: {e}",
                dir.display()
            )))
        }
    }
    // Durable before the state that follows is recorded: after a power
    // loss the old saved state must not come back to be restored.
    std::fs::File::open(&state_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::Internal(format!("syncing {}: {e}", state_dir.display())))?;
    let spawned = std::thread::Builder::new()
        .name("dwell-discard".into())
        .spawn(move || remove_discarded(&state_dir));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread to delete a discarded saved state; deleting it now");
        remove_discarded(&inner.state_dir(id));
    }
    Ok(())
}

/// Delete what discards set aside and a killed daemon left undeleted, in
/// every sandbox's state dir (at daemon start). Blocking.
pub(crate) fn sweep_discarded(inner: &Context) {
    let Ok(rd) = std::fs::read_dir(inner.data_dir.join("sandboxes")) else {
        return;
    };
    for e in rd.flatten() {
        remove_discarded(&e.path());
    }
}

/// Delete every saved state [`discard`] set aside in `state_dir`.
fn remove_discarded(state_dir: &std::path::Path) {
    let Ok(rd) = std::fs::read_dir(state_dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with(DISCARDED_PREFIX)
        {
            match dwell_hostfs::remove_tree(e.path()) {
                // Another discard's thread got there first.
                Err(err) if err.is_not_found() => {}
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), error = %err, "deleting a discarded saved state")
                }
                Ok(()) => {}
            }
        }
    }
}

/// Save the running (or paused) sandbox to disk and stop it.
pub(crate) async fn run(
    inner: &Arc<Context>,
    rec: &Record,
    observed: Observed,
    why: &str,
) -> Result<()> {
    let t_start = std::time::Instant::now();
    let runtime = inner.runtimes.get(rec.runtime.as_str())?;
    step_event(
        inner,
        &rec.id,
        "hibernating: saving memory and processes to disk",
    )?;
    // Read before the agent is asked to stop listening: from then on only
    // the runtime's hibernate, which makes it listen again if it stops
    // short of the checkpoint, may fail.
    let cfg = {
        let inner2 = inner.clone();
        let id = rec.id.clone();
        blocking(move || config_of(&inner2, &id)).await??
    };
    // The agent drops its connections before the checkpoint; so do we.
    // A running one is asked to over the protocol; a paused one cannot
    // answer, and the runtime signals it after thawing it.
    if observed == Observed::Running {
        unlisten(inner, &*runtime, &cfg).await;
    }
    crate::connections::forget(inner, &rec.id).await;
    let inner2 = inner.clone();
    let id = rec.id.clone();
    crate::egress::detach(inner, &rec.id);
    let t0 = std::time::Instant::now();
    let t_runtime = blocking(move || -> Result<std::time::Duration> {
        if let Err(e) = runtime.hibernate(&cfg, &image_dir(&inner2, &id)) {
            // A partial image must never be restored.
            let _ = discard(&inner2, &id);
            return Err(e.into());
        }
        let t_runtime = t0.elapsed();
        crate::crashpoint::crashpoint("hibernate:after-checkpoint");
        crate::volumes::detach(&inner2, &id);
        inner2.volumes.unmount(&id)?;
        Ok(t_runtime)
    })
    .await??;
    let t_unmount = t0.elapsed();
    let bytes = saved_bytes(inner, &rec.id).unwrap_or(0);
    tracing::debug!(
        id = %rec.id,
        "hibernate: before the runtime {:?}, runtime {:?}, volume unmount {:?}",
        t0 - t_start,
        t_runtime,
        t_unmount - t_runtime
    );
    record(
        inner,
        &rec.id,
        State::Hibernated,
        &format!(
            "{why} ({} of memory and processes saved in {} ms)",
            crate::size::format_size(bytes),
            t0.elapsed().as_millis()
        ),
    )
}

/// Ask the agent of running sandbox `id` to close its socket, and wait
/// until it has: a message and a few ms, where the runtime's signal costs
/// a `runsc kill` (30-50 ms). Best effort: on any failure (an agent older
/// than the request, a hung one) the socket stays, and the runtime sends
/// its signal.
async fn unlisten(inner: &Arc<Context>, runtime: &dyn Runtime, cfg: &SandboxConfig) {
    use std::time::Duration;
    const BOUND: Duration = Duration::from_secs(1);
    let id = cfg.id.as_str();
    // What would make the agent listen again at once (a restore that did
    // not finish) goes first.
    runtime.before_unlisten(cfg);
    let asked = tokio::time::timeout(BOUND, async {
        crate::connections::client(inner, id)
            .await?
            .unlisten()
            .await
    })
    .await;
    match asked {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(%id, error = %e, "the agent did not take unlisten; the runtime signals it");
            return;
        }
        Err(_) => {
            tracing::debug!(%id, "the agent did not answer unlisten in {BOUND:?}; the runtime signals it");
            return;
        }
    }
    let deadline = tokio::time::Instant::now() + BOUND;
    // (The runtime never follows a symlink in the run dir, the
    // sandbox's to write.)
    while runtime.agent_listening(cfg) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A sandbox found stopped while it should be hibernated: if its state was
/// saved (the daemon died right after the checkpoint), record it as
/// hibernated.
pub(crate) async fn adopt(inner: &Arc<Context>, rec: &Record) -> Result<bool> {
    if !saved(inner, &rec.id) {
        return Ok(false);
    }
    let inner2 = inner.clone();
    let id = rec.id.clone();
    blocking(move || {
        crate::volumes::detach(&inner2, &id);
        inner2.volumes.unmount(&id)
    })
    .await??;
    record(
        inner,
        &rec.id,
        State::Hibernated,
        "hibernated (adopted: the checkpoint had finished)",
    )?;
    Ok(true)
}

/// Bring a hibernated sandbox back from its saved state.
pub(crate) async fn restore(inner: &Arc<Context>, rec: &Record) -> Result<()> {
    let runtime = inner.runtimes.get(rec.runtime.as_str())?;
    step_event(inner, &rec.id, "restoring memory and processes from disk")?;
    let inner2 = inner.clone();
    let id = rec.id.clone();
    let t0 = std::time::Instant::now();
    // The record's egress rules are the current ones (they change live).
    let egress = rec.spec.egress.clone();
    let rec2 = rec.clone();
    blocking(move || -> Result<()> {
        let mut cfg = config_of(&inner2, &id)?;
        let upper = inner2.volumes.mount(&id)?;
        // Its named volumes, mounted again where they were.
        let binds = match crate::volumes::attach(&inner2, &rec2) {
            Ok(b) => b,
            Err(e) => {
                let _ = inner2.volumes.unmount(&id);
                return Err(e);
            }
        };
        if cfg.rootfs.upper_root != upper || cfg.egress != egress || cfg.binds != binds {
            cfg.rootfs.upper_root = upper;
            cfg.egress = egress;
            cfg.binds = binds;
            config::save(&inner2, &cfg)?;
        }
        let t_volume = t0.elapsed();
        if let Err(e) = runtime.restore(&cfg, &image_dir(&inner2, &id)) {
            crate::volumes::detach(&inner2, &id);
            let _ = inner2.volumes.unmount(&id);
            return Err(e.into());
        }
        let t_runtime = t0.elapsed();
        crate::crashpoint::crashpoint("restore:after-runtime");
        discard(&inner2, &id)?;
        tracing::debug!(
            %id,
            "restore: volume {:?}, runtime {:?}, discard {:?}",
            t_volume,
            t_runtime - t_volume,
            t0.elapsed() - t_runtime
        );
        Ok(())
    })
    .await??;
    crate::connections::preconnect(inner, &rec.id).await;
    crate::egress::attach_started(inner, rec).await;
    let ms = t0.elapsed().as_millis();
    let reason = match rec.state {
        State::Creating => format!("created warm from saved memory, restored in {ms} ms"),
        State::Archived => format!("restored from its archive and resumed warm in {ms} ms"),
        _ => format!("resumed from hibernation in {ms} ms"),
    };
    record(inner, &rec.id, State::Running, &reason)
}
