//! `/v1/sandboxes/{id}/ports`: ports of a sandbox exposed through the
//! daemon's port proxy (`dwell serve --proxy-listen`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/sandboxes/{id}/ports`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct PortExpose {
    /// The port a server listens on inside the sandbox (1-65535).
    pub port: u16,
    /// Reachable without a token. Default: private.
    #[serde(default)]
    pub public: bool,
    /// Make a new token for a private port that already has one (voids
    /// the old token, its login links and cookies).
    #[serde(default)]
    pub new_token: bool,
}

/// An exposed port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct PortExposure {
    /// The sandbox's id.
    pub sandbox: String,
    /// The port inside the sandbox; 0 stands for every port (E2B sandboxes).
    pub port: u16,
    pub public: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The proxy's host name for the port (`PORT-ID.DOMAIN`); absent when
    /// the daemon runs no port proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `http://PORT-ID.DOMAIN[:PROXY-PORT]/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The access token of a private port, only in the answer that made
    /// it; send it as the `X-Dwell-Token` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A one-time link for a browser (private ports): it sets a cookie for
    /// the port's host and redirects to `url`. Valid for 15 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
}
