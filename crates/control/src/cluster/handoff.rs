//! Taking over a sandbox handed to this node.
//!
//! Ownership moves only through the object store: the node giving a
//! sandbox up (a move, a drain) or the node recovering it (its owner was
//! lost) first makes sure its volume is an archive snapshot there, then
//! changes the owner in the same statement that records a [`Handoff`]
//! (which archive to restore from, and why). The new owner writes the
//! archive pointer of the sandbox from it and only then clears it, so a
//! crash at any point leaves either the handoff or the pointer; its
//! reconcile passes take over every handoff left ([`take_all`]) and the
//! usual start restores the volume from the archive (every chunk
//! verified).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::context::{blocking, Context};
use crate::error::{Error, Result};
use crate::model::ArchiveRef;

/// What a new owner takes over.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Handoff {
    /// The archive (or backup) the volume comes back from.
    pub archive: ArchiveRef,
    /// The node it came from.
    pub from: String,
    /// Why it moved (`moved by an admin`, `node n3 lost`).
    pub why: String,
}

impl Handoff {
    pub(crate) fn encode(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::Internal(format!("a handoff: {e}")))
    }

    pub(crate) fn decode(id: &str, text: &str) -> Result<Handoff> {
        serde_json::from_str(text).map_err(|e| {
            Error::Internal(format!(
                "the handoff of sandbox {id} is unreadable ({e}); its archive is in the object \
                 store, labelled {}={id}",
                crate::archive::LABEL
            ))
        })
    }
}

/// Takes over sandbox `id` if it was handed to this node: its archive
/// pointer is written, then the handoff cleared. Blocking; the caller
/// holds the sandbox's lock. Returns the handoff taken.
pub(crate) fn take_over(inner: &Context, id: &str) -> Result<Option<Handoff>> {
    let Some(me) = inner.cluster.get() else {
        return Ok(None);
    };
    let Some(text) = inner.store.handoff_of(id)? else {
        return Ok(None);
    };
    let h = Handoff::decode(id, &text)?;
    // The owner is read again: only the owner takes a handoff.
    if !me.owns(inner.store.sandbox_node(id)?.as_deref()) {
        return Ok(None);
    }
    std::fs::create_dir_all(crate::state_dir::path(&inner.data_dir, id))
        .map_err(|e| Error::Internal(format!("cannot make the state dir of {id}: {e}")))?;
    crate::archive::write_ref(inner, id, &h.archive)?;
    crate::crashpoint::crashpoint("handoff:after-pointer");
    if !inner.store.clear_handoff(id, me.name(), &text)? {
        return Err(Error::Conflict(format!(
            "the handoff of sandbox {id} changed while this node took it over; the next pass \
             looks again"
        )));
    }
    let _ = inner.store.add_event(
        id,
        "node",
        &format!(
            "taken over by node {} from node {} ({}); volume from archive {} of {}",
            me.name(),
            h.from,
            h.why,
            h.archive.snapshot,
            h.archive.archived_at
        ),
    );
    Ok(Some(h))
}

/// Takes over every handoff this node has left (each under its
/// sandbox's lock).
pub(crate) async fn take_all(inner: &Arc<Context>) {
    let Some(me) = inner.cluster.get() else {
        return;
    };
    let name = me.name().to_string();
    let store_inner = inner.clone();
    let pending = match blocking(move || {
        store_inner
            .store
            .handoffs_of_node(&name)
            .map_err(Error::from)
    })
    .await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) | Err(e) => {
            tracing::warn!("cannot list the sandboxes handed to this node: {e}");
            return;
        }
    };
    for (id, _) in pending {
        let lock = inner.lock_for(&id);
        let _g = lock.lock().await;
        let i = inner.clone();
        let sid = id.clone();
        match blocking(move || take_over(&i, &sid)).await {
            Ok(Ok(Some(h))) => {
                tracing::info!(sandbox = id, "took over from node {} ({})", h.from, h.why)
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) | Err(e) => tracing::warn!(sandbox = id, "cannot take over yet: {e}"),
        }
    }
}
