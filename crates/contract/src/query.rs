//! Query strings of the API's routes.

use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

/// `GET /v1/sandboxes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListSandboxes {
    /// Only sandboxes in this state.
    #[param(value_type = Option<crate::State>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Fill each sandbox's `volume` and, if it runs, its live `stats` (as
    /// inspect does; in a cluster, of the sandboxes the answering node runs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stats: bool,
}

/// `DELETE /v1/sandboxes/{id}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteSandbox {
    /// Delete even while it runs (stops it first).
    #[serde(default)]
    pub force: bool,
}

/// `GET /v1/sandboxes/{id}/events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Events {
    /// Only events with a larger `seq`.
    #[serde(default)]
    pub after: i64,
}

/// `GET /v1/sandboxes/{id}/files` and `.../fs/stat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilePath {
    /// Absolute path inside the sandbox.
    #[param(required = true, value_type = String, pattern = "^/")]
    pub path: Option<String>,
}

/// `DELETE /v1/sandboxes/{id}/files`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Remove {
    /// Absolute path inside the sandbox.
    #[param(required = true, value_type = String, pattern = "^/")]
    pub path: Option<String>,
    /// Remove a directory and everything under it.
    #[serde(default)]
    pub recursive: bool,
}

/// `GET /v1/sandboxes/{id}/fs/list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDir {
    /// Absolute path inside the sandbox.
    #[param(required = true, value_type = String, pattern = "^/")]
    pub path: Option<String>,
    /// How many levels to list (default 1).
    #[serde(default)]
    pub depth: Option<u32>,
}

/// `PUT /v1/sandboxes/{id}/files`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Upload {
    /// Absolute path inside the sandbox.
    #[param(required = true, value_type = String, pattern = "^/")]
    pub path: Option<String>,
    /// Append instead of replacing.
    #[serde(default)]
    pub append: bool,
    /// Octal permission bits of a new file, like `644`.
    pub mode: Option<String>,
    /// Create missing parent directories.
    #[serde(default)]
    pub parents: bool,
}

/// `GET /v1/snapshots`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListSnapshots {
    /// Only snapshots of this sandbox (id or name).
    pub sandbox: Option<String>,
}

/// `GET /v1/usage`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Usage {
    /// Another tenant's usage (admin), or `*` for all.
    pub tenant: Option<String>,
    /// Unix milliseconds, or a date `2026-11-01` (UTC midnight).
    pub since: Option<String>,
}

/// `GET /v1/usage/series`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageSeriesQuery {
    /// Another tenant's usage (admin), or `*` for every tenant's.
    pub tenant: Option<String>,
    /// Unix milliseconds, or a date `2026-11-01` (UTC midnight); default: 30 days before `until`.
    pub since: Option<String>,
    /// Unix milliseconds, or a date; default: now.
    pub until: Option<String>,
    /// `hour` or `day` (default).
    pub step: Option<String>,
}

/// `GET /v1/audit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Audit {
    /// Unix milliseconds, or a date `2026-11-01` (UTC midnight).
    pub since: Option<String>,
    /// At most this many entries (default 1000, at most 10000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `GET /v1/sandboxes/{id}/service/logs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServiceLogs {
    /// Keep the response open and send new output as it comes.
    #[serde(default)]
    pub follow: bool,
    /// Only the newest this many lines of what was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u64>,
    /// Only output recorded at or after this time (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
}
