//! The "no zombies" sweep: find what no record explains and clean it.
//!
//! After crashes (of the daemon, the host, or a half-done operation) the
//! host can hold sandbox cgroups and processes, volumes (and their mounts
//! and loop devices) and state dirs whose record is gone or deleted. The
//! reconciler's periodic sweep calls [`sweep`], which stops and removes
//! each, records what it cleaned as an event on that id, and returns it so
//! the daemon can log it. Records whose runtime state vanished are handled
//! by the reconciler itself (marked `error` with the reason, never dropped).

use std::collections::HashSet;
use std::sync::Arc;

use crate::context::{blocking, Context};
use crate::model::{SandboxSpec, State};
use crate::reconcile::config::{bare_config, config_of};

/// Clean everything of sandboxes that have no live record. Returns one line
/// per thing cleaned.
pub(crate) async fn sweep(inner: &Arc<Context>) -> Vec<String> {
    let live: HashSet<String> = match inner.store.list_sandboxes::<SandboxSpec>(None) {
        Ok(l) => l.into_iter().map(|r| r.id).collect(),
        Err(_) => return Vec::new(),
    };
    let inner2 = inner.clone();
    let cleaned = blocking(move || sweep_blocking(&inner2, &live))
        .await
        .unwrap_or_default();
    for line in &cleaned {
        tracing::warn!("sweep: {line}");
    }
    cleaned
}

fn sweep_blocking(inner: &Context, live: &HashSet<String>) -> Vec<String> {
    // In a cluster: copies of sandboxes another node owns stop, and their
    // volumes are set aside, never deleted (see `cluster::recovery`).
    let mut cleaned = crate::cluster::recovery::fence(inner);
    // A create may have inserted its record after `live` was read: check
    // again, under the sandbox's lock, right before cleaning anything.
    let unexplained = |id: &str| -> Option<tokio::sync::OwnedMutexGuard<()>> {
        if live.contains(id) {
            return None;
        }
        let guard = inner.lock_for(id).blocking_lock_owned();
        match inner.store.get_sandbox::<SandboxSpec>(id) {
            Ok(Some(r)) if r.state != State::Deleted => None,
            Ok(_) => Some(guard),
            Err(_) => None,
        }
    };
    let mut note = |id: &str, what: String| {
        let _ = inner.store.add_event(id, "sweep", &what);
        cleaned.push(format!("{id}: {what}"));
    };
    // Processes and cgroups (and the network and mounts the runtime holds),
    // of every runtime the daemon has.
    for runtime in inner.runtimes.available() {
        for id in runtime.list_host().unwrap_or_default() {
            let Some(_g) = unexplained(&id) else { continue };
            let cfg = config_of(inner, &id).unwrap_or_else(|_| bare_config(inner, &id));
            match runtime.stop(&cfg) {
                Ok(()) => note(
                    &id,
                    format!(
                        "stopped {} processes and removed cgroups no record explains",
                        runtime.name()
                    ),
                ),
                Err(e) => note(&id, format!("could not stop unexplained processes: {e}")),
            }
        }
    }
    // Volumes, with their mounts and loop devices.
    for id in inner.volumes.list().unwrap_or_default() {
        let Some(_g) = unexplained(&id) else { continue };
        match inner.volumes.delete(&id) {
            Ok(()) => {
                // Its uid range, if it had one, may go to another sandbox.
                let _ = inner.store.release_id_range(&id);
                note(&id, "wiped and removed a volume no record explains".into())
            }
            Err(e) => note(&id, format!("could not remove an unexplained volume: {e}")),
        }
    }
    // State dirs.
    if let Ok(rd) = std::fs::read_dir(inner.data_dir.join("sandboxes")) {
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let Some(_g) = unexplained(&id) else { continue };
            let path = e.path();
            // What a start that failed halfway may have left on the host
            // (mounts under the state dir, a network): each kind of runtime
            // releases its own, also one this daemon cannot run any more.
            let bare = bare_config(inner, &id);
            for kind in dwell_runtime::Kind::ALL {
                kind.release_leftovers(&bare);
            }
            crate::reconcile::config::forget(inner, &id);
            if dwell_hostfs::remove_tree(&path).is_ok() {
                note(&id, "removed a state dir no record explains".into());
            }
        }
    }
    // Loop devices whose image no volume explains (deleted files included).
    for b in inner.volumes.stray_loops() {
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| {
                m.lines()
                    .any(|l| l.contains(&format!(" {} ", b.device.display())))
            })
            .unwrap_or(true);
        if mounted {
            continue;
        }
        if dwell_storage::detach_loop(&b.device).is_ok() {
            cleaned.push(format!(
                "detached {} ({})",
                b.device.display(),
                b.backing_file.display()
            ));
        }
    }
    cleaned
}
