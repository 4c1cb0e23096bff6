//! Moving sandboxes between the nodes of a cluster: the owner's side
//! ([`Controller::move_out`]), the new owner's
//! ([`Controller::take_over_now`]), and what a drain walks
//! ([`Controller::owned_by`]). The work is in [`crate::cluster::moves`].

use dwell_store::NodeRecord;

use super::Controller;
use crate::cluster::moves::{self, MoveRequest, MovedOut};
use crate::context::blocking;
use crate::error::{Error, Result};
use crate::model::{Sandbox, SandboxSpec, State};

/// A live sandbox a node owns, for a drain.
#[derive(Debug, Clone)]
pub struct Owned {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub state: State,
}

impl Controller {
    /// Moves sandbox `id_or_name` of `tenant`, which this node owns, to
    /// another node (see [`crate::cluster::moves`]): on return it is
    /// handed over; the new owner brings it to [`MovedOut::reach`].
    pub async fn move_out(
        &self,
        tenant: &str,
        id_or_name: &str,
        req: &MoveRequest,
    ) -> Result<MovedOut> {
        let rec = self.record(tenant, id_or_name)?;
        moves::move_out(&self.inner, &rec.id, req).await
    }

    /// On the new owner of sandbox `id`: takes it over now and brings it to
    /// `reach` (its recorded desired state when None); answers its view.
    pub async fn take_over_now(&self, id: &str, reach: Option<State>) -> Result<Sandbox> {
        moves::take_over_now(&self.inner, id, reach).await?;
        self.get_by_id(id)
    }

    /// The live sandboxes node `node` owns (any state, any tenant).
    pub async fn owned_by(&self, node: &str) -> Result<Vec<Owned>> {
        let inner = self.inner.clone();
        let node = node.to_string();
        blocking(move || -> Result<Vec<Owned>> {
            let mut out = Vec::new();
            for id in inner.store.sandboxes_of_node(&node)? {
                if let Some(r) = inner.store.get_sandbox::<SandboxSpec>(&id)? {
                    out.push(Owned {
                        id: r.id,
                        name: r.name,
                        tenant: r.tenant,
                        state: r.state,
                    });
                }
            }
            Ok(out)
        })
        .await?
    }

    /// How many live sandboxes each node owns.
    pub fn owned_counts(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let mut counts = std::collections::BTreeMap::new();
        for n in self.nodes()? {
            let c = self.inner.store.sandboxes_of_node(&n.name)?.len() as u64;
            counts.insert(n.name, c);
        }
        Ok(counts)
    }

    /// The node record of `name`.
    pub fn node(&self, name: &str) -> Result<NodeRecord> {
        self.inner
            .store
            .get_node(name)?
            .ok_or_else(|| Error::Invalid {
                field: "node".into(),
                message: format!("no node is named {name:?}; `dwell node ls` lists them"),
            })
    }

    /// The newest event of sandbox `id` (what a drain that cannot move it
    /// says why with).
    pub fn last_event(&self, id: &str) -> Option<String> {
        let evs = self.inner.store.events(id, 0, 1000).ok()?;
        evs.last().map(|e| e.message.clone())
    }

    /// Records on sandbox `id` why a drain could not move it.
    pub fn note(&self, id: &str, message: &str) {
        let _ = self.inner.store.add_event(id, "node", message);
    }
}
