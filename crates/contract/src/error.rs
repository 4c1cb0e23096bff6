//! The error body every failing request answers with, and its codes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"error": {"code", "message", "facts"}}`, with the matching HTTP status.
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
    /// What went wrong, in words for a person; clients word their own
    /// advice from `code` and `facts`.
    pub message: String,
    /// The structured facts of the error, by name (see [`fact`]): which
    /// sandbox, its state, the refused action, the tenant and the quota
    /// numbers. Absent when there are none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(example = json!({"sandbox": "work", "state": "paused", "action": "exec"}))]
    pub facts: BTreeMap<String, String>,
}

impl ErrorDetail {
    /// One fact, if the error carries it.
    pub fn fact(&self, name: &str) -> Option<&str> {
        self.facts.get(name).map(String::as_str)
    }
}

/// The names of the facts an error may carry.
pub mod fact {
    /// The sandbox's name (or the id or name that was asked for).
    pub const SANDBOX: &str = "sandbox";
    /// The sandbox's state when the request was refused.
    pub const STATE: &str = "state";
    /// The refused request (`exec`, `pause`, `start`, ...).
    pub const ACTION: &str = "action";
    /// The tenant whose quota or record is concerned.
    pub const TENANT: &str = "tenant";
    /// The quota resource: `sandboxes`, `vcpus`, `memory` or `storage`.
    pub const RESOURCE: &str = "resource";
    /// The quota's limit.
    pub const LIMIT: &str = "limit";
    /// What the tenant holds.
    pub const USED: &str = "used";
    /// What the request adds.
    pub const ASKED: &str = "asked";
    /// A snapshot's id or name.
    pub const SNAPSHOT: &str = "snapshot";
    /// A name already taken.
    pub const NAME: &str = "name";
    /// A private network's name (or id) as asked for.
    pub const NETWORK: &str = "network";
    /// A named volume's name as asked for.
    pub const VOLUME: &str = "volume";
    /// The failing step of a build (1-based).
    pub const STEP: &str = "step";
    /// The exit code of a build's failing RUN step.
    pub const EXIT_CODE: &str = "exit_code";
    /// An image reference as asked for.
    pub const IMAGE: &str = "image";
    /// A registry host.
    pub const REGISTRY: &str = "registry";
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
    /// The sandbox is paused or hibernated and does not wake on use
    /// (HTTP 409; facts `sandbox`, `state`, `action`): resume it, or turn
    /// its `auto_resume` policy on.
    pub const SANDBOX_PAUSED: &str = "sandbox_paused";
    pub const NAME_TAKEN: &str = "name_taken";
    /// A named volume is used by sandboxes (HTTP 409; facts `volume` and
    /// `sandbox`, their names comma-separated): delete them first.
    pub const VOLUME_IN_USE: &str = "volume_in_use";
    pub const ALREADY_EXISTS: &str = "already_exists";
    pub const DIRECTORY_NOT_EMPTY: &str = "directory_not_empty";
    pub const UNSUPPORTED: &str = "unsupported";
    pub const QUOTA_EXCEEDED: &str = "quota_exceeded";
    pub const TOO_MANY_STREAMS: &str = "too_many_streams";
    pub const NO_SPACE: &str = "no_space";
    pub const IMAGE_IMPORT_FAILED: &str = "image_import_failed";
    /// No image is stored under that reference (HTTP 404; fact `image`).
    pub const IMAGE_NOT_FOUND: &str = "image_not_found";
    /// The image reference cannot be parsed (HTTP 400).
    pub const INVALID_IMAGE_REFERENCE: &str = "invalid_image_reference";
    /// An image is already stored under that reference (HTTP 409).
    pub const IMAGE_EXISTS: &str = "image_exists";
    /// Live sandboxes use the image, or (for a built-in image) stored
    /// images are built on it (HTTP 409; fact `image`).
    pub const IMAGE_IN_USE: &str = "image_in_use";
    /// The registry refused the credentials, or needs some (HTTP 401;
    /// facts `registry`, `image`): `dwell registry login`.
    pub const REGISTRY_AUTH_FAILED: &str = "registry_auth_failed";
    /// The registry has no such repository, tag or digest (HTTP 404).
    pub const IMAGE_NOT_IN_REGISTRY: &str = "image_not_in_registry";
    /// The pull failed: registry unreachable, bad content, digest
    /// mismatch (HTTP 502).
    pub const IMAGE_PULL_FAILED: &str = "image_pull_failed";
    pub const RUNTIME_ERROR: &str = "runtime_error";
    pub const STORAGE_ERROR: &str = "storage_error";
    pub const STORE_ERROR: &str = "store_error";
    pub const AGENT_ERROR: &str = "agent_error";
    pub const AGENT_UNREACHABLE: &str = "agent_unreachable";
    pub const INTERNAL: &str = "internal";
    /// A build step failed (HTTP 422; facts `step`, and `exit_code` for a
    /// RUN that exited non-zero): fix the Dockerfile or the context.
    pub const BUILD_FAILED: &str = "build_failed";
}

/// The codes of [`code`], for documentation and tests.
pub const CODES: &[&str] = &[
    code::INVALID_ARGUMENT,
    code::BUILD_FAILED,
    code::UNAUTHENTICATED,
    code::PERMISSION_DENIED,
    code::NOT_FOUND,
    code::METHOD_NOT_ALLOWED,
    code::UNSUPPORTED_MEDIA_TYPE,
    code::PAYLOAD_TOO_LARGE,
    code::CONFLICT,
    code::SANDBOX_PAUSED,
    code::NAME_TAKEN,
    code::VOLUME_IN_USE,
    code::ALREADY_EXISTS,
    code::DIRECTORY_NOT_EMPTY,
    code::UNSUPPORTED,
    code::QUOTA_EXCEEDED,
    code::TOO_MANY_STREAMS,
    code::NO_SPACE,
    code::IMAGE_IMPORT_FAILED,
    code::IMAGE_NOT_FOUND,
    code::INVALID_IMAGE_REFERENCE,
    code::IMAGE_EXISTS,
    code::IMAGE_IN_USE,
    code::REGISTRY_AUTH_FAILED,
    code::IMAGE_NOT_IN_REGISTRY,
    code::IMAGE_PULL_FAILED,
    code::RUNTIME_ERROR,
    code::STORAGE_ERROR,
    code::STORE_ERROR,
    code::AGENT_ERROR,
    code::AGENT_UNREACHABLE,
    code::INTERNAL,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_omitted_when_empty_and_read_when_absent() {
        let bare = ErrorBody {
            error: ErrorDetail {
                code: code::NOT_FOUND.into(),
                message: "no sandbox x".into(),
                facts: BTreeMap::new(),
            },
        };
        let v = serde_json::to_value(&bare).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "not_found", "message": "no sandbox x"}})
        );
        let back: ErrorBody = serde_json::from_value(v).unwrap();
        assert_eq!(back, bare);
        let with: ErrorBody = serde_json::from_value(serde_json::json!({
            "error": {"code": "conflict", "message": "m", "facts": {"sandbox": "w", "state": "paused"}}
        }))
        .unwrap();
        assert_eq!(with.error.fact(fact::STATE), Some("paused"));
        assert_eq!(with.error.fact(fact::TENANT), None);
    }
}
