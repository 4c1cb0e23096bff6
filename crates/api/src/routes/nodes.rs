//! `/v1/nodes`: the nodes of the cluster (admin): list them, drain one
//! (new sandboxes avoid it, and every sandbox it owns moves off, one at a
//! time, in a task of the node that took the request) or set it up again.

use axum::extract::State;
use axum::{Extension, Json};
use dwell_contract::nodes::Node;
use dwell_contract::ErrorBody;
use dwell_store::{NodeRecord, NodeState};

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::extract::Path;
use crate::AppState;

fn view(n: NodeRecord, me: Option<&str>, owned: u64) -> Node {
    Node {
        owned,
        this_node: me == Some(n.name.as_str()),
        name: n.name,
        advertise: n.advertise,
        labels: n.labels,
        state: n.state.as_str().into(),
        vcpus: n.vcpus,
        memory_bytes: n.memory,
        disk_bytes: n.disk,
        allocated_vcpus: n.load.allocated_vcpus,
        allocated_memory_bytes: n.load.allocated_memory,
        allocated_disk_bytes: n.load.allocated_disk,
        sandboxes: n.load.sandboxes,
        version: n.version,
        started_at: n.started_at,
        heartbeat_at: n.heartbeat_at,
        lease_until: n.lease_until,
    }
}

#[utoipa::path(get, path = "/v1/nodes", tag = "nodes",
    summary = "List the nodes of the cluster (none on a single daemon)",
    responses((status = 200, body = Vec<Node>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Vec<Node>>> {
    crate::auth::require_admin(&p, "listing the nodes of a cluster")?;
    let me = st.ctl.node_name().map(String::from);
    let nodes = st.ctl.nodes()?;
    let owned = st.ctl.owned_counts()?;
    Ok(Json(
        nodes
            .into_iter()
            .map(|n| {
                let c = owned.get(&n.name).copied().unwrap_or(0);
                view(n, me.as_deref(), c)
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/v1/nodes/{name}/drain", tag = "nodes",
    summary = "Drain a node: new sandboxes are placed elsewhere, and every sandbox it owns moves to another node",
    description = "Answers at once; the sandboxes move one at a time in the background (as `POST /v1/sandboxes/{id}/move` each, cold unless the sandbox is hibernated). The node's `owned` count reaches 0 when all have moved; a sandbox that cannot move (ephemeral, in a private network, with named volumes) stays and says why in its events.",
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 200, body = Node), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn drain(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<Json<Node>> {
    crate::auth::require_admin(&p, "draining a node")?;
    let n = st.ctl.set_node_state(&name, NodeState::Draining)?;
    let owned = st.ctl.owned_by(&name).await?.len() as u64;
    if owned > 0 {
        super::drain_node::spawn(st.clone(), p.clone(), name.clone());
    }
    Ok(Json(view(n, st.ctl.node_name(), owned)))
}

#[utoipa::path(post, path = "/v1/nodes/{name}/undrain", tag = "nodes",
    summary = "Set a draining node up again: it takes new sandboxes",
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 200, body = Node), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn undrain(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<Json<Node>> {
    crate::auth::require_admin(&p, "undraining a node")?;
    let n = st.ctl.set_node_state(&name, NodeState::Up)?;
    let owned = st.ctl.owned_by(&name).await?.len() as u64;
    Ok(Json(view(n, st.ctl.node_name(), owned)))
}
