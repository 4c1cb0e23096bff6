//! The E2B control plane in a cluster: every node answers it, and a
//! request about one sandbox (`/sandboxes/{id}/...`, `/v2/sandboxes/{id}/...`)
//! is served by the node that owns it; a create goes to the node placement
//! picks for what the template needs. Such requests go over the node
//! channel as they came, marked `x-dwell-plane: e2b`, with the caller
//! (the API key was checked here) in dwell's principal headers, and that
//! node serves them with its [`crate::Routers::node`] router, which takes
//! the caller from those headers and refuses with 409 a sandbox it does
//! not own (moved meanwhile). Lists, templates and snapshots are served
//! where they arrive: their records are shared.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dwell_api::forward::{principal_of, with_principal, NOT_OWNER_HEADER, PLANE_HEADER};
use dwell_api::Principal;

use crate::error::E2bError;
use crate::E2bState;

use dwell_api::forward::{owner_of, CREATE_BODY_MAX};

/// What a request is about.
#[derive(Debug, PartialEq)]
enum About {
    Sandbox(String),
    Create,
    Here,
}

fn about(method: &Method, path: &str) -> About {
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("v2/").unwrap_or(path);
    let mut parts = path.split('/');
    match (parts.next(), parts.next()) {
        // `/sandboxes/metrics` is the metrics of many sandboxes.
        (Some("sandboxes"), Some(id)) if !id.is_empty() && id != "metrics" => {
            // Decoded as the route's path extractor decodes it: both name
            // the same sandbox.
            About::Sandbox(dwell_api::forward::percent_decode(id))
        }
        (Some("sandboxes"), None) if method == Method::POST => About::Create,
        _ => About::Here,
    }
}

/// The request marked for the owner's E2B plane, with its caller.
fn marked(req: Request, p: &Principal) -> Request {
    let mut req = with_principal(req, p);
    req.headers_mut()
        .insert(PLANE_HEADER, HeaderValue::from_static("e2b"));
    req
}

/// Middleware of the E2B listeners (behind the API key check).
pub async fn to_owner(State(st): State<E2bState>, req: Request, next: Next) -> Response {
    let Some(forward) = st.forward.clone() else {
        return next.run(req).await;
    };
    let Some(p) = req.extensions().get::<Principal>().cloned() else {
        return next.run(req).await;
    };
    match about(req.method(), req.uri().path()) {
        About::Here => next.run(req).await,
        About::Sandbox(id) => match owner_of(&st.ctl, &p.tenant, id).await {
            Ok(None) => next.run(req).await,
            Ok(Some(e)) => forward(e, marked(req, &p)).await,
            Err(e) => E2bError::from(e).into_response(),
        },
        About::Create => {
            let (parts, body) = req.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, CREATE_BODY_MAX).await else {
                return E2bError::new(
                    413,
                    format!("a create request is at most {CREATE_BODY_MAX} bytes of JSON"),
                )
                .into_response();
            };
            let needs = crate::routes::sandboxes::needs_of(&st, &p, &bytes).await;
            let req = Request::from_parts(parts, Body::from(bytes));
            // A request whose needs are unclear (it does not parse, its
            // template is unknown) is answered here: the handler says why.
            let Some(needs) = needs else {
                return next.run(req).await;
            };
            let ctl = st.ctl.clone();
            match tokio::task::spawn_blocking(move || ctl.place(&needs)).await {
                Ok(Ok(None)) => next.run(req).await,
                Ok(Ok(Some(e))) => forward(e, marked(req, &p)).await,
                Ok(Err(e)) => E2bError::from(e).into_response(),
                Err(e) => E2bError::new(500, format!("placement failed: {e}")).into_response(),
            }
        }
    }
}

/// Middleware of the node listener's E2B plane: the caller from the
/// principal headers, and a refusal for a sandbox this node does not own.
pub async fn from_node(State(st): State<E2bState>, mut req: Request, next: Next) -> Response {
    let Some(p) = principal_of(req.headers()) else {
        return E2bError::bad_request(dwell_api::forward::MISSING_PRINCIPAL).into_response();
    };
    if let About::Sandbox(id) = about(req.method(), req.uri().path()) {
        // Served here only when this node is known to own it.
        let e = match owner_of(&st.ctl, &p.tenant, id).await {
            Ok(e) => e,
            Err(e) => return E2bError::from(e).into_response(),
        };
        if let Some(e) = e {
            let mut r = E2bError::conflict(format!(
                "this sandbox is owned by node {} now; retry the request",
                e.node
            ))
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&e.node) {
                r.headers_mut().insert(NOT_OWNER_HEADER, v);
            }
            return r;
        }
    }
    req.extensions_mut().insert(p);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_about_a_sandbox_a_create_or_here() {
        let (g, p) = (Method::GET, Method::POST);
        assert_eq!(about(&g, "/sandboxes/i1"), About::Sandbox("i1".into()));
        assert_eq!(
            about(&p, "/v2/sandboxes/i1/connect"),
            About::Sandbox("i1".into())
        );
        assert_eq!(
            about(&p, "/sandboxes/i1/pause"),
            About::Sandbox("i1".into())
        );
        assert_eq!(about(&p, "/v2/sandboxes"), About::Create);
        assert_eq!(about(&p, "/sandboxes"), About::Create);
        assert_eq!(about(&g, "/v2/sandboxes"), About::Here);
        assert_eq!(about(&g, "/sandboxes/metrics"), About::Here);
        assert_eq!(about(&g, "/templates/t1"), About::Here);
        assert_eq!(about(&g, "/snapshots"), About::Here);
    }
}
