//! The routes of the E2B control plane, one file per concern.

pub mod list;
pub mod metrics;
pub mod sandboxes;
pub mod snapshots;

use axum::http::{Method, Uri};
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::error::E2bError;
use crate::E2bState;

pub fn router(state: E2bState) -> Router {
    Router::new()
        .route("/v2/sandboxes", post(sandboxes::create).get(list::list))
        .route("/v2/sandboxes/{id}/connect", post(sandboxes::connect))
        // What older SDKs call to resume or connect.
        .route("/sandboxes/{id}/connect", post(sandboxes::connect))
        .route("/sandboxes/{id}/resume", post(sandboxes::connect))
        .route(
            "/sandboxes/{id}",
            get(sandboxes::get_one).delete(sandboxes::kill),
        )
        .route("/sandboxes/{id}/pause", post(sandboxes::pause))
        .route("/sandboxes/{id}/timeout", post(sandboxes::set_timeout))
        .route("/sandboxes/{id}/network", put(sandboxes::update_network))
        .route("/sandboxes/{id}/metrics", get(metrics::metrics))
        .route("/sandboxes/{id}/snapshots", post(snapshots::create))
        .route("/snapshots", get(snapshots::list))
        .route("/templates/{id}", delete(snapshots::delete))
        .fallback(unknown)
        .with_state(state)
}

async fn unknown(method: Method, uri: Uri) -> E2bError {
    E2bError::new(
        404,
        format!(
            "{method} {} is not part of dwell's E2B-compatible API (sandboxes: create, connect, pause, timeout, network, kill, info, list, metrics; snapshots); use dwell's own API for the rest",
            uri.path()
        ),
    )
}
