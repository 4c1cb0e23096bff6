//! What a cluster node's listener (other nodes only, mutual TLS) serves:
//! the REST API for requests other nodes forwarded, and the other planes
//! a forwarding node marks with `x-dwell-plane`: `e2b` (the E2B control
//! plane), `envd` (the E2B data plane) and `proxy` (the port proxy), each
//! served by this node's own router for it, as if the client had come
//! here. The header only means something on this listener: the nodes set
//! it, clients never reach it.
//!
//! One more, `agent`, is for the SSH gateway of another node: a login
//! there to a sandbox of this node gets a raw connection to its agent
//! (an upgrade of `/v1/sandboxes/{id}/agent`) with the agent key, the
//! image's command defaults and the sandbox's secret variables in the
//! answer's headers; the sandbox counts as active while it is open.
//! [`ssh_remote`] is the gateway's side of it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use dwell_api::forward::{principal_of, NOT_OWNER_HEADER, PLANE_HEADER, PRINCIPAL_HEADERS};
use dwell_control::controller::Elsewhere;
use dwell_control::secrets::{hex, unhex};
use dwell_control::Controller;
use hyper::service::Service;

/// The `Upgrade` protocol of an agent connection.
const AGENT_UPGRADE: &str = "dwell-agent";
/// Answer headers of an agent connection.
const AGENT_KEY_HEADER: &str = "x-dwell-agent-key";
const COMMAND_DEFAULTS_HEADER: &str = "x-dwell-command-defaults";
/// The secret variables, as hex of their JSON object.
const SECRETS_HEADER: &str = "x-dwell-secret-env";

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
pub fn node_router(ctl: Controller, rest: Router, planes: Planes, node: &str) -> Router {
    let planes = Arc::new(planes);
    let node = node.to_string();
    Router::new().fallback(move |req: Request| {
        let (ctl, rest, planes, node) = (ctl.clone(), rest.clone(), planes.clone(), node.clone());
        async move { dispatch(&ctl, rest, &planes, &node, req).await }
    })
}

async fn dispatch(
    ctl: &Controller,
    rest: Router,
    planes: &Planes,
    node: &str,
    mut req: Request,
) -> Response {
    let Some(plane) = req.headers_mut().remove(PLANE_HEADER) else {
        return call(rest, req).await;
    };
    let (router, flag) = match plane.as_bytes() {
        b"agent" => return agent_link(ctl, req).await,
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
            "x-dwell-plane {:?} is none of e2b, envd, proxy, agent (a node of a newer version?)",
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

/// `GET /v1/sandboxes/{id}/agent` (upgrade, plane `agent`): a raw
/// connection to the agent of sandbox `id`, which this node runs, for the
/// caller in the principal headers.
async fn agent_link(ctl: &Controller, mut req: Request) -> Response {
    let Some(p) = principal_of(req.headers()) else {
        return dwell_api::ApiError::bad_request(dwell_api::forward::MISSING_PRINCIPAL)
            .into_response();
    };
    let id = req
        .uri()
        .path()
        .strip_prefix("/v1/sandboxes/")
        .and_then(|r| r.strip_suffix("/agent"))
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .map(str::to_string);
    let Some(id) = id else {
        return dwell_api::ApiError::bad_request(
            "an agent connection is asked for at /v1/sandboxes/{id}/agent",
        )
        .into_response();
    };
    let (c, tenant, sid) = (ctl.clone(), p.tenant.clone(), id.clone());
    let owner = tokio::task::spawn_blocking(move || c.owner(&tenant, &sid)).await;
    match owner {
        Ok(Ok(None)) => {}
        Ok(Ok(Some(e))) => {
            let mut r = dwell_api::ApiError::new(
                409,
                "conflict",
                format!("this sandbox is owned by node {} now; retry", e.node),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&e.node) {
                r.headers_mut().insert(NOT_OWNER_HEADER, v);
            }
            return r;
        }
        Ok(Err(e)) => return dwell_api::ApiError::from(e).into_response(),
        Err(e) => {
            return dwell_api::ApiError::internal(format!("owner lookup failed: {e}"))
                .into_response()
        }
    }
    let link = match ctl.agent_link(&p.tenant, &id, "SSH").await {
        Ok(l) => l,
        Err(e) => return dwell_api::ApiError::from(e).into_response(),
    };
    let secrets = match ctl.secret_env(&id) {
        Ok(s) => s,
        Err(e) => return dwell_api::ApiError::from(e).into_response(),
    };
    let secrets = hex(&serde_json::to_vec(&secrets).unwrap_or_default());
    let upgrade = hyper::upgrade::on(&mut req);
    // An open connection keeps the sandbox from being idle.
    let active = ctl.stream_opened(&id);
    tokio::spawn(async move {
        let _active = active;
        let mut agent = link.stream;
        match upgrade.await {
            Ok(up) => {
                let mut up = hyper_util::rt::TokioIo::new(up);
                let _ = tokio::io::copy_bidirectional(&mut up, &mut agent).await;
            }
            Err(e) => tracing::debug!("agent connection for another node not upgraded: {e}"),
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(AGENT_UPGRADE));
    let put = |h: &mut HeaderMap, name: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(name, v);
        }
    };
    if let Some(k) = &link.key {
        put(h, AGENT_KEY_HEADER, k);
    }
    put(
        h,
        COMMAND_DEFAULTS_HEADER,
        if link.command_defaults { "1" } else { "0" },
    );
    put(h, SECRETS_HEADER, &secrets);
    r
}

/// The SSH gateway's way to the agents of other nodes' sandboxes, over
/// the node channel with `fwd`.
pub fn ssh_remote(fwd: dwell_cluster::Forwarder) -> dwell_ssh::Remote {
    dwell_ssh::Remote(Arc::new(move |to: Elsewhere, who: dwell_ssh::Asker| {
        let fwd = fwd.clone();
        Box::pin(async move { remote_agent(&fwd, to, who).await })
    }))
}

async fn remote_agent(
    fwd: &dwell_cluster::Forwarder,
    to: Elsewhere,
    who: dwell_ssh::Asker,
) -> Result<dwell_ssh::RemoteAgent, String> {
    let mut req = Request::new(Body::empty());
    *req.uri_mut() = format!("/v1/sandboxes/{}/agent", who.sandbox_id)
        .parse()
        .map_err(|e| format!("bad sandbox id: {e}"))?;
    let h = req.headers_mut();
    let put = |h: &mut HeaderMap, name: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(name, v);
        }
    };
    put(h, PLANE_HEADER, "agent");
    put(h, PRINCIPAL_HEADERS[0], &who.tenant);
    put(h, PRINCIPAL_HEADERS[1], "0");
    put(h, PRINCIPAL_HEADERS[2], &format!("ssh:{}", who.key_id));
    put(h, header::CONNECTION.as_str(), "upgrade");
    put(h, header::UPGRADE.as_str(), AGENT_UPGRADE);
    let (headers, io) = match fwd.upgrade(&to.node, &to.advertise, req).await {
        Ok(Ok(v)) => v,
        Ok(Err(resp)) => {
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
                .await
                .unwrap_or_default();
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(format!("{message} ({status})"));
        }
        Err(e) => return Err(e.to_string()),
    };
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let key = match text(AGENT_KEY_HEADER) {
        Some(k) => {
            Some(dwell_proto::AgentKey::from_hex(k).map_err(|e| format!("bad agent key: {e}"))?)
        }
        None => None,
    };
    let secrets = text(SECRETS_HEADER)
        .and_then(unhex)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the owner sent no readable secret variables")?;
    let peer = dwell_proto::Peer {
        sandbox: who.sandbox_id.clone(),
        key,
    };
    let client = dwell_proto::AgentClient::from_stream_to(io, &peer)
        .await
        .map_err(|e| format!("the agent handshake failed: {e}"))?;
    Ok(dwell_ssh::RemoteAgent {
        client,
        command_defaults: text(COMMAND_DEFAULTS_HEADER) == Some("1"),
        secrets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_goes_both_ways() {
        let b = br#"{"A":"1 \u00e9"}"#;
        assert_eq!(unhex(&hex(b)).as_deref(), Some(&b[..]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(""), Some(vec![]));
    }
}
