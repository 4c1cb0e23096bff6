//! Which sandbox a request is for, whether it may reach it, and a
//! connection to that sandbox's agent.
//!
//! The sandbox comes from the `E2b-Sandbox-Id` header (the SDK sends it on
//! every request, and it is the only way when `E2B_SANDBOX_URL` points all
//! sandboxes at one address) or from a `49983-{id}.{domain}` host name.
//! The caller proves access with `X-Access-Token`, the sandbox's envd
//! access token (`Controller::sandbox_token_matches`).

use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dwell_control::{Controller, Error as CtlError};
use dwell_proto::AgentClient;

/// The envd port that host-name routing expects (`49983-{id}.{domain}`).
pub const ENVD_PORT: &str = "49983";

/// A request refused before it reached a service, answered as E2B's proxy
/// and envd answer: `{"code": <http status>, "message": ..}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Reject {
    pub status: StatusCode,
    pub message: String,
}

impl Reject {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Reject {
            status,
            message: message.into(),
        }
    }

    /// The sandbox is gone or not running. The SDK reads a 502 whose message
    /// contains "was not found" as "the sandbox is not running".
    pub fn not_running(id: &str, why: &str) -> Self {
        Reject::new(
            StatusCode::BAD_GATEWAY,
            format!("The sandbox {id} was not found: {why}"),
        )
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.status.as_u16(), "message": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<Reject> for crate::connect::ConnectError {
    /// A refusal inside an RPC: the Connect code matching the status.
    fn from(r: Reject) -> Self {
        use crate::connect::Code;
        let code = match r.status.as_u16() {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            502 | 503 => Code::Unavailable,
            _ => Code::Internal,
        };
        crate::connect::ConnectError::new(code, r.message)
    }
}

/// The sandbox id a request names, from the header or the host name.
pub fn sandbox_id(h: &HeaderMap) -> Option<String> {
    if let Some(id) = h.get("e2b-sandbox-id").and_then(|v| v.to_str().ok()) {
        let id = id.trim();
        if !id.is_empty() {
            return Some(id.to_string());
        }
    }
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok())?;
    id_from_host(host)
}

/// `49983-{id}.{domain}[:port]` → `id`.
pub fn id_from_host(host: &str) -> Option<String> {
    let label = host.split('.').next()?;
    let (port, id) = label.split_once('-')?;
    (port == ENVD_PORT && !id.is_empty() && host.contains('.')).then(|| id.to_string())
}

/// A sandbox a request may use.
pub struct Target {
    pub id: String,
    pub tenant: String,
}

/// Checks `X-Access-Token` against sandbox `id`.
pub fn authorize(ctl: &Controller, id: &str, h: &HeaderMap) -> Result<(), Reject> {
    let token = h
        .get("x-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if token.is_empty() {
        return Err(Reject::new(
            StatusCode::UNAUTHORIZED,
            "missing X-Access-Token: send the envdAccessToken the sandbox was created with",
        ));
    }
    if !ctl.sandbox_token_matches(id, token) {
        return Err(Reject::new(
            StatusCode::UNAUTHORIZED,
            format!("invalid access token for sandbox {id}"),
        ));
    }
    Ok(())
}

/// The id named by the request, or 400.
pub fn require_id(h: &HeaderMap) -> Result<String, Reject> {
    sandbox_id(h).ok_or_else(|| {
        Reject::new(
            StatusCode::BAD_REQUEST,
            "no sandbox named: send the E2b-Sandbox-Id header or use a 49983-{id}.{domain} host name",
        )
    })
}

/// Resolves and authorizes the request's sandbox (header routing + token).
pub fn resolve(ctl: &Controller, h: &HeaderMap) -> Result<Target, Reject> {
    let id = require_id(h)?;
    authorize(ctl, &id, h)?;
    lookup(ctl, &id)
}

/// The live sandbox `id` (any state), or 502 "was not found".
pub fn lookup(ctl: &Controller, id: &str) -> Result<Target, Reject> {
    let sb = ctl
        .live_sandbox(id)
        .map_err(|e| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match sb {
        Some(r) => {
            ctl.touch(id);
            Ok(Target {
                id: r.id,
                tenant: r.tenant,
            })
        }
        _ => Err(Reject::not_running(id, "it does not exist or was deleted")),
    }
}

/// A connection to the running sandbox's agent; a paused or hibernated
/// sandbox whose auto-resume is on is woken first (E2B's `autoResume`).
pub async fn agent(ctl: &Arc<Controller>, t: &Target) -> Result<AgentClient, Reject> {
    match ctl.agent_for(&t.tenant, &t.id, "E2B envd request").await {
        Ok((_, c)) => Ok(c),
        Err(CtlError::NotFound(_)) => Err(Reject::not_running(&t.id, "it was deleted")),
        Err(e @ (CtlError::Conflict(_) | CtlError::Refused { .. } | CtlError::Asleep { .. })) => {
            Err(Reject::not_running(&t.id, &e.to_string()))
        }
        Err(e) => Err(Reject::new(
            StatusCode::BAD_GATEWAY,
            format!("cannot reach the agent of sandbox {}: {e}", t.id),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_routing() {
        assert_eq!(
            id_from_host("49983-abc123.sandbox.example.com").as_deref(),
            Some("abc123")
        );
        assert_eq!(
            id_from_host("49983-abc123.localhost:8080").as_deref(),
            Some("abc123")
        );
        assert_eq!(id_from_host("8080-abc123.example.com"), None);
        assert_eq!(id_from_host("127.0.0.1:49983"), None);
        assert_eq!(id_from_host("49983-abc"), None);
    }

    #[test]
    fn header_wins_over_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "49983-fromhost.example.com".parse().unwrap());
        assert_eq!(sandbox_id(&h).as_deref(), Some("fromhost"));
        h.insert("e2b-sandbox-id", "fromheader".parse().unwrap());
        assert_eq!(sandbox_id(&h).as_deref(), Some("fromheader"));
    }
}
