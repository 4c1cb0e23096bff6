//! Errors in E2B's shape: `{"code": <HTTP status>, "message": "..."}`, with
//! the statuses the SDK maps to its exceptions (401 authentication, 404 not
//! found, 409 conflict such as "already paused", 400 bad input).

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
        match e {
            C::NotFound(id) => E2bError::not_found(&id),
            // 502/503 make the SDK retry; an agent failure is not transient.
            C::Agent(a) => E2bError::new(500, format!("agent: {a}")),
            e => E2bError::new(e.status(), e.to_string()),
        }
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
