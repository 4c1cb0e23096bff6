//! Joining a cluster, its nodes, and where requests are served: the owner
//! of an existing sandbox, the node placement picks for a new one.

use dwell_store::{NodeRecord, NodeState};

use super::Controller;
use crate::cluster::placement::{self, Needs};
use crate::cluster::{ClusterOptions, Elsewhere, Membership};
use crate::context::blocking;
use crate::error::{Error, Result};

impl Controller {
    /// Makes this daemon node `opts.node` of the cluster whose store it
    /// was given, and registers it (a lease that `start_background`
    /// renews). Called once, before `start_background`.
    pub async fn join_cluster(&self, opts: ClusterOptions) -> Result<()> {
        if self.inner.store.engine() != "postgres" {
            return Err(Error::Invalid {
                field: "cluster".into(),
                message: "a cluster keeps its records in PostgreSQL: pass --cluster postgres://..."
                    .into(),
            });
        }
        self.inner.store.set_node(&opts.node);
        if self.inner.cluster.set(Membership::new(opts)).is_err() {
            return Err(Error::Internal(
                "this daemon already joined a cluster".into(),
            ));
        }
        let inner = self.inner.clone();
        blocking(move || {
            // Copies of sandboxes other nodes own now (recovered while this
            // node was away) stop before it registers and serves.
            crate::cluster::recovery::fence(&inner);
            crate::cluster::node::register(&inner)?;
            // And those recovered while it registered (none can be after:
            // only a lost node's sandboxes are recovered).
            crate::cluster::recovery::fence(&inner);
            crate::cluster::recovery::came_back(&inner);
            Ok::<_, Error>(())
        })
        .await??;
        Ok(())
    }

    /// This node's name in its cluster; None on a single node.
    pub fn node_name(&self) -> Option<&str> {
        self.inner.cluster.get().map(|m| m.name())
    }

    /// The nodes of the cluster (none on a single node).
    pub fn nodes(&self) -> Result<Vec<NodeRecord>> {
        if self.inner.cluster.get().is_none() {
            return Ok(Vec::new());
        }
        Ok(self.inner.store.list_nodes()?)
    }

    /// Sets node `name` draining (new sandboxes avoid it) or up again.
    pub fn set_node_state(&self, name: &str, state: NodeState) -> Result<NodeRecord> {
        if self.inner.cluster.get().is_none() {
            return Err(Error::Conflict(
                "this daemon is not a node of a cluster (serve --cluster ...)".into(),
            ));
        }
        if state == NodeState::Lost {
            return Err(Error::Invalid {
                field: "state".into(),
                message: "a node is declared lost only when its lease ends".into(),
            });
        }
        if !self.inner.store.set_node_state(name, state)? {
            return Err(match self.inner.store.get_node(name)? {
                None => Error::Invalid {
                    field: "node".into(),
                    message: format!("no node is named {name:?}; `dwell node ls` lists them"),
                },
                Some(_) => Error::Conflict(format!(
                    "node {name} is lost; it comes back by starting its daemon again"
                )),
            });
        }
        self.inner
            .store
            .get_node(name)?
            .ok_or_else(|| Error::Internal(format!("node {name} vanished")))
    }

    /// Which node serves requests for sandbox `id_or_name` of `tenant`:
    /// None when this one does (its owner, or a single node, or no such
    /// sandbox: this node answers the 404).
    pub fn owner(&self, tenant: &str, id_or_name: &str) -> Result<Option<Elsewhere>> {
        let Some(me) = self.inner.cluster.get() else {
            return Ok(None);
        };
        let Some(rec) = self
            .inner
            .store
            .find_sandbox::<crate::model::SandboxSpec>(tenant, id_or_name)?
        else {
            return Ok(None);
        };
        let owner = rec.node.clone();
        if me.owns(owner.as_deref()) {
            return Ok(None);
        }
        let Some(owner) = owner else {
            return Err(Error::Unavailable(format!(
                "sandbox {} has no owner node (it was created outside the cluster); an admin \
                 can move it to a node with `dwell move {} --to NODE`",
                rec.name, rec.name
            )));
        };
        self.elsewhere(&owner, &format!("sandbox {}", rec.name))
    }

    /// The node `name` as a forwarding target; refused when it is lost.
    fn elsewhere(&self, name: &str, what: &str) -> Result<Option<Elsewhere>> {
        let node = self.inner.store.get_node(name)?.ok_or_else(|| {
            Error::Unavailable(format!(
                "{what} belongs to node {name}, which is not registered"
            ))
        })?;
        if node.state == NodeState::Lost {
            return Err(Error::Unavailable(format!(
                "{what} belongs to node {name}, which is lost (no heartbeat since {}); it runs \
                 again when that node comes back, or elsewhere from its last backup",
                node.heartbeat_at
            )));
        }
        Ok(Some(Elsewhere {
            node: node.name,
            advertise: node.advertise,
        }))
    }

    /// What a create request needs of a node: its resources as the
    /// create will resolve them (defaults, this daemon's ceilings), and
    /// its node selector.
    pub fn needs_of(&self, req: &crate::model::CreateRequest) -> Result<Needs> {
        let mut spec = req.to_spec(&self.inner.host)?;
        self.inner.limits.ceilings.clamp_defaults(req, &mut spec);
        Ok(Needs {
            vcpus: spec.vcpus,
            memory: spec.memory_bytes,
            disk: spec.disk_bytes,
            selector: req.node_selector.clone(),
        })
    }

    /// Where a new sandbox needing `needs` goes: None for this node.
    pub fn place(&self, needs: &Needs) -> Result<Option<Elsewhere>> {
        let Some(me) = self.inner.cluster.get() else {
            return Ok(None);
        };
        let nodes = self.inner.store.list_nodes()?;
        let chosen = placement::choose(&nodes, needs, self.inner.store.db_now()?)?;
        if chosen.name == me.name() {
            return Ok(None);
        }
        Ok(Some(Elsewhere {
            node: chosen.name.clone(),
            advertise: chosen.advertise.clone(),
        }))
    }

    /// Refuses work on a sandbox another node owns: only its owner runs
    /// it (requests reach the owner through the forwarding of the API; a
    /// path that does not forward must not act on it here). Ok on a single
    /// node.
    pub(crate) fn here(&self, owner: Option<&str>, name: &str) -> Result<()> {
        let Some(me) = self.inner.cluster.get() else {
            return Ok(());
        };
        if me.owns(owner) {
            return Ok(());
        }
        Err(Error::Unavailable(format!(
            "sandbox {name} runs on node {}, not on this one ({}); send the request through the \
             cluster's REST API, which any node forwards to the sandbox's node",
            owner.unwrap_or("(none)"),
            me.name()
        )))
    }
}
