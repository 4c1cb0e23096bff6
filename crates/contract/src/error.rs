//! The error body every failing request answers with, and its codes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"error": {"code", "message"}}`, with the matching HTTP status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable code to branch on and a message that says
/// what, why and how to fix it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ErrorDetail {
    /// One of [`CODES`].
    #[schema(example = "not_found")]
    pub code: String,
    pub message: String,
}

/// Every error code the API answers with.
pub mod code {
    pub const INVALID_ARGUMENT: &str = "invalid_argument";
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    pub const PERMISSION_DENIED: &str = "permission_denied";
    pub const NOT_FOUND: &str = "not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const CONFLICT: &str = "conflict";
    pub const NAME_TAKEN: &str = "name_taken";
    pub const ALREADY_EXISTS: &str = "already_exists";
    pub const DIRECTORY_NOT_EMPTY: &str = "directory_not_empty";
    pub const UNSUPPORTED: &str = "unsupported";
    pub const QUOTA_EXCEEDED: &str = "quota_exceeded";
    pub const TOO_MANY_STREAMS: &str = "too_many_streams";
    pub const NO_SPACE: &str = "no_space";
    pub const IMAGE_IMPORT_FAILED: &str = "image_import_failed";
    pub const RUNTIME_ERROR: &str = "runtime_error";
    pub const STORAGE_ERROR: &str = "storage_error";
    pub const STORE_ERROR: &str = "store_error";
    pub const AGENT_ERROR: &str = "agent_error";
    pub const AGENT_UNREACHABLE: &str = "agent_unreachable";
    pub const INTERNAL: &str = "internal";
}

/// The codes of [`code`], for documentation and tests.
pub const CODES: &[&str] = &[
    code::INVALID_ARGUMENT,
    code::UNAUTHENTICATED,
    code::PERMISSION_DENIED,
    code::NOT_FOUND,
    code::METHOD_NOT_ALLOWED,
    code::UNSUPPORTED_MEDIA_TYPE,
    code::PAYLOAD_TOO_LARGE,
    code::CONFLICT,
    code::NAME_TAKEN,
    code::ALREADY_EXISTS,
    code::DIRECTORY_NOT_EMPTY,
    code::UNSUPPORTED,
    code::QUOTA_EXCEEDED,
    code::TOO_MANY_STREAMS,
    code::NO_SPACE,
    code::IMAGE_IMPORT_FAILED,
    code::RUNTIME_ERROR,
    code::STORAGE_ERROR,
    code::STORE_ERROR,
    code::AGENT_ERROR,
    code::AGENT_UNREACHABLE,
    code::INTERNAL,
];
