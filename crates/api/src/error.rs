//! API errors: a stable code, a message that says what / why / how to fix,
//! and the matching HTTP status. Body: `{"error": {"code", "message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dwell_proto::ErrorKind;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_argument", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(401, "unauthenticated", message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "internal", message)
    }
    /// Response without going through `IntoResponse` (for middleware).
    pub fn into_response_(self) -> Response {
        self.into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<dwell_control::Error> for ApiError {
    fn from(e: dwell_control::Error) -> Self {
        match e {
            dwell_control::Error::Agent(a) => a.into(),
            e => ApiError::new(e.status(), e.code(), e.to_string()),
        }
    }
}

impl From<dwell_proto::Error> for ApiError {
    fn from(e: dwell_proto::Error) -> Self {
        let (status, code) = match e.remote_kind() {
            Some(ErrorKind::NotFound) | Some(ErrorKind::NoSuchProcess) => (404, "not_found"),
            Some(ErrorKind::PermissionDenied) | Some(ErrorKind::ReadOnly) => {
                (403, "permission_denied")
            }
            Some(ErrorKind::AlreadyExists) => (409, "already_exists"),
            Some(ErrorKind::DirectoryNotEmpty) => (409, "directory_not_empty"),
            Some(ErrorKind::IsADirectory)
            | Some(ErrorKind::NotADirectory)
            | Some(ErrorKind::InvalidArgument) => (400, "invalid_argument"),
            Some(ErrorKind::NoSpace) => (507, "no_space"),
            Some(ErrorKind::TooManyStreams) => (429, "too_many_streams"),
            Some(_) => (500, "agent_error"),
            None => (502, "agent_unreachable"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
