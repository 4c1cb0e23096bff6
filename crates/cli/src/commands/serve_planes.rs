//! What a cluster node's listener (other nodes only, mutual TLS) serves:
//! the REST API for requests other nodes forwarded, and the other planes
//! a forwarding node marks with `x-dwell-plane`: `e2b` (the E2B control
//! plane), `envd` (the E2B data plane) and `proxy` (the port proxy), each
//! served by this node's own router for it, as if the client had come
//! here. The header only means something on this listener: the nodes set
//! it, clients never reach it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use dwell_api::forward::PLANE_HEADER;
use hyper::service::Service;

/// This node's routers of the planes other than REST (None: this node
/// does not serve that plane).
#[derive(Default)]
pub struct Planes {
    /// `--e2b-listen`.
    pub e2b: Option<Router>,
    /// `--e2b-sandbox-listen`, or the proxy's envd.
    pub envd: Option<Router>,
    /// `--proxy-listen`.
    pub proxy: Option<dwell_proxy::NodeSide>,
}

/// The node listener's router: `rest` (`dwell_api::node_router`), or the
/// plane a request is marked for.
pub fn node_router(rest: Router, planes: Planes, node: &str) -> Router {
    let planes = Arc::new(planes);
    let node = node.to_string();
    Router::new().fallback(move |req: Request| {
        let (rest, planes, node) = (rest.clone(), planes.clone(), node.clone());
        async move { dispatch(rest, &planes, &node, req).await }
    })
}

async fn dispatch(rest: Router, planes: &Planes, node: &str, mut req: Request) -> Response {
    let Some(plane) = req.headers_mut().remove(PLANE_HEADER) else {
        return call(rest, req).await;
    };
    let (router, flag) = match plane.as_bytes() {
        b"proxy" => {
            return match &planes.proxy {
                Some(p) => p.serve(req).await,
                None => not_served(node, "port proxy", "--proxy-listen"),
            }
        }
        b"e2b" => (&planes.e2b, "--e2b-listen"),
        b"envd" => (
            &planes.envd,
            "--e2b-sandbox-listen (or --e2b-listen with --proxy-listen)",
        ),
        other => {
            return dwell_api::ApiError::bad_request(format!(
                "x-dwell-plane {:?} is none of e2b, envd, proxy (a node of a newer version?)",
                String::from_utf8_lossy(other)
            ))
            .into_response()
        }
    };
    match router {
        Some(r) => call(r.clone(), req).await,
        None => not_served(node, "E2B API", flag),
    }
}

async fn call(router: Router, req: Request) -> Response {
    let svc = hyper_util::service::TowerToHyperService::new(router);
    match svc.call(req).await {
        Ok(r) => r,
        Err(never) => {
            let never: Infallible = never;
            match never {}
        }
    }
}

/// The answer for a plane this node does not serve.
fn not_served(node: &str, what: &str, flag: &str) -> Response {
    dwell_api::ApiError::new(
        502,
        "plane_not_served",
        format!(
            "node {node} owns this sandbox but does not serve the {what}: start its daemon \
             with {flag} too (every node of a cluster should have the same listeners)"
        ),
    )
    .into_response()
}
