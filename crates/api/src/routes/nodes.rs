//! `/v1/nodes`: the nodes of the cluster (admin): list them, set one
//! draining (new sandboxes avoid it) or up again.

use axum::extract::State;
use axum::{Extension, Json};
use dwell_contract::nodes::Node;
use dwell_contract::ErrorBody;
use dwell_store::{NodeRecord, NodeState};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::AppState;

fn admin(p: &Principal) -> ApiResult<()> {
    if p.admin {
        Ok(())
    } else {
        Err(ApiError::new(
            403,
            "permission_denied",
            "the nodes of a cluster are for admins: this needs an admin API key",
        ))
    }
}

fn view(n: NodeRecord, me: Option<&str>) -> Node {
    Node {
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
    admin(&p)?;
    let me = st.ctl.node_name().map(String::from);
    let nodes = st.ctl.nodes()?;
    Ok(Json(
        nodes.into_iter().map(|n| view(n, me.as_deref())).collect(),
    ))
}

#[utoipa::path(post, path = "/v1/nodes/{name}/drain", tag = "nodes",
    summary = "Set a node draining: new sandboxes are placed elsewhere",
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 200, body = Node), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn drain(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<Json<Node>> {
    admin(&p)?;
    let n = st.ctl.set_node_state(&name, NodeState::Draining)?;
    Ok(Json(view(n, st.ctl.node_name())))
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
    admin(&p)?;
    let n = st.ctl.set_node_state(&name, NodeState::Up)?;
    Ok(Json(view(n, st.ctl.node_name())))
}
