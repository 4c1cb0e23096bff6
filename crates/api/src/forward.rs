//! A cluster's requests, served by the node that owns their sandbox.
//!
//! Every node answers the whole API. Behind authentication, [`to_owner`]
//! looks at what a request is about: a sandbox (`/v1/sandboxes/{id}/...`)
//! owned by another node goes to that node, as it came (body streamed,
//! WebSocket upgrades joined), with the caller's principal in
//! [`PRINCIPAL_HEADERS`]; a create (`POST /v1/sandboxes`) goes to the node
//! placement picks. Everything else (lists, tenants, images, snapshots,
//! nodes) is served where it arrives: the records are shared.
//!
//! The owner serves forwarded requests on its node listener (mutual TLS,
//! nodes only; see `dwell-cluster`) with [`crate::node_router`], which takes
//! the principal from those headers and forwards nothing further: a
//! request for a sandbox it no longer owns (moved meanwhile) is refused
//! with 409 and retried by the node that forwarded it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dwell_control::controller::Elsewhere;

use crate::auth::Principal;
use crate::credential::Credential;
use crate::error::ApiError;
use crate::AppState;

/// The headers that carry the caller to the owner node.
pub const PRINCIPAL_HEADERS: [&str; 3] = [
    "x-dwell-forwarded-tenant",
    "x-dwell-forwarded-admin",
    "x-dwell-forwarded-key-id",
];
/// The credential a client's forwarded request was made with
/// (`key:ID` or `session:ID`), so that the owner ends what it opened when
/// the key or session ends ([`crate::credential`]). Requests nodes make
/// themselves (moves, drains) carry none.
pub const CREDENTIAL_HEADER: &str = "x-dwell-forwarded-credential";
/// Set by the owner on a 409 for a sandbox it does not own (anymore).
pub const NOT_OWNER_HEADER: &str = "x-dwell-not-owner";
/// Set by a forwarding node to say which of its listeners a request came
/// to (`e2b`, `envd`, `proxy`; absent: the REST API), so that the owner's
/// node listener serves it with the same plane. It is only read on the
/// node listener (nodes only): a client's value never counts.
pub const PLANE_HEADER: &str = "x-dwell-plane";

/// Sends a request to another node and returns its answer (errors are
/// answers too: a 502/503 that names the node).
pub type ForwardFn =
    Arc<dyn Fn(Elsewhere, Request) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// Most bytes of a create request read to place it.
pub const CREATE_BODY_MAX: usize = 2 << 20;

/// The node that serves sandbox `id` of `tenant` (None: this one), asked
/// of the store off the async threads.
pub async fn owner_of(
    ctl: &dwell_control::Controller,
    tenant: &str,
    id: String,
) -> Result<Option<Elsewhere>, dwell_control::Error> {
    let (ctl, tenant) = (ctl.clone(), tenant.to_string());
    tokio::task::spawn_blocking(move || ctl.owner(&tenant, &id))
        .await
        .map_err(|e| dwell_control::Error::Internal(format!("owner lookup failed: {e}")))?
}

/// What a request is about, for forwarding.
#[derive(Debug, PartialEq)]
enum About {
    /// A sandbox, by id or name.
    Sandbox(String),
    /// A new sandbox.
    Create,
    /// Anything else: served here.
    Here,
}

fn about(method: &Method, path: &str) -> About {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some("sandboxes"), Some(id)) if !id.is_empty() => {
            About::Sandbox(percent_decode(id))
        }
        (Some("v1"), Some("sandboxes"), None) if method == Method::POST => About::Create,
        _ => About::Here,
    }
}

/// `%XX` escapes of a path segment decoded (a name is plain ASCII; a bad
/// escape is kept as written, and then matches no sandbox).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `req` with the principal in [`PRINCIPAL_HEADERS`] (whatever the client
/// sent under those names dropped first). The caller is the effective one:
/// an admin acting for a tenant (`x-dwell-tenant`, see `auth::act_for`)
/// is that tenant, not an admin, on the owner too.
pub fn with_principal(mut req: Request, p: &Principal) -> Request {
    set_principal(req.headers_mut(), p);
    req
}

/// A REST request forwarded to its owner: the caller in the principal
/// headers, and none of the client's own credentials (an API key, the
/// web console's cookie and CSRF token), which stay with the node that
/// checked them.
fn as_forwarded(mut req: Request, p: &Principal) -> Request {
    let cred = match req.extensions().get::<Credential>() {
        Some(Credential::Session(s)) => HeaderValue::from_str(&format!("session:{}", s.id)).ok(),
        Some(Credential::Key(id)) => HeaderValue::from_str(&format!("key:{id}")).ok(),
        None => None,
    };
    let h = req.headers_mut();
    for name in [
        axum::http::header::AUTHORIZATION.as_str(),
        axum::http::header::COOKIE.as_str(),
        "x-api-key",
        dwell_contract::console::CSRF_HEADER,
    ] {
        h.remove(name);
    }
    let mut req = with_principal(req, p);
    if let Some(v) = cred {
        req.headers_mut().insert(CREDENTIAL_HEADER, v);
    }
    req
}

/// Removes every header nodes set for each other (a caller, a
/// credential, a plane, an owner) from a client's request: what a
/// forwarded request carries of them is its forwarding node's word only.
/// Every plane that forwards calls it before marking the request.
pub fn drop_node_headers(h: &mut HeaderMap) {
    for name in PRINCIPAL_HEADERS {
        h.remove(name);
    }
    h.remove(CREDENTIAL_HEADER);
    h.remove(NOT_OWNER_HEADER);
    h.remove(PLANE_HEADER);
}

fn set_principal(h: &mut HeaderMap, p: &Principal) {
    // The owner serves a request with the plane its forwarder names; one
    // that came to the REST API is for the REST API.
    drop_node_headers(h);
    let put = |h: &mut HeaderMap, name: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(name, v);
        }
    };
    put(h, PRINCIPAL_HEADERS[0], &p.tenant);
    put(h, PRINCIPAL_HEADERS[1], if p.admin { "1" } else { "0" });
    put(h, PRINCIPAL_HEADERS[2], &p.key_id);
}

/// Middleware of the public listeners (behind authentication).
pub async fn to_owner(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(forward) = st.forward.clone() else {
        return next.run(req).await;
    };
    let Some(p) = req.extensions().get::<Principal>().cloned() else {
        return next.run(req).await;
    };
    match about(req.method(), req.uri().path()) {
        About::Here => next.run(req).await,
        About::Sandbox(id) => {
            let owner = match owner_of(&st.ctl, &p.tenant, id).await {
                Ok(o) => o,
                Err(e) => return ApiError::from(e).into_response(),
            };
            match owner {
                None => next.run(req).await,
                Some(e) => forward(e, as_forwarded(req, &p)).await,
            }
        }
        About::Create => create(&st, &p, req, next, forward).await,
    }
}

/// A create, on the node placement picks.
async fn create(
    st: &AppState,
    p: &Principal,
    req: Request,
    next: Next,
    forward: ForwardFn,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, CREATE_BODY_MAX).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                413,
                "payload_too_large",
                format!("a create request is at most {CREATE_BODY_MAX} bytes of JSON"),
            )
            .into_response()
        }
    };
    let parsed: Option<dwell_control::CreateRequest> =
        serde_json::from_slice::<dwell_contract::CreateRequest>(&bytes)
            .ok()
            .and_then(|r| crate::wire::map(&r).ok());
    let req = Request::from_parts(parts, Body::from(bytes));
    // A request that does not parse is answered here (the handler says
    // what is wrong with it).
    let Some(parsed) = parsed else {
        return next.run(req).await;
    };
    let ctl = st.ctl.clone();
    let placed = tokio::task::spawn_blocking(move || {
        let needs = ctl.needs_of(&parsed)?;
        ctl.place(&needs)
    })
    .await;
    match placed {
        Ok(Ok(None)) => next.run(req).await,
        Ok(Ok(Some(e))) => forward(e, as_forwarded(req, p)).await,
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => ApiError::internal(format!("placement failed: {e}")).into_response(),
    }
}

/// Middleware of the node listener: the principal from
/// [`PRINCIPAL_HEADERS`] (the listener serves only nodes of the cluster),
/// and a refusal for a sandbox this node does not own.
pub async fn from_node(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(p) = principal_of(req.headers()) else {
        return ApiError::bad_request(MISSING_PRINCIPAL).into_response();
    };
    if let About::Sandbox(id) = about(req.method(), req.uri().path()) {
        // Served here only when this node is known to own it: a failed
        // lookup is an answer, never a fall-through.
        let e = match owner_of(&st.ctl, &p.tenant, id).await {
            Ok(e) => e,
            Err(e) => return ApiError::from(e).into_response(),
        };
        if let Some(e) = e {
            let mut r = ApiError::new(
                409,
                "conflict",
                format!(
                    "this sandbox is owned by node {} now; retry the request",
                    e.node
                ),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&e.node) {
                r.headers_mut().insert(NOT_OWNER_HEADER, v);
            }
            return r;
        }
    }
    match credential_of(&st, req.headers()).await {
        Ok(Some(c)) => {
            req.extensions_mut().insert(c);
        }
        Ok(None) => {}
        Err(e) => return e.into_response(),
    }
    req.extensions_mut().insert(p);
    next.run(req).await
}

/// The credential a forwarded request names ([`CREDENTIAL_HEADER`]): a
/// key, or a console session, which must still hold; none for a request
/// of the unix socket or of a node itself.
async fn credential_of(st: &AppState, h: &HeaderMap) -> Result<Option<Credential>, ApiError> {
    let named = h.get(CREDENTIAL_HEADER).and_then(|v| v.to_str().ok());
    if let Some(id) = named.and_then(|v| v.strip_prefix("key:")) {
        return Ok(Some(Credential::Key(id.to_string())));
    }
    if let Some(id) = named.and_then(|v| v.strip_prefix("session:")) {
        // Checked as the forwarding node checked it (revoked, expired,
        // its key revoked), not only found.
        let (st2, id) = (st.clone(), id.to_string());
        let found = tokio::task::spawn_blocking(move || crate::session::by_id(&st2, &id))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
        return match found {
            Some(s) => Ok(Some(Credential::Session(s))),
            None => Err(ApiError::unauthorized(
                "the console session of this request has ended; log in again at /ui/",
            )),
        };
    }
    Ok(None)
}

/// What a node listener answers to a forwarded request without its caller.
pub const MISSING_PRINCIPAL: &str =
    "a forwarded request must carry its caller (x-dwell-forwarded-tenant, -admin and -key-id)";

/// The caller a forwarding node put in [`PRINCIPAL_HEADERS`] (read on the
/// node listener only).
pub fn principal_of(h: &HeaderMap) -> Option<Principal> {
    let get = |i: usize| h.get(PRINCIPAL_HEADERS[i]).and_then(|v| v.to_str().ok());
    let (Some(tenant), Some(admin), Some(key_id)) = (get(0), get(1), get(2)) else {
        return None;
    };
    Some(Principal {
        tenant: tenant.to_string(),
        admin: admin == "1",
        key_id: key_id.to_string(),
    })
}

/// An answer for a request that could not reach `node`.
pub fn unreachable(node: &str, why: &str) -> Response {
    ApiError::new(
        StatusCode::BAD_GATEWAY.as_u16(),
        "node_unreachable",
        format!("node {node}, which serves this request, cannot be reached: {why}; `dwell node ls` shows the nodes and their last heartbeat"),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_about_a_sandbox_a_create_or_here() {
        let g = Method::GET;
        assert_eq!(
            about(&g, "/v1/sandboxes/w1/exec"),
            About::Sandbox("w1".into())
        );
        assert_eq!(
            about(&g, "/v1/sandboxes/w%201"),
            About::Sandbox("w 1".into())
        );
        assert_eq!(about(&Method::POST, "/v1/sandboxes"), About::Create);
        assert_eq!(about(&g, "/v1/sandboxes"), About::Here);
        assert_eq!(about(&g, "/v1/sandboxes/"), About::Here);
        assert_eq!(about(&g, "/v1/snapshots/s1"), About::Here);
        assert_eq!(about(&g, "/v1/nodes"), About::Here);
    }

    #[test]
    fn a_client_cannot_send_its_own_principal() {
        let mut h = HeaderMap::new();
        h.insert(PRINCIPAL_HEADERS[0], HeaderValue::from_static("victim"));
        h.insert(PRINCIPAL_HEADERS[1], HeaderValue::from_static("1"));
        h.insert(PLANE_HEADER, HeaderValue::from_static("agent"));
        set_principal(
            &mut h,
            &Principal {
                tenant: "me".into(),
                admin: false,
                key_id: "k1".into(),
            },
        );
        assert_eq!(h[PRINCIPAL_HEADERS[0]], "me");
        assert_eq!(h[PRINCIPAL_HEADERS[1]], "0");
        assert_eq!(h.get_all(PRINCIPAL_HEADERS[0]).iter().count(), 1);
        assert!(h.get(PLANE_HEADER).is_none());
    }
}
