//! The JSON bodies of E2B's template routes (field names as the Template
//! SDK sends and reads them: `POST /v3/templates`, the file upload link,
//! `POST /v2/templates/{id}/builds/{build}`, the build status, aliases and
//! tags). Unknown request fields are ignored, as E2B's API does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v3/templates`: ask for a build of template `name` (`name` or
/// `name:tag`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRequestV3 {
    pub name: Option<String>,
    /// Deprecated spelling of `name`.
    pub alias: Option<String>,
    pub tags: Option<Vec<String>>,
    #[serde(rename = "teamID")]
    pub team_id: Option<String>,
    pub cpu_count: Option<i64>,
    #[serde(rename = "memoryMB")]
    pub memory_mb: Option<i64>,
    pub min_free_disk_mb: Option<i64>,
}

/// The answer to `POST /v3/templates`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestedV3 {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub public: bool,
    pub names: Vec<String>,
    pub tags: Vec<String>,
    pub aliases: Vec<String>,
}

/// `GET /templates/{id}/files/{hash}`: where to upload a COPY step's
/// files, unless they are already there.
#[derive(Debug, Serialize)]
pub struct FileUpload {
    pub present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

/// `POST /v2/templates/{id}/builds/{build}`: the step list.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildStart {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_template: Option<String>,
    /// Registry credentials of a private base image: refused (the daemon
    /// pulls with its own credentials).
    #[serde(skip_serializing)]
    pub from_image_registry: Option<serde_json::Value>,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_cmd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_cmd: Option<String>,
}

/// One step: `COPY`, `ENV`, `RUN`, `WORKDIR` or `USER` with its arguments.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_hash: Option<String>,
    #[serde(default)]
    pub force: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_upload: Option<bool>,
}

/// One build log entry.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// RFC 3339.
    pub timestamp: String,
    pub message: String,
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// Why a build has its status (an error's message and step).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReason {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub log_entries: Vec<LogEntry>,
}

/// `GET /templates/{id}/builds/{build}/status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    /// Always empty (E2B's deprecated field).
    pub logs: Vec<String>,
    pub log_entries: Vec<LogEntry>,
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    /// `waiting`, `building`, `ready` or `error`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<StatusReason>,
}

/// `GET /templates/aliases/{alias}`.
#[derive(Debug, Serialize)]
pub struct AliasFound {
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub public: bool,
}

/// `POST /templates/tags`.
#[derive(Debug, Default, Deserialize)]
pub struct AssignTags {
    /// `name:tag`: the build to tag.
    pub target: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// The answer to `POST /templates/tags`.
#[derive(Debug, Serialize)]
pub struct AssignedTags {
    pub tags: Vec<String>,
    #[serde(rename = "buildID")]
    pub build_id: String,
}

/// `DELETE /templates/tags`.
#[derive(Debug, Default, Deserialize)]
pub struct DeleteTags {
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// One tag of `GET /templates/{id}/tags`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    pub tag: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub created_at: String,
}

/// One template of `GET /templates`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub cpu_count: i64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: i64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: i64,
    pub public: bool,
    pub aliases: Vec<String>,
    pub names: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub created_by: Option<serde_json::Value>,
    pub last_spawned_at: Option<String>,
    pub spawn_count: i64,
    pub build_count: i64,
    pub envd_version: String,
    pub build_status: String,
}
