//! `POST /v1/sandboxes/{id}/move` (admin): move a sandbox to another node
//! of the cluster; and the node-only `POST /v1/node/take-over/{id}` the
//! moving node sends the new owner.
//!
//! A move request reaches the sandbox's owner (the forwarding layer sends
//! it there from whichever node the client reached). The owner hands the
//! sandbox over through the object store
//! ([`dwell_control::Controller::move_out`]), then asks the new owner to
//! take it over and bring it to the state it had (running, stopped,
//! hibernated), and answers what the new owner answers. If the new owner
//! cannot be reached, the answer is 202 with the record as it is: the
//! handoff is in the store, and the new owner's next pass takes it over.
//!
//! The take-over route is served only on the node listener (mutual TLS,
//! nodes only), from [`node_routes`]: it is no part of the public API.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use dwell_contract::nodes::{MoveRequest, TakeOver};
use dwell_contract::{ErrorBody, Sandbox};
use dwell_control::cluster::moves::{MoveRequest as Move, MovedOut};
use dwell_control::controller::Elsewhere;

use super::sandboxes::view;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::forward::PRINCIPAL_HEADERS;
use crate::AppState;

/// The routes only other nodes call (served on the node listener).
pub fn node_routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/node/take-over/{id}", post(take_over))
        .with_state(state)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/move", tag = "nodes",
    summary = "Move a sandbox to another node of the cluster (admin)",
    description = "The sandbox's owner stops it (a cold move) or hibernates it (`warm`: a running gVisor sandbox keeps its memory and processes), archives it into the object store, hands it to the node (`to`, or the one placement picks) in one transaction, and that node restores it (every chunk verified) and brings it back to the state it had. Refused, with nothing changed, for ephemeral sandboxes, members of private networks and sandboxes with named volumes (node-local resources). 202: handed over, but the new owner could not be reached; it takes the sandbox over on its next pass.",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = MoveRequest,
    responses(
        (status = 200, description = "Moved: the sandbox as its new owner has it", body = Sandbox),
        (status = 202, description = "Handed over; the new owner takes it over on its next pass", body = Sandbox),
        (status = "default", description = "Error", body = ErrorBody)))]
pub async fn move_sandbox(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<crate::extract::Json<MoveRequest>, crate::extract::BodyRejection>,
) -> Response {
    let req = match body {
        Ok(crate::extract::Json(r)) => r,
        Err(e) => {
            return ApiError::bad_request(format!("bad move request: {}", e.detail)).into_response()
        }
    };
    match move_here(&st, &p, &id, &req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Moves sandbox `id` of `p`'s tenant, which this node owns, to another
/// node and has it taken over there. Also what a drain calls for the
/// sandboxes of this node.
pub(crate) async fn move_here(
    st: &AppState,
    p: &Principal,
    id: &str,
    req: &MoveRequest,
) -> ApiResult<Response> {
    crate::auth::require_admin(p, "moving a sandbox")?;
    let by = if p.key_id.is_empty() {
        "an admin".to_string()
    } else {
        format!("key {}", p.key_id)
    };
    let moved = st
        .ctl
        .move_out(
            &p.tenant,
            id,
            &Move {
                to: req.to.clone(),
                warm: req.warm,
                by,
            },
        )
        .await?;
    hand_to(st, p, &moved).await
}

/// Asks the new owner of `moved` to take it over now; its answer, or 202
/// with the record when it cannot be reached.
async fn hand_to(st: &AppState, p: &Principal, moved: &MovedOut) -> ApiResult<Response> {
    let accepted = |st: &AppState| -> ApiResult<Response> {
        let sb = st.ctl.get(&p.tenant, &moved.id)?;
        Ok((StatusCode::ACCEPTED, view(&sb)?).into_response())
    };
    let Some(forward) = st.forward.clone() else {
        return accepted(st);
    };
    let body = serde_json::to_vec(&TakeOver {
        reach: Some(moved.reach.as_str().to_string()),
    })
    .map_err(|e| ApiError::internal(format!("a take-over request: {e}")))?;
    let mut r = Request::builder()
        .method(Method::POST)
        .uri(format!("/v1/node/take-over/{}", moved.id))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .map_err(|e| ApiError::internal(format!("a take-over request: {e}")))?;
    let h = r.headers_mut();
    let admin = if p.admin { "1" } else { "0" };
    for (name, v) in PRINCIPAL_HEADERS
        .iter()
        .zip([p.tenant.as_str(), admin, p.key_id.as_str()])
    {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(*name, v);
        }
    }
    let to = Elsewhere {
        node: moved.to.name.clone(),
        advertise: moved.to.advertise.clone(),
    };
    let resp = forward(to, r).await;
    if matches!(
        resp.status(),
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    ) {
        tracing::warn!(
            sandbox = moved.id,
            "handed to node {}, which cannot be reached now; it takes the sandbox over on its \
             next pass",
            moved.to.name
        );
        return accepted(st);
    }
    Ok(resp)
}

/// On the new owner: take the sandbox over now and bring it to the state
/// asked for.
async fn take_over(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<crate::extract::Json<TakeOver>, crate::extract::BodyRejection>,
) -> ApiResult<Json<Sandbox>> {
    crate::auth::require_admin(&p, "taking a sandbox over")?;
    let crate::extract::Json(req) =
        body.map_err(|e| ApiError::bad_request(format!("bad take-over request: {}", e.detail)))?;
    let reach = req
        .reach
        .as_deref()
        .map(dwell_control::model::parse_state)
        .transpose()?;
    let sb = st.ctl.take_over_now(&id, reach).await?;
    view(&sb)
}
