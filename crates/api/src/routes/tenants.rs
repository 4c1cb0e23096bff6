//! `/v1/tenants`, `/v1/usage`, `/metrics`: tenants and quotas (admin),
//! usage and cost, and Prometheus metrics.

use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use dwell_control::metering::Report;
use dwell_control::quota::Held;
use dwell_control::size::parse_size;
use dwell_store::{ApiKey, KeyRecord, Tenant};
use serde::{Deserialize, Serialize};

use crate::auth::{hash_key, new_key, Principal};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

fn admin(p: &Principal) -> ApiResult<()> {
    if p.admin {
        Ok(())
    } else {
        Err(ApiError::new(
            403,
            "permission_denied",
            "this needs an admin API key",
        ))
    }
}

/// Limits in a request: sizes as numbers or strings like `32G`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    pub name: Option<String>,
    pub max_sandboxes: Option<u64>,
    pub max_vcpus: Option<f64>,
    pub max_memory: Option<dwell_control::model::SizeArg>,
    pub max_storage: Option<dwell_control::model::SizeArg>,
    /// Default lifecycle policies of the tenant's sandboxes.
    pub default_policies: Option<dwell_control::policy::PolicyArgs>,
}

fn size(field: &str, v: &Option<dwell_control::model::SizeArg>) -> ApiResult<Option<u64>> {
    use dwell_control::model::SizeArg;
    match v {
        None => Ok(None),
        Some(SizeArg::Bytes(b)) => Ok(Some(*b)),
        Some(SizeArg::Text(t)) => parse_size(t)
            .map(Some)
            .map_err(|m| ApiError::bad_request(format!("{field}: {m}"))),
    }
}

fn tenant_of(name: String, b: &LimitsBody) -> ApiResult<Tenant> {
    let default_policies = match &b.default_policies {
        Some(p) => {
            // Validate now, so a bad default never breaks a later create.
            p.apply(&mut dwell_control::policy::Policies::default())?;
            Some(serde_json::to_value(p).map_err(|e| ApiError::internal(e.to_string()))?)
        }
        None => None,
    };
    Ok(Tenant {
        default_policies,
        name,
        max_sandboxes: b.max_sandboxes,
        max_vcpus: b.max_vcpus,
        max_memory: size("max_memory", &b.max_memory)?,
        max_storage: size("max_storage", &b.max_storage)?,
        created_at: 0,
    })
}

#[derive(Serialize)]
pub struct Created {
    pub tenant: Tenant,
    /// The tenant's first API key; shown once.
    pub api_key: String,
}

fn issue_key(st: &AppState, tenant: &str) -> ApiResult<String> {
    let key = new_key();
    st.ctl
        .add_api_key(
            &ApiKey {
                id: format!("key-{}", &hash_key(&key)[..12]),
                tenant: tenant.into(),
                name: "api".into(),
                admin: false,
                created_at: 0,
            },
            &hash_key(&key),
        )
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(key)
}

pub async fn create(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<LimitsBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    admin(&p)?;
    let Json(b) =
        body.map_err(|e| ApiError::bad_request(format!("bad tenant request: {}", e.body_text())))?;
    let name = b
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("a tenant needs a name: {\"name\": \"acme\", ...}"))?;
    let t = tenant_of(name, &b)?;
    st.ctl.create_tenant(&t)?;
    let api_key = issue_key(&st, &t.name)?;
    let tenant = st
        .ctl
        .tenant(&t.name)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .unwrap_or(t);
    Ok((StatusCode::CREATED, Json(Created { tenant, api_key })))
}

pub async fn update(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<Json<LimitsBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Tenant>> {
    admin(&p)?;
    let Json(b) =
        body.map_err(|e| ApiError::bad_request(format!("bad tenant request: {}", e.body_text())))?;
    let t = tenant_of(name.clone(), &b)?;
    st.ctl.update_tenant(&t)?;
    Ok(Json(
        st.ctl
            .tenant(&name)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .unwrap_or(t),
    ))
}

#[derive(Serialize)]
pub struct KeyOut {
    pub tenant: String,
    pub api_key: String,
}

pub async fn new_api_key(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<KeyOut>)> {
    admin(&p)?;
    if st
        .ctl
        .tenant(&name)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .is_none()
    {
        return Err(ApiError::new(
            404,
            "not_found",
            format!("no tenant {name:?}; create it with `dwell tenant create {name}`"),
        ));
    }
    let api_key = issue_key(&st, &name)?;
    Ok((
        StatusCode::CREATED,
        Json(KeyOut {
            tenant: name,
            api_key,
        }),
    ))
}

/// `GET /v1/tenants/{name}/keys` (admin): the tenant's keys, revoked ones
/// too; ids, names and times only, never a secret or its hash.
pub async fn list_keys(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<KeyRecord>>> {
    admin(&p)?;
    Ok(Json(
        st.ctl
            .api_keys(&name)
            .map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

/// `DELETE /v1/tenants/{name}/keys/{key}` (admin): revoke a key. Every
/// listener refuses it from the next request on, with 401.
pub async fn revoke_key(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((name, key)): Path<(String, String)>,
) -> ApiResult<Json<KeyRecord>> {
    admin(&p)?;
    st.ctl
        .revoke_api_key(&name, &key)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                404,
                "not_found",
                format!("tenant {name:?} has no API key {key:?}; list its keys with `dwell tenant key ls {name}`"),
            )
        })
}

#[derive(Serialize)]
pub struct TenantOut {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub held: Held,
    /// Held to the daemon's default quota (`dwell serve --default-max-*`):
    /// the tenant has no record of its own.
    pub default_quota: bool,
}

pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Vec<TenantOut>>> {
    admin(&p)?;
    Ok(Json(
        st.ctl
            .tenants(crate::auth::DEFAULT_TENANT)?
            .into_iter()
            .map(|(tenant, held, default_quota)| TenantOut {
                tenant,
                held,
                default_quota,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct UsageQuery {
    tenant: Option<String>,
    /// Unix milliseconds, or a date `2026-11-01` (UTC midnight).
    since: Option<String>,
}

fn parse_since(s: &str) -> ApiResult<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = format!("{s}T00:00:00Z");
    humantime::parse_rfc3339(if s.contains('T') { s } else { &t })
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        })
        .map_err(|_| {
            ApiError::bad_request(format!(
                "since {s:?} is not a date; write it like 2026-11-01 or 2026-11-01T12:00:00Z"
            ))
        })
}

pub async fn usage(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Json<Report>> {
    let tenant = match (&q.tenant, p.admin) {
        (Some(t), true) => Some(t.clone()),
        (None, true) => None,
        (Some(t), false) if *t != p.tenant => {
            return Err(ApiError::new(
                403,
                "permission_denied",
                "only an admin key can see another tenant's usage",
            ))
        }
        _ => Some(p.tenant.clone()),
    };
    let since = q
        .since
        .as_deref()
        .map(parse_since)
        .transpose()?
        .unwrap_or(0);
    Ok(Json(st.ctl.usage(tenant.as_deref(), since)?))
}

/// A per-sandbox gauge: name, help, value from kernel stats.
type StatGauge = (&'static str, &'static str, fn(&dwell_runtime::Stats) -> f64);
/// A per-tenant usage counter: name, value from totals.
type UsageCounter = (&'static str, fn(&dwell_control::metering::Totals) -> f64);

/// Prometheus text format.
pub async fn metrics(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<([(&'static str, &'static str); 1], String)> {
    admin(&p)?;
    let all = st.ctl.metrics().await?;
    let usage = st.ctl.usage(None, 0)?;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP dwell_sandboxes Live sandboxes by tenant, state and mode.\n# TYPE dwell_sandboxes gauge");
    let mut counts = std::collections::BTreeMap::new();
    for (sb, _) in &all {
        *counts
            .entry((sb.tenant.clone(), sb.state.as_str(), sb.mode.as_str()))
            .or_insert(0u64) += 1;
    }
    for ((t, s, m), n) in counts {
        let _ = writeln!(
            out,
            "dwell_sandboxes{{tenant=\"{t}\",state=\"{s}\",mode=\"{m}\"}} {n}"
        );
    }
    let gauges: [StatGauge; 5] = [
        (
            "dwell_sandbox_memory_bytes",
            "Memory in use (cgroup).",
            |s| s.memory_bytes as f64,
        ),
        ("dwell_sandbox_memory_limit_bytes", "Memory limit.", |s| {
            s.memory_limit_bytes as f64
        }),
        ("dwell_sandbox_cpu_seconds_total", "CPU time used.", |s| {
            s.cpu_usage_ns as f64 / 1e9
        }),
        ("dwell_sandbox_pids", "Tasks.", |s| s.pids as f64),
        ("dwell_sandbox_oom_kills_total", "OOM kills.", |s| {
            s.oom_kills as f64
        }),
    ];
    for (name, help, f) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {}",
            if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            }
        );
        for (sb, stats) in &all {
            if let Some(s) = stats {
                let _ = writeln!(
                    out,
                    "{name}{{tenant=\"{}\",sandbox=\"{}\",name=\"{}\"}} {}",
                    sb.tenant,
                    sb.id,
                    sb.name,
                    f(s)
                );
            }
        }
    }
    let mut per_tenant =
        std::collections::BTreeMap::<String, dwell_control::metering::Totals>::new();
    for r in &usage.sandboxes {
        let e = per_tenant.entry(r.tenant.clone()).or_default();
        e.vcpu_hours += r.totals.vcpu_hours;
        e.memory_gib_hours += r.totals.memory_gib_hours;
        e.storage_gib_hours += r.totals.storage_gib_hours;
        e.cost_usd += r.totals.cost_usd;
    }
    let usage_series: [UsageCounter; 4] = [
        ("dwell_usage_vcpu_hours_total", |t| t.vcpu_hours),
        ("dwell_usage_memory_gib_hours_total", |t| t.memory_gib_hours),
        ("dwell_usage_storage_gib_hours_total", |t| {
            t.storage_gib_hours
        }),
        ("dwell_usage_cost_usd_total", |t| t.cost_usd),
    ];
    for (name, f) in usage_series {
        let _ = writeln!(out, "# TYPE {name} counter");
        for (t, totals) in &per_tenant {
            let _ = writeln!(out, "{name}{{tenant=\"{t}\"}} {}", f(totals));
        }
    }
    Ok(([("content-type", "text/plain; version=0.0.4")], out))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    since: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// The audit log: all tenants for admins, the caller's own otherwise.
pub async fn audit(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<dwell_store::AuditEntry>>> {
    let since = q
        .since
        .as_deref()
        .map(parse_since)
        .transpose()?
        .unwrap_or(0);
    let tenant = (!p.admin).then_some(p.tenant.as_str());
    st.ctl
        .audit(tenant, since, q.limit.unwrap_or(1000).min(10_000))
        .map(Json)
        .map_err(|e| ApiError::internal(e.to_string()))
}
