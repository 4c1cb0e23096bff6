//! The daemon's HTTP API: REST+JSON for everything, WebSocket for streaming
//! exec, PTY and process attach.
//!
//! Requests are authenticated ([`auth`], or a console session: [`session`])
//! into a [`Principal`] (a tenant) and a [`credential::Credential`], which
//! ends what the request still has open once it is revoked;
//! validated, and handed to the [`Controller`]; the API never drives a
//! runtime itself. Every error is JSON `{"error": {"code", "message", "facts"}}` with
//! the right status ([`error`]), a rejected query, path or body included
//! ([`extract`]). Bodies are the contract's types (`dwell_contract`),
//! mapped from the control plane's at the edge ([`wire`]); the OpenAPI
//! document is generated from them and the handlers ([`openapi`]), served
//! at `/openapi.json`; a test keeps it in step with the router.
//!
//! Routes live in [`routes`], one file per resource.

pub mod auth;
pub mod bounds;
pub mod credential;
pub mod drain;
pub mod error;
pub mod extract;
pub mod forward;
pub mod openapi;
pub mod routes;
pub mod session;
pub mod web;
pub mod wire;

use axum::Router;
use dwell_control::Controller;

pub use auth::Principal;
pub use error::ApiError;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub ctl: Controller,
    /// In a cluster: how requests reach other nodes ([`forward`]).
    pub forward: Option<forward::ForwardFn>,
    /// How the web console's logins work ([`session`]).
    pub console: std::sync::Arc<session::ConsoleSettings>,
    /// How often long answers re-check their credential
    /// ([`credential::RECHECK`] by default).
    pub recheck: std::time::Duration,
}

impl AppState {
    /// The state of a single daemon (no forwarding).
    pub fn new(ctl: Controller) -> AppState {
        AppState {
            ctl,
            forward: None,
            console: Default::default(),
            recheck: credential::RECHECK,
        }
    }
}

/// The routes with what every listener runs once the caller is known:
/// acting for another tenant, then the audit log, then the end of what a
/// revoked credential still has running ([`credential::guarded`]).
fn routes_for_principals(state: &AppState) -> Router {
    routes::router(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::to_owner,
        ))
        .layer(axum::middleware::from_fn(error::catch_panic))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            credential::guarded,
        ))
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
    unix_router_in(AppState::new(ctl))
}

/// [`unix_router`] with the daemon's whole state: in a cluster, requests
/// for other nodes' sandboxes are forwarded with `state.forward`;
/// `state.console` says where browsers reach the console (`dwell ui`).
pub fn unix_router_in(state: AppState) -> Router {
    routes_for_principals(&state)
        .layer(axum::middleware::from_fn(auth::local))
        .layer(axum::middleware::from_fn(drain::refused_bodies))
}

/// The router for TCP: every request needs an API key, or the web
/// console's session cookie ([`session`]).
pub fn tcp_router(ctl: Controller) -> Router {
    tcp_router_in(AppState::new(ctl))
}

/// [`tcp_router`] with the daemon's whole state (see [`unix_router_in`]).
pub fn tcp_router_in(state: AppState) -> Router {
    routes_for_principals(&state)
        .layer(axum::middleware::from_fn_with_state(state, auth::api_key))
        .layer(axum::middleware::from_fn(drain::refused_bodies))
        .layer(axum::middleware::from_fn(web::answers))
}

/// The router of a cluster's node listener, which serves only other nodes
/// (mutual TLS): the caller comes in the forwarded request's headers
/// ([`forward::from_node`]); nothing is forwarded further by the layer,
/// and nothing is audited again (the node the client reached did).
/// Handlers that must call another node themselves (a move hands the
/// sandbox to its new owner) have `forward` in their state.
pub fn node_router(
    ctl: Controller,
    forward: Option<forward::ForwardFn>,
    recheck: std::time::Duration,
) -> Router {
    let state = AppState {
        ctl,
        forward,
        console: Default::default(),
        recheck,
    };
    routes::router(state.clone())
        .merge(routes::moves::node_routes(state.clone()))
        .layer(axum::middleware::from_fn(error::catch_panic))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            credential::guarded,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            forward::from_node,
        ))
        .layer(axum::middleware::from_fn(drain::refused_bodies))
}
