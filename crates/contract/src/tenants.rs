//! `/v1/tenants`, `/v1/usage`, `/v1/audit`: tenants, quotas and API keys
//! (admin), usage and cost, and the audit log.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::sandbox::{EgressRules, PolicyArgs, SizeArg};

/// `POST /v1/tenants` and `PATCH /v1/tenants/{name}`: limits, sizes as
/// numbers or strings like `32G`. Absent limits are unlimited (create) or
/// unchanged (update).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    /// The tenant's name (create only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sandboxes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<SizeArg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_storage: Option<SizeArg>,
    /// Default lifecycle policies of the tenant's sandboxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_policies: Option<PolicyArgs>,
    /// Default egress rules of the tenant's NAT sandboxes that give none
    /// (copied into each at create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_egress: Option<EgressRules>,
}

/// A tenant and its quota (`null`: unlimited).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Tenant {
    pub name: String,
    pub max_sandboxes: Option<u64>,
    pub max_vcpus: Option<f64>,
    pub max_memory: Option<u64>,
    pub max_storage: Option<u64>,
    /// Unix milliseconds.
    pub created_at: i64,
    #[serde(default)]
    pub default_policies: Option<PolicyArgs>,
    #[serde(default)]
    pub default_egress: Option<EgressRules>,
}

/// What a tenant holds now.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Held {
    pub sandboxes: u64,
    pub vcpus: f64,
    pub memory: u64,
    pub storage: u64,
}

/// `GET /v1/tenants`: a tenant with what it holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct TenantView {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub held: Held,
    /// Held to the daemon's default quota: the tenant has no record of its
    /// own.
    pub default_quota: bool,
}

/// `POST /v1/tenants`: the tenant and its first API key, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct TenantCreated {
    pub tenant: Tenant,
    pub api_key: String,
}

/// `POST /v1/tenants/{name}/keys`: a new API key, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct KeyCreated {
    pub tenant: String,
    pub api_key: String,
}

/// An API key as listed: never its secret or hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub admin: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix ms of the revocation; `null` while the key is valid.
    pub revoked_at: Option<i64>,
    /// Unix ms of the last request made with it (to within a minute).
    pub last_used_at: Option<i64>,
}

/// Prices per hour, in dollars.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Prices {
    pub vcpu_hour: f64,
    pub memory_gib_hour: f64,
    pub storage_gib_hour: f64,
}

/// Usage in the units people pay in.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Totals {
    pub vcpu_hours: f64,
    pub memory_gib_hours: f64,
    pub storage_gib_hours: f64,
    pub cpu_used_hours: f64,
    pub memory_used_gib_hours: f64,
    pub cost_usd: f64,
}

/// One sandbox's usage.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ReportRow {
    pub sandbox_id: String,
    pub name: String,
    pub tenant: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// `GET /v1/usage`: usage of a set of sandboxes, with cost.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Report {
    /// Unix milliseconds.
    pub since: i64,
    pub prices: Option<Prices>,
    pub sandboxes: Vec<ReportRow>,
    pub total: Totals,
}

/// `GET /v1/usage/series`: usage and cost per tenant over time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct UsageSeries {
    /// Unix milliseconds: the window, `[since, until)`.
    pub since: i64,
    pub until: i64,
    /// The length of each bucket (3600: hours, 86400: days).
    pub step_secs: u64,
    pub prices: Option<Prices>,
    /// Oldest first; buckets without usage are left out.
    pub points: Vec<UsagePoint>,
}

/// One tenant's usage in one bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct UsagePoint {
    /// Unix milliseconds of the bucket's start.
    pub start: i64,
    pub tenant: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// One request in the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub tenant: String,
    /// The API key's id, or `local` for the unix socket.
    pub key_id: String,
    pub method: String,
    pub path: String,
    pub status: u16,
}
