//! The daemon's HTTP API: REST+JSON for everything, WebSocket for streaming
//! exec, PTY and process attach.
//!
//! Requests are authenticated ([`auth`]) into a [`Principal`] (a tenant),
//! validated, and handed to the [`Controller`]; the API never drives a
//! runtime itself. Every error is JSON `{"error": {"code", "message"}}` with
//! the right status ([`error`]). The OpenAPI document is `openapi.json`,
//! served at `/openapi.json`; a test keeps it in step with the router.
//!
//! Routes live in [`routes`], one file per resource.

pub mod auth;
pub mod error;
pub mod routes;
pub mod types;

use axum::Router;
use dwell_control::Controller;

pub use auth::Principal;
pub use error::ApiError;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub ctl: Controller,
}

/// The routes with what every listener runs once the caller is known:
/// acting for another tenant, then the audit log.
fn routes_for_principals(state: &AppState) -> Router {
    routes::router(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::audit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::act_for,
        ))
}

/// The router for the local unix socket: whoever can open the socket (file
/// permissions: root only) acts as the default tenant's admin.
pub fn unix_router(ctl: Controller) -> Router {
    let state = AppState { ctl };
    routes_for_principals(&state).layer(axum::middleware::from_fn(auth::local))
}

/// The router for TCP: every request needs an API key.
pub fn tcp_router(ctl: Controller) -> Router {
    let state = AppState { ctl };
    routes_for_principals(&state).layer(axum::middleware::from_fn_with_state(state, auth::api_key))
}
