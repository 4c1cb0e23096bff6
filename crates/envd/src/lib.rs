//! The E2B "envd" data plane: what the E2B SDKs talk to inside a sandbox
//! (Connect RPC services `process.Process` and `filesystem.Filesystem`, and
//! the plain HTTP `/health` and `/files` endpoints), served by the dwell
//! daemon on top of each sandbox's agent.

use std::sync::Arc;

use dwell_control::Controller;

/// The envd router: every route, routed to a sandbox by the
/// `E2b-Sandbox-Id` header or a `49983-{id}.{domain}` host name.
pub fn router(ctl: Arc<Controller>) -> axum::Router {
    let _ = ctl;
    axum::Router::new()
}
