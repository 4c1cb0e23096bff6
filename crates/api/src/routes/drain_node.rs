//! The drain of a node: a task of the node that took the request moves
//! every sandbox the draining node owns to other nodes, one at a time,
//! each through the move route of its owner (here, or forwarded to it).
//! A sandbox that cannot move is left, with the reason in its events; the
//! task stops when the node is set up again (`undrain`), when it owns
//! nothing more, or when a round moved nothing.

use std::collections::HashSet;
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method};
use dwell_contract::nodes::MoveRequest;
use dwell_control::controller::Elsewhere;
use dwell_store::NodeState;

use crate::auth::Principal;
use crate::forward::PRINCIPAL_HEADERS;
use crate::AppState;

/// The nodes a task of this daemon is draining.
static DRAINING: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn claim(node: &str) -> bool {
    let mut g = DRAINING.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(HashSet::new).insert(node.to_string())
}

fn release(node: &str) {
    let mut g = DRAINING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = g.as_mut() {
        s.remove(node);
    }
}

/// Starts draining `node` for admin `p` (once per node at a time).
pub(crate) fn spawn(st: AppState, p: Principal, node: String) {
    if !claim(&node) {
        return;
    }
    tokio::spawn(async move {
        drain(&st, &p, &node).await;
        release(&node);
    });
}

async fn drain(st: &AppState, p: &Principal, node: &str) {
    loop {
        let owned = match st.ctl.owned_by(node).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("drain of node {node}: cannot list its sandboxes: {e}");
                return;
            }
        };
        if owned.is_empty() {
            tracing::info!("drain of node {node}: every sandbox moved off");
            return;
        }
        let mut moved = 0;
        for sb in owned {
            match st.ctl.node(node) {
                Ok(n) if n.state == NodeState::Draining => {}
                _ => {
                    tracing::info!("drain of node {node} stopped: it is no longer draining");
                    return;
                }
            }
            match move_one(st, p, node, &sb.tenant, &sb.id).await {
                Ok(()) => moved += 1,
                Err(why) => {
                    let msg = format!("drain of node {node} cannot move it: {why}");
                    tracing::warn!(sandbox = sb.id, "{msg}");
                    st.ctl.note(&sb.id, &msg);
                }
            }
        }
        if moved == 0 {
            tracing::warn!(
                "drain of node {node}: what is left cannot move (see each sandbox's events)"
            );
            return;
        }
    }
}

/// Moves sandbox `id` of `tenant` off `node`: here when this node owns it,
/// else through its owner's move route.
async fn move_one(
    st: &AppState,
    p: &Principal,
    node: &str,
    tenant: &str,
    id: &str,
) -> Result<(), String> {
    let as_owner = Principal {
        tenant: tenant.to_string(),
        admin: true,
        key_id: p.key_id.clone(),
    };
    let req = MoveRequest::default();
    if st.ctl.node_name() == Some(node) {
        let r = match super::moves::move_here(st, &as_owner, id, &req).await {
            Ok(r) => r,
            Err(e) => axum::response::IntoResponse::into_response(e),
        };
        return check(r).await;
    }
    let Some(forward) = st.forward.clone() else {
        return Err("this daemon cannot reach other nodes".into());
    };
    let n = st.ctl.node(node).map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
    let mut r = Request::builder()
        .method(Method::POST)
        .uri(format!("/v1/sandboxes/{id}/move"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .map_err(|e| e.to_string())?;
    for (name, v) in
        PRINCIPAL_HEADERS
            .iter()
            .zip([as_owner.tenant.as_str(), "1", as_owner.key_id.as_str()])
    {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(*name, v);
        }
    }
    let resp = forward(
        Elsewhere {
            node: n.name,
            advertise: n.advertise,
        },
        r,
    )
    .await;
    check(resp).await
}

/// Ok for a 2xx answer, else its error message.
async fn check(r: axum::response::Response) -> Result<(), String> {
    if r.status().is_success() {
        return Ok(());
    }
    let status = r.status();
    let body = axum::body::to_bytes(r.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let msg = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    Err(format!("{status}: {msg}"))
}
