//! Moving a sandbox to another node of the cluster (`dwell move`, and a
//! node's drain, one sandbox at a time).
//!
//! Ownership moves only through the object store. Under the sandbox's
//! lock, the owner brings it to rest (a cold move stops it; a warm one
//! hibernates a gVisor sandbox, so its memory and processes go along),
//! archives it (the volume, and the saved memory of a hibernated
//! sandbox, into the object store, every chunk hashed; the local copy
//! freed), writes the state the new owner must bring it to, and hands it
//! over: owner and [`Handoff`] in one statement. Only then does it drop
//! its archive pointer and what is left of the sandbox on this host.
//!
//! A crash at any point leaves one of two things: the sandbox still with
//! this node, archived (its desired state brings it back here, from the
//! archive, every chunk verified), or the handoff (the new owner takes it
//! over on its next pass, [`super::handoff::take_all`], or at once when
//! the moving node asks it to, [`take_over_now`]).
//!
//! Sandboxes that hold node-local resources are refused, saying which:
//! ephemeral ones (their data is not kept), members of private networks
//! (the bridge is this host's), and those with named volumes (the
//! volume's files are on this host).

use std::sync::Arc;
use std::time::Instant;

use dwell_store::{NodeRecord, NodeState};

use super::handoff::{self, Handoff};
use super::placement::{self, Needs};
use crate::context::{blocking, Context};
use crate::error::{Error, Result};
use crate::model::{Mode, Record, SandboxSpec, State};

/// What a move asks for.
#[derive(Debug, Clone, Default)]
pub struct MoveRequest {
    /// The target node; None: placement picks one (never this node).
    pub to: Option<String>,
    /// Keep memory and processes (gVisor: hibernate, then move).
    pub warm: bool,
    /// Who asked (an API key id, or `drain of n1`), for the events.
    pub by: String,
}

/// A sandbox handed over by [`move_out`].
#[derive(Debug, Clone)]
pub struct MovedOut {
    pub id: String,
    /// The node it went to.
    pub to: NodeRecord,
    /// The state the new owner brings it to.
    pub reach: State,
    /// The bytes of data and stored (new chunks uploaded) of its archive.
    pub data_bytes: u64,
    pub stored_bytes: u64,
    /// How long the move took on this node, in ms.
    pub ms: u64,
}

/// The state a sandbox in `state` must reach on its new owner: running if
/// it ran (or was frozen), hibernated if it was, else stopped (or
/// archived, as it was).
fn reach_of(state: State) -> State {
    match state {
        State::Running | State::Paused => State::Running,
        State::Hibernated => State::Hibernated,
        State::Archived => State::Archived,
        _ => State::Stopped,
    }
}

/// The desired state recorded before the handover (what this node does
/// with it after a crash, and what the new owner's pass does when it
/// takes it over unasked). A hibernated sandbox stays archived with its
/// memory (it resumes warm from there): a desired `hibernated` over an
/// archived record would find no saved state on the host.
fn recorded_desired(reach: State) -> State {
    match reach {
        State::Hibernated => State::Archived,
        s => s,
    }
}

/// Why `rec` cannot move, if it cannot (node-local resources, or a state
/// with nothing to move yet).
pub(crate) fn refusal(inner: &Context, rec: &Record, warm: bool) -> Result<Option<String>> {
    if rec.mode == Mode::Ephemeral {
        return Ok(Some(format!(
            "sandbox {} is ephemeral: its data is not kept, so there is nothing to carry to \
             another node; remove it and create it there (`dwell create --node-selector ...`)",
            rec.name
        )));
    }
    let nets = inner.store.networks_of(&rec.id)?;
    if !nets.is_empty() {
        let names: Vec<String> = nets.iter().map(|(n, _)| n.name.clone()).collect();
        return Ok(Some(format!(
            "sandbox {} is a member of the private network(s) {}, whose bridge is on this node; \
             disconnect it first (`dwell network disconnect NETWORK {}`)",
            rec.name,
            names.join(", "),
            rec.name
        )));
    }
    if !rec.spec.volumes.is_empty() {
        let names: Vec<String> = rec.spec.volumes.iter().map(|v| v.name.clone()).collect();
        return Ok(Some(format!(
            "sandbox {} mounts the named volume(s) {}, whose files are on this node; named \
             volumes do not move between nodes (copy their files, or recreate the sandbox \
             without them)",
            rec.name,
            names.join(", ")
        )));
    }
    if matches!(rec.state, State::Creating | State::Deleted) {
        return Ok(Some(format!(
            "sandbox {} is {}; move it once it is created",
            rec.name,
            rec.state.as_str()
        )));
    }
    if warm
        && matches!(rec.state, State::Running | State::Paused)
        && crate::runtimes::capabilities(rec.runtime.as_str())
            .hibernate
            .is_none()
    {
        return Ok(Some(format!(
            "sandbox {} runs on the {} runtime, which cannot save a sandbox's memory and \
             processes; a warm move needs gVisor (runsc). Move it cold (without --warm): its \
             files move, its processes start again",
            rec.name, rec.runtime
        )));
    }
    Ok(None)
}

/// Node `name` as a move's target for a sandbox needing `needs`, or why it
/// cannot be.
pub(crate) fn check_target(
    inner: &Context,
    me: &str,
    name: &str,
    needs: &Needs,
) -> Result<NodeRecord> {
    if name == me {
        return Err(Error::Invalid {
            field: "to".into(),
            message: format!(
                "the sandbox is on node {me} already; name another node (`dwell node ls`)"
            ),
        });
    }
    let nodes = inner.store.list_nodes()?;
    let Some(node) = nodes.iter().find(|n| n.name == name) else {
        return Err(Error::Invalid {
            field: "to".into(),
            message: format!("no node is named {name:?}; `dwell node ls` lists them"),
        });
    };
    if node.state != NodeState::Up {
        return Err(Error::Conflict(format!(
            "node {name} is {}: it takes no sandboxes now (`dwell node undrain {name}` if it \
             should)",
            node.state.as_str()
        )));
    }
    placement::choose(std::slice::from_ref(node), needs, inner.store.db_now()?)
        .cloned()
        .map_err(|e| Error::Conflict(format!("node {name} cannot take this sandbox: {e}")))
}

/// What sandbox `rec` needs of a node.
pub(crate) fn needs_of(spec: &SandboxSpec) -> Needs {
    Needs {
        vcpus: spec.vcpus,
        memory: spec.memory_bytes,
        disk: spec.disk_bytes,
        selector: spec.node_selector.clone(),
    }
}

/// Where sandbox `rec` goes: `to`, checked, or the node placement picks of
/// the others.
fn target(inner: &Context, me: &str, rec: &Record, to: Option<&str>) -> Result<NodeRecord> {
    let needs = needs_of(&rec.spec);
    if let Some(to) = to {
        return check_target(inner, me, to, &needs);
    }
    let others: Vec<NodeRecord> = inner
        .store
        .list_nodes()?
        .into_iter()
        .filter(|n| n.name != me)
        .collect();
    placement::choose(&others, &needs, inner.store.db_now()?)
        .cloned()
        .map_err(|e| {
            Error::Unavailable(format!("no other node can take sandbox {}: {e}", rec.name))
        })
}

/// Drives sandbox `id` (whose lock the caller holds) to `desired`, and
/// checks it got there.
async fn drive(inner: &Arc<Context>, id: &str, desired: State, what: &str) -> Result<Record> {
    inner.store.set_desired(id, desired)?;
    inner
        .store
        .add_event(id, "request", &format!("{what} (to move it)"))?;
    crate::reconcile::reconcile_locked(inner, id).await;
    let rec = inner
        .store
        .get_sandbox::<SandboxSpec>(id)?
        .ok_or_else(|| Error::NotFound(id.to_string()))?;
    if rec.state != desired {
        return Err(Error::Conflict(format!(
            "cannot move sandbox {}: {what} did not finish ({}: {}); it stays on this node",
            rec.name,
            rec.state.as_str(),
            rec.reason
        )));
    }
    Ok(rec)
}

/// Moves sandbox `id` of this node to another (see the module's
/// documentation). Takes the sandbox's lock (a sandbox mid-transition is
/// moved once that is done).
pub(crate) async fn move_out(
    inner: &Arc<Context>,
    id: &str,
    req: &MoveRequest,
) -> Result<MovedOut> {
    let me = inner
        .cluster
        .get()
        .ok_or_else(|| {
            Error::Conflict(
                "this daemon is not a node of a cluster (serve --cluster ...): there is no \
                 other node to move to"
                    .into(),
            )
        })?
        .name()
        .to_string();
    let t0 = Instant::now();
    let lock = inner.lock_for(id);
    let _g = lock.lock().await;
    let rec = inner
        .store
        .get_sandbox::<SandboxSpec>(id)?
        .ok_or_else(|| Error::NotFound(id.to_string()))?;
    if rec.node.as_deref() != Some(me.as_str()) {
        return Err(Error::Conflict(format!(
            "sandbox {} is owned by node {} now, not {me}; send the move again",
            rec.name,
            rec.node.as_deref().unwrap_or("(none)")
        )));
    }
    if let Some(why) = refusal(inner, &rec, req.warm)? {
        return Err(Error::Conflict(why));
    }
    let to = target(inner, &me, &rec, req.to.as_deref())?;
    let reach = reach_of(rec.state);
    let warm = req.warm && matches!(rec.state, State::Running | State::Paused);
    let _ = inner.store.add_event(
        id,
        "node",
        &format!(
            "moving to node {} ({}) by {}",
            to.name,
            if warm { "warm" } else { "cold" },
            req.by
        ),
    );
    if warm {
        drive(inner, id, State::Hibernated, "hibernate").await?;
    }
    drive(inner, id, State::Archived, "archive").await?;
    crate::crashpoint::crashpoint("move:after-archive");
    let i = inner.clone();
    let sid = id.to_string();
    let archive = blocking(move || crate::archive::load_ref(&i, &sid))
        .await??
        .ok_or_else(|| {
            Error::Internal(format!(
                "sandbox {} is archived but has no archive pointer on node {me}",
                rec.name
            ))
        })?;
    let h = Handoff {
        archive: archive.clone(),
        from: me.clone(),
        why: format!("moved by {}", req.by),
    };
    inner.store.set_desired(id, recorded_desired(reach))?;
    crate::crashpoint::crashpoint("move:before-handover");
    if !inner.store.hand_over(id, &me, &to.name, &h.encode()?)? {
        return Err(Error::Conflict(format!(
            "sandbox {} changed owner while it was being moved; it stays archived (start it \
             where it is owned now)",
            rec.name
        )));
    }
    crate::crashpoint::crashpoint("move:after-handover");
    // What is left here: the pointer (the new owner writes its own from
    // the handoff) and the state dir.
    let i = inner.clone();
    let sid = id.to_string();
    blocking(move || -> Result<()> {
        crate::archive::remove_ref(&i, &sid)?;
        i.configs().remove(&sid);
        let dir = crate::state_dir::path(&i.data_dir, &sid);
        // Mounts a runtime may have left under it go first; the removal
        // itself never crosses a mount.
        let bare = crate::reconcile::config::bare_config(&i, &sid);
        for kind in dwell_runtime::Kind::ALL {
            kind.release_leftovers(&bare);
        }
        match dwell_hostfs::remove_tree(&dir) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => {
                tracing::warn!(sandbox = sid, "cannot remove {}: {e}", dir.display());
                Ok(())
            }
        }
    })
    .await??;
    let ms = t0.elapsed().as_millis() as u64;
    let _ = inner.store.add_event(
        id,
        "node",
        &format!(
            "moved to node {} by {} in {ms} ms ({}; {} of data, {} uploaded); node {} brings it \
             to {}",
            to.name,
            req.by,
            if warm { "warm" } else { "cold" },
            crate::size::format_size(archive.data_bytes),
            crate::size::format_size(archive.stored_bytes),
            to.name,
            reach.as_str()
        ),
    );
    Ok(MovedOut {
        id: id.to_string(),
        to,
        reach,
        data_bytes: archive.data_bytes,
        stored_bytes: archive.stored_bytes,
        ms,
    })
}

/// On the new owner: takes sandbox `id` over now (if its handoff is still
/// there) and brings it to `reach` (the recorded desired state when None).
pub(crate) async fn take_over_now(
    inner: &Arc<Context>,
    id: &str,
    reach: Option<State>,
) -> Result<()> {
    let t0 = Instant::now();
    let lock = inner.lock_for(id);
    let _g = lock.lock().await;
    let i = inner.clone();
    let sid = id.to_string();
    blocking(move || handoff::take_over(&i, &sid)).await??;
    let rec = inner
        .store
        .get_sandbox::<SandboxSpec>(id)?
        .ok_or_else(|| Error::NotFound(id.to_string()))?;
    let me = inner.cluster.get().map(|m| m.name().to_string());
    if rec.node != me || inner.store.handoff_of(id)?.is_some() {
        return Err(Error::Conflict(format!(
            "sandbox {} is not this node's to take over (owner {})",
            rec.name,
            rec.node.as_deref().unwrap_or("(none)")
        )));
    }
    let reach = reach.unwrap_or(rec.desired_state);
    if reach == State::Hibernated && rec.state == State::Archived {
        // Its memory comes back to this host's disk; it stays asleep.
        let i = inner.clone();
        let (sid, tenant) = (rec.id.clone(), rec.tenant.clone());
        blocking(move || crate::archive::unarchive(&i, &sid, &tenant)).await??;
        // The reconciler adopts the saved state as hibernated.
        inner.store.set_desired(id, State::Hibernated)?;
    } else if reach != rec.desired_state {
        inner.store.set_desired(id, reach)?;
    }
    crate::reconcile::reconcile_locked(inner, id).await;
    let rec = inner
        .store
        .get_sandbox::<SandboxSpec>(id)?
        .ok_or_else(|| Error::NotFound(id.to_string()))?;
    if rec.state == State::Error {
        return Err(Error::Conflict(format!(
            "sandbox {} was taken over by this node but did not reach {}: {}",
            rec.name,
            reach.as_str(),
            rec.reason
        )));
    }
    let _ = inner.store.add_event(
        id,
        "node",
        &format!(
            "{} on node {} in {} ms",
            rec.state.as_str(),
            me.as_deref().unwrap_or(""),
            t0.elapsed().as_millis()
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_sandbox_reaches_what_it_was() {
        assert_eq!(reach_of(State::Running), State::Running);
        assert_eq!(reach_of(State::Paused), State::Running);
        assert_eq!(reach_of(State::Stopped), State::Stopped);
        assert_eq!(reach_of(State::Error), State::Stopped);
        assert_eq!(reach_of(State::Hibernated), State::Hibernated);
        assert_eq!(reach_of(State::Archived), State::Archived);
        // Recorded so that this node, after a crash, or the new owner's
        // pass, never wants a saved state the host does not have.
        assert_eq!(recorded_desired(State::Hibernated), State::Archived);
        assert_eq!(recorded_desired(State::Running), State::Running);
    }
}
