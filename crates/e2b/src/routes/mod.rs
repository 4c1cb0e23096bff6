//! The routes of the E2B control plane, one file per concern.

pub mod list;
pub mod logs;
pub mod metrics;
pub mod sandboxes;
pub mod snapshots;
pub mod template_builds;
pub mod template_start;
pub mod templates;

use axum::http::{Method, Uri};
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::error::E2bError;
use crate::E2bState;

pub fn router(state: E2bState) -> Router {
    Router::new()
        .route("/v2/sandboxes", post(sandboxes::create).get(list::list))
        // What SDKs before the v2 create route call (Python e2b 2.45).
        .route(
            "/sandboxes",
            post(sandboxes::create).get(list::list_running),
        )
        .route("/sandboxes/metrics", get(metrics::many))
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
        .route("/sandboxes/{id}/refreshes", post(sandboxes::refresh))
        .route("/sandboxes/{id}/fork", post(sandboxes::fork))
        .route("/sandboxes/{id}/network", put(sandboxes::update_network))
        .route("/sandboxes/{id}/metrics", get(metrics::metrics))
        .route("/sandboxes/{id}/logs", get(logs::v1))
        .route("/v2/sandboxes/{id}/logs", get(logs::v2))
        .route("/sandboxes/{id}/snapshots", post(snapshots::create))
        .route("/snapshots", get(snapshots::list))
        .route("/templates/{id}", delete(snapshots::delete))
        .route("/v3/templates", post(templates::request_build))
        .route("/templates", get(templates::list))
        .route("/templates/{id}/files/{hash}", get(templates::upload_link))
        .route(
            "/v2/templates/{id}/builds/{build}",
            post(template_builds::start),
        )
        .route(
            "/templates/{id}/builds/{build}/status",
            get(templates::status),
        )
        .route("/templates/aliases/{alias}", get(templates::alias))
        .route(
            "/templates/tags",
            post(templates::assign_tags).delete(templates::remove_tags),
        )
        .route("/templates/{id}/tags", get(templates::tags))
        .fallback(unknown)
        .with_state(state)
}

/// Routes authorized by what their URL carries, not by an API key: the
/// one-time upload URLs of template files.
pub fn unauthenticated(state: E2bState) -> Router {
    Router::new()
        .route("/templates/files/upload/{token}", put(templates::upload))
        .with_state(state)
}

async fn unknown(method: Method, uri: Uri) -> E2bError {
    E2bError::new(
        404,
        format!(
            "{method} {} is not part of dwell's E2B-compatible API (sandboxes: create, connect, pause, timeout, refresh, fork, network, kill, info, list, metrics, logs; snapshots; templates: build, status, aliases, tags, list, delete); use dwell's own API for the rest",
            uri.path()
        ),
    )
}
