//! The envd data plane in a cluster: a request names its sandbox (the
//! `E2b-Sandbox-Id` header or a `49983-{id}` host); when another node owns
//! that sandbox, the request goes, as it came, to that node over the node
//! channel (marked `x-dwell-plane: envd`), which serves it with its own
//! envd router: the access token is checked there, by the owner. A
//! forwarded request for a sandbox the receiving node does not own (moved
//! meanwhile) is refused with 409 and the owner's name.
//!
//! On a single node, and for sandboxes this node owns, nothing changes:
//! the layer is not there without a forwarder, and a sandbox of this node
//! costs one record lookup.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dwell_api::forward::{ForwardFn, NOT_OWNER_HEADER, PLANE_HEADER};
use dwell_control::controller::Elsewhere;
use dwell_control::{Controller, SandboxSpec};

use crate::sandbox::{sandbox_id, Reject};

/// What the layer needs.
#[derive(Clone)]
pub(crate) struct Route {
    pub ctl: Arc<Controller>,
    /// Set on the listeners clients reach; None on the node listener.
    pub forward: Option<ForwardFn>,
}

/// The node that owns sandbox `id` when it is not this one (None: this
/// node, a single node, or no such sandbox, which this node answers).
fn owner_by_id(ctl: &Controller, id: &str) -> Result<Option<Elsewhere>, String> {
    let rec = ctl
        .store()
        .get_sandbox::<SandboxSpec>(id)
        .map_err(|e| e.to_string())?;
    let Some(rec) = rec.filter(|r| r.deleted_at.is_none()) else {
        return Ok(None);
    };
    if rec.node.is_some() && rec.node.as_deref() == ctl.node_name() {
        return Ok(None);
    }
    ctl.owner(&rec.tenant, &rec.id).map_err(|e| e.to_string())
}

/// Middleware: a request for another node's sandbox goes to that node
/// (with a forwarder) or is refused (on the node listener).
pub(crate) async fn to_owner(State(r): State<Route>, mut req: Request, next: Next) -> Response {
    let Some(id) = sandbox_id(req.headers()) else {
        return next.run(req).await;
    };
    let ctl = r.ctl.clone();
    let owner = match tokio::task::spawn_blocking(move || owner_by_id(&ctl, &id)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Reject::new(StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
        Err(e) => {
            return Reject::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the owner lookup failed: {e}"),
            )
            .into_response()
        }
    };
    let Some(owner) = owner else {
        return next.run(req).await;
    };
    let Some(forward) = r.forward else {
        let mut resp = Reject::new(
            StatusCode::CONFLICT,
            format!(
                "this sandbox is owned by node {} now; retry the request",
                owner.node
            ),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&owner.node) {
            resp.headers_mut().insert(NOT_OWNER_HEADER, v);
        }
        return resp;
    };
    dwell_api::forward::drop_node_headers(req.headers_mut());
    req.headers_mut()
        .insert(PLANE_HEADER, HeaderValue::from_static("envd"));
    forward(owner, req).await
}
