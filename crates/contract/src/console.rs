//! The web console's login: one-time login links (`dwell ui`) and the
//! sessions they open, under `/v1/console/`. A session is a cookie
//! (`HttpOnly`, `SameSite=Strict`) that authenticates the console's calls
//! to the same REST routes as the CLI's; every state-changing call of a
//! session carries its CSRF token in [`CSRF_HEADER`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The session cookie's name over plain HTTP.
pub const SESSION_COOKIE: &str = "dwell_session";

/// Its name when browsers reach the console over HTTPS: the `__Host-`
/// prefix makes browsers refuse it from any other host (a sandbox's
/// preview page on a sibling domain cannot plant or shadow it).
pub const SECURE_SESSION_COOKIE: &str = "__Host-dwell_session";

/// The header with a session's CSRF token, on every request of a session
/// that is not a GET or HEAD.
pub const CSRF_HEADER: &str = "x-dwell-csrf";

/// `POST /v1/console/logins`: a one-time login link for the caller.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LoginLinkRequest {
    /// How long the link may be used, in seconds (default 300, at most 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_secs: Option<u64>,
}

/// A one-time login link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LoginLink {
    /// Open it in a browser: it logs in once, then is spent.
    pub url: String,
    /// Unix ms after which it is refused.
    pub expires_at: i64,
    /// The tenant the session will act for.
    pub tenant: String,
    pub admin: bool,
}

/// `POST /v1/console/sessions`: exactly one of a login link's token or an
/// API key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionLogin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// A console session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ConsoleSession {
    pub id: String,
    pub tenant: String,
    pub admin: bool,
    /// The API key it was opened with (`local`: by `dwell ui` on the
    /// daemon's host).
    pub key_id: String,
    pub created_at: i64,
    /// Unix ms of its absolute end.
    pub expires_at: i64,
    /// It also ends after this many seconds without a request.
    pub idle_timeout_secs: u64,
    pub last_seen_at: i64,
    pub user_agent: String,
    /// Whether it is the session making this request.
    #[serde(default)]
    pub current: bool,
}

/// `GET /v1/console/session` and a login's answer: the session and its
/// CSRF token (readable only by the console's own page).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct SessionInfo {
    #[serde(flatten)]
    pub session: ConsoleSession,
    pub csrf_token: String,
}

/// `DELETE /v1/console/sessions`: how many sessions were revoked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Revoked {
    pub revoked: u64,
}
