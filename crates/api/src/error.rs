//! API errors: a stable code, a message that says what / why / how to fix,
//! and the matching HTTP status. The body is the contract's
//! [`ErrorBody`]: `{"error": {"code", "message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dwell_contract::error::code;
use dwell_contract::{ErrorBody, ErrorDetail};
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
        ApiError::new(400, code::INVALID_ARGUMENT, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(401, code::UNAUTHENTICATED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, code::PERMISSION_DENIED, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, code::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, code::INTERNAL, message)
    }
    /// An error with a status chosen by the HTTP layer (a rejected request
    /// part, an unknown route) and the code that goes with it.
    pub fn from_status(status: u16, message: impl Into<String>) -> ApiError {
        let code = match status {
            404 => code::NOT_FOUND,
            405 => code::METHOD_NOT_ALLOWED,
            413 => code::PAYLOAD_TOO_LARGE,
            415 => code::UNSUPPORTED_MEDIA_TYPE,
            400..=499 => code::INVALID_ARGUMENT,
            _ => code::INTERNAL,
        };
        ApiError::new(status, code, message)
    }
    /// Response without going through `IntoResponse` (for middleware).
    pub fn into_response_(self) -> Response {
        self.into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
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
            Some(ErrorKind::NotFound) | Some(ErrorKind::NoSuchProcess) => (404, code::NOT_FOUND),
            Some(ErrorKind::PermissionDenied) | Some(ErrorKind::ReadOnly) => {
                (403, code::PERMISSION_DENIED)
            }
            Some(ErrorKind::AlreadyExists) => (409, code::ALREADY_EXISTS),
            Some(ErrorKind::DirectoryNotEmpty) => (409, code::DIRECTORY_NOT_EMPTY),
            Some(ErrorKind::IsADirectory)
            | Some(ErrorKind::NotADirectory)
            | Some(ErrorKind::InvalidArgument) => (400, code::INVALID_ARGUMENT),
            Some(ErrorKind::NoSpace) => (507, code::NO_SPACE),
            Some(ErrorKind::TooManyStreams) => (429, code::TOO_MANY_STREAMS),
            Some(_) => (500, code::AGENT_ERROR),
            None => (502, code::AGENT_UNREACHABLE),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// The fallback of unknown routes.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {}; the routes are listed in /openapi.json",
        uri.path()
    ))
}

/// The fallback of a known route called with a method it does not serve.
pub async fn no_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        405,
        code::METHOD_NOT_ALLOWED,
        format!(
            "{} does not serve {method}; its methods are listed in /openapi.json",
            uri.path()
        ),
    )
}

pub type ApiResult<T> = Result<T, ApiError>;
