//! Errors in E2B's shape: `{"code": <HTTP status>, "message": "..."}`, with
//! the statuses the SDK maps to its exceptions (401 authentication, 404 not
//! found, 409 conflict such as "already paused", 400 bad input).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer of the E2B API.
#[derive(Debug)]
pub struct E2bError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (a 503 that will pass).
    pub retry_after: Option<u64>,
}

impl E2bError {
    pub fn new(status: u16, message: impl Into<String>) -> E2bError {
        E2bError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            retry_after: None,
        }
    }

    /// 503 with `Retry-After`: the request will work in a moment.
    pub fn retry_later(secs: u64, message: impl Into<String>) -> E2bError {
        E2bError {
            retry_after: Some(secs),
            ..E2bError::new(503, message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> E2bError {
        E2bError::new(400, message)
    }

    pub fn conflict(message: impl Into<String>) -> E2bError {
        E2bError::new(409, message)
    }

    pub fn not_found(id: &str) -> E2bError {
        E2bError::new(
            404,
            format!("sandbox {id:?} not found; list your sandboxes with Sandbox.list() (an API key only sees its own tenant's)"),
        )
    }
}

impl IntoResponse for E2bError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.status.as_u16(), "message": self.message});
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        r
    }
}

impl From<dwell_control::Error> for E2bError {
    fn from(e: dwell_control::Error) -> Self {
        use dwell_control::Error as C;
        let facts = dwell_api::error::facts_of(&e);
        match e {
            C::NotFound(id) => E2bError::not_found(&id),
            // 502/503 make the SDK retry; an agent failure is not transient.
            C::Agent(a) => E2bError::new(500, format!("agent: {a}")),
            e => {
                let message = worded(e.code(), &facts).unwrap_or_else(|| e.to_string());
                E2bError::new(e.status(), message)
            }
        }
    }
}

/// An error worded for an E2B SDK user from its code and facts: what went
/// wrong, and what to do in the SDK's terms (never a `dwell` command).
/// `None` when the facts do not say enough; the control plane's own
/// message is used then.
fn worded(code: &str, facts: &BTreeMap<String, String>) -> Option<String> {
    use dwell_contract::error::{code as c, fact};
    let get = |name: &str| facts.get(name).map(String::as_str);
    match code {
        c::CONFLICT | c::SANDBOX_PAUSED => {
            let sandbox = get(fact::SANDBOX)?;
            let state = get(fact::STATE)?;
            let what = match get(fact::ACTION) {
                Some(action) => format!("cannot {action} sandbox {sandbox:?}: it is {state}"),
                None => format!("sandbox {sandbox:?} is {state}"),
            };
            Some(match state {
                "paused" | "hibernated" => {
                    format!("{what}; Sandbox.connect() resumes it")
                }
                _ => what,
            })
        }
        c::QUOTA_EXCEEDED => {
            let tenant = get(fact::TENANT)?;
            let resource = get(fact::RESOURCE)?;
            let numbers = match (get(fact::LIMIT), get(fact::USED), get(fact::ASKED)) {
                (Some(l), Some(u), Some(a)) => {
                    format!(" (limit {l}, in use {u}, this request adds {a})")
                }
                _ => String::new(),
            };
            Some(format!(
                "the API key's tenant {tenant:?} would exceed its {resource} quota{numbers}; kill or pause sandboxes it no longer needs (Sandbox.kill(), Sandbox.pause()), or ask the server's admin to raise the quota"
            ))
        }
        _ => None,
    }
}

pub type E2bResult<T> = Result<T, E2bError>;

/// Parse a JSON body; an empty body is `T::default()`.
pub fn json_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    what: &str,
) -> E2bResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        E2bError::bad_request(format!(
            "the {what} body is not valid JSON for this request: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn errors_are_worded_for_the_sdk_without_cli_commands() {
        let paused = facts(&[("sandbox", "ab1"), ("state", "paused"), ("action", "exec")]);
        let m = worded("conflict", &paused).unwrap();
        assert_eq!(
            m,
            "cannot exec sandbox \"ab1\": it is paused; Sandbox.connect() resumes it"
        );
        let quota = facts(&[
            ("tenant", "acme"),
            ("resource", "sandboxes"),
            ("limit", "2"),
            ("used", "2"),
            ("asked", "1"),
        ]);
        let m = worded("quota_exceeded", &quota).unwrap();
        assert!(
            m.contains("sandboxes quota (limit 2, in use 2, this request adds 1)"),
            "{m}"
        );
        for m in [
            worded("conflict", &paused),
            worded("quota_exceeded", &quota),
        ] {
            assert!(!m.unwrap().contains("dwell "), "no CLI wording");
        }
        // Without the facts, the control plane's message stands.
        assert_eq!(worded("conflict", &facts(&[("sandbox", "x")])), None);
        assert_eq!(worded("internal", &paused), None);
    }
}
