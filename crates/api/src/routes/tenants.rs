//! `/v1/tenants`, `/v1/usage`, `/metrics`: tenants and quotas (admin),
//! usage and cost, and Prometheus metrics.

use std::fmt::Write;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use dwell_contract::query::{Audit, Usage, UsageSeriesQuery};
use dwell_contract::sandbox::SizeArg;
use dwell_contract::tenants::{
    ApiKey as KeyView, AuditEntry, KeyCreated, LimitsBody, Report, Tenant as TenantBody,
    TenantCreated, TenantView, UsageSeries,
};
use dwell_contract::ErrorBody;
use dwell_control::size::parse_size;
use dwell_store::{ApiKey, Tenant};

use crate::auth::{hash_key, new_key, Principal};
use crate::bounds;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Path, Query};
use crate::wire;
use crate::AppState;

fn size(field: &str, v: &Option<SizeArg>) -> ApiResult<Option<u64>> {
    match v {
        None => Ok(None),
        Some(SizeArg::Bytes(b)) => Ok(Some(*b)),
        Some(SizeArg::Text(t)) => parse_size(t)
            .map(Some)
            .map_err(|m| ApiError::bad_request(format!("{field}: {m}"))),
    }
}

fn tenant_of(name: String, b: &LimitsBody) -> ApiResult<Tenant> {
    bounds::quantity("max_sandboxes", b.max_sandboxes)?;
    bounds::vcpus("max_vcpus", b.max_vcpus)?;
    let max_memory = size("max_memory", &b.max_memory)?;
    bounds::quantity("max_memory", max_memory)?;
    let max_storage = size("max_storage", &b.max_storage)?;
    bounds::quantity("max_storage", max_storage)?;
    let default_policies = match &b.default_policies {
        Some(p) => {
            bounds::policies("default_policies", p)?;
            let p: dwell_control::policy::PolicyArgs = wire::map(p)?;
            // Validate now, so a bad default never breaks a later create.
            p.apply(&mut dwell_control::policy::Policies::default())?;
            Some(serde_json::to_value(p).map_err(|e| ApiError::internal(e.to_string()))?)
        }
        None => None,
    };
    let default_egress = match &b.default_egress {
        Some(e) => {
            let rules: dwell_runtime::host::egress::EgressRules = wire::map(e)?;
            // Validate now, so a bad default never breaks a later create.
            dwell_control::model::check_egress(&rules)?;
            Some(serde_json::to_value(rules).map_err(|e| ApiError::internal(e.to_string()))?)
        }
        None => None,
    };
    Ok(Tenant {
        default_policies,
        default_egress,
        name,
        max_sandboxes: b.max_sandboxes,
        max_vcpus: b.max_vcpus,
        max_memory,
        max_storage,
        created_at: 0,
    })
}

fn issue_key(st: &AppState, tenant: &str) -> ApiResult<String> {
    let key = new_key();
    st.ctl.add_api_key(
        &ApiKey {
            id: format!("key-{}", &hash_key(&key)[..12]),
            tenant: tenant.into(),
            name: "api".into(),
            admin: false,
            created_at: 0,
        },
        &hash_key(&key),
    )?;
    Ok(key)
}

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants",
    summary = "Create a tenant and its first API key (admin)",
    request_body = LimitsBody,
    responses((status = 201, body = TenantCreated), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<crate::extract::Json<LimitsBody>, crate::extract::BodyRejection>,
) -> ApiResult<(StatusCode, Json<TenantCreated>)> {
    crate::auth::require_admin(&p, "managing tenants and their keys")?;
    let crate::extract::Json(b) =
        body.map_err(|e| ApiError::bad_request(format!("bad tenant request: {}", e.detail)))?;
    let name = b
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("a tenant needs a name: {\"name\": \"acme\", ...}"))?;
    let t = tenant_of(name, &b)?;
    st.ctl.create_tenant(&t)?;
    let api_key = issue_key(&st, &t.name)?;
    let tenant = st.ctl.tenant(&t.name)?.unwrap_or(t);
    let tenant = wire::map(&tenant)?;
    Ok((StatusCode::CREATED, Json(TenantCreated { tenant, api_key })))
}

#[utoipa::path(patch, path = "/v1/tenants/{name}", tag = "tenants",
    summary = "Change a tenant's quota and default policies (admin)",
    params(("name" = String, Path, description = "Tenant name")),
    request_body = LimitsBody,
    responses((status = 200, body = TenantBody), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn update(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    body: Result<crate::extract::Json<LimitsBody>, crate::extract::BodyRejection>,
) -> ApiResult<Json<TenantBody>> {
    crate::auth::require_admin(&p, "managing tenants and their keys")?;
    let crate::extract::Json(b) =
        body.map_err(|e| ApiError::bad_request(format!("bad tenant request: {}", e.detail)))?;
    let t = tenant_of(name.clone(), &b)?;
    st.ctl.update_tenant(&t)?;
    let tenant = st.ctl.tenant(&name)?.unwrap_or(t);
    wire::map(&tenant).map(Json)
}

#[utoipa::path(post, path = "/v1/tenants/{name}/keys", tag = "tenants",
    summary = "Issue another API key for a tenant (admin); shown once",
    params(("name" = String, Path, description = "Tenant name")),
    responses((status = 201, body = KeyCreated), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn new_api_key(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<KeyCreated>)> {
    crate::auth::require_admin(&p, "managing tenants and their keys")?;
    if st.ctl.tenant(&name)?.is_none() {
        return Err(dwell_control::Error::TenantNotFound(name).into());
    }
    let api_key = issue_key(&st, &name)?;
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            tenant: name,
            api_key,
        }),
    ))
}

/// `GET /v1/tenants/{name}/keys` (admin): the tenant's keys, revoked ones
/// too; ids, names and times only, never a secret or its hash.
#[utoipa::path(get, path = "/v1/tenants/{name}/keys", tag = "tenants",
    summary = "A tenant's API keys, revoked ones too (admin)",
    params(("name" = String, Path, description = "Tenant name")),
    responses((status = 200, body = Vec<KeyView>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list_keys(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<KeyView>>> {
    crate::auth::require_admin(&p, "managing tenants and their keys")?;
    let keys = st.ctl.api_keys(&name)?;
    wire::map_all(&keys).map(Json)
}

/// `DELETE /v1/tenants/{name}/keys/{key}` (admin): revoke a key. Every
/// listener refuses it from the next request on, with 401.
#[utoipa::path(delete, path = "/v1/tenants/{name}/keys/{key}", tag = "tenants",
    summary = "Revoke an API key (admin)",
    params(("name" = String, Path, description = "Tenant name"), ("key" = String, Path, description = "The key's id")),
    responses((status = 200, body = KeyView), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn revoke_key(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((name, key)): Path<(String, String)>,
) -> ApiResult<Json<KeyView>> {
    crate::auth::require_admin(&p, "managing tenants and their keys")?;
    let revoked = st.ctl.revoke_api_key(&name, &key)?;
    revoked.map(|k| wire::map(&k).map(Json)).unwrap_or_else(|| {
        Err(ApiError::new(
            404,
            "not_found",
            format!("tenant {name:?} has no API key {key:?}; list its keys with `dwell tenant key ls {name}`"),
        ))
    })
}

#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    summary = "Tenants with their quotas and what they hold (admin)",
    responses((status = 200, body = Vec<TenantView>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Vec<TenantView>>> {
    crate::auth::require_admin(&p, "managing tenants and their keys")?;
    st.ctl
        .tenants(crate::auth::DEFAULT_TENANT)?
        .into_iter()
        .map(|(tenant, held, default_quota)| {
            Ok(TenantView {
                tenant: wire::map(&tenant)?,
                held: wire::map(&held)?,
                default_quota,
            })
        })
        .collect::<ApiResult<_>>()
        .map(Json)
}

#[utoipa::path(get, path = "/v1/tenants/{name}", tag = "tenants",
    summary = "One tenant with its quota and what it holds: any tenant for an admin, a key's own tenant for the key",
    params(("name" = String, Path, description = "Tenant name")),
    responses((status = 200, body = TenantView), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn inspect(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<Json<TenantView>> {
    if !p.admin && p.tenant != name {
        return Err(ApiError::new(
            403,
            "permission_denied",
            format!(
                "a tenant's key may read only its own tenant ({:?}); reading {name:?} needs an admin key",
                p.tenant
            ),
        ));
    }
    let found = st.ctl.tenant_view(&name, crate::auth::DEFAULT_TENANT)?;
    let Some((tenant, held, default_quota)) = found else {
        return Err(ApiError::not_found(format!(
            "no tenant named {name:?}; list them with `dwell tenant ls`"
        )));
    };
    Ok(Json(TenantView {
        tenant: wire::map(&tenant)?,
        held: wire::map(&held)?,
        default_quota,
    }))
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

#[utoipa::path(get, path = "/v1/usage", tag = "tenants",
    summary = "Usage and cost of the tenant's sandboxes (an admin: any tenant's, or all)",
    params(Usage),
    responses((status = 200, body = Report), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn usage(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<Usage>,
) -> ApiResult<Json<Report>> {
    let tenant = match (&q.tenant, p.admin) {
        (Some(t), true) if t == "*" => None,
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
    wire::map(&st.ctl.usage(tenant.as_deref(), since)?).map(Json)
}

#[utoipa::path(get, path = "/v1/usage/series", tag = "tenants",
    summary = "Usage and cost per tenant over time, in hourly or daily buckets (an admin: every tenant's, or one's)",
    params(UsageSeriesQuery),
    responses((status = 200, body = UsageSeries), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn usage_series(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<UsageSeriesQuery>,
) -> ApiResult<Json<UsageSeries>> {
    let tenant = match (q.tenant.as_deref(), p.admin) {
        (Some("*") | None, true) => None,
        (Some(t), true) => Some(t.to_string()),
        (Some(t), false) if t != p.tenant => {
            return Err(ApiError::new(
                403,
                "permission_denied",
                "only an admin key can see another tenant's usage",
            ))
        }
        _ => Some(p.tenant.clone()),
    };
    const HOUR: i64 = 3_600_000;
    let step = match q.step.as_deref().unwrap_or("day") {
        "hour" => HOUR,
        "day" => 24 * HOUR,
        other => {
            return Err(ApiError::bad_request(format!(
                "step {other:?} is not a bucket size; use `hour` or `day`"
            )))
        }
    };
    let until = match q.until.as_deref() {
        Some(u) => parse_since(u)?,
        None => dwell_store::now_ms(),
    };
    let since = match q.since.as_deref() {
        Some(s) => parse_since(s)?,
        None => until - 30 * 24 * HOUR,
    };
    if since >= until {
        return Err(ApiError::bad_request(
            "since must be before until: the window is [since, until)",
        ));
    }
    // Hourly buckets over years would be a very long answer.
    if (until - since) / step > 24 * 400 {
        return Err(ApiError::bad_request(format!(
            "that window holds {} buckets, more than {}: narrow it or use step=day",
            (until - since) / step,
            24 * 400
        )));
    }
    let series = st.ctl.usage_series(tenant.as_deref(), since, until, step)?;
    wire::map(&series).map(Json)
}

/// A per-sandbox gauge: name, help, value from kernel stats.
type StatGauge = (&'static str, &'static str, fn(&dwell_runtime::Stats) -> f64);
/// A per-tenant usage counter: name, value from totals.
type UsageCounter = (&'static str, fn(&dwell_control::metering::Totals) -> f64);

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "tenants",
    summary = "Prometheus metrics (admin)",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = "default", description = "Error", body = ErrorBody)))]
pub async fn metrics(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<([(&'static str, &'static str); 1], String)> {
    crate::auth::require_admin(&p, "reading the daemon's metrics")?;
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
    let _ = writeln!(
        out,
        "# HELP dwell_wakes_total Sandboxes woken on use (auto-resume) since the daemon started, by the state they slept in.\n# TYPE dwell_wakes_total counter"
    );
    for (t, from, n) in st.ctl.wake_counts() {
        let _ = writeln!(
            out,
            "dwell_wakes_total{{tenant=\"{t}\",from=\"{from}\"}} {n}"
        );
    }
    let pools = st.ctl.warm_pools();
    type PoolSeries = (
        &'static str,
        &'static str,
        fn(&dwell_runtime::gvisor::pool::PoolStatus) -> u64,
    );
    let pool_series: [PoolSeries; 5] = [
        (
            "dwell_gvisor_pool_size",
            "Configured size of the warm pool (--gvisor-pool).",
            |p| p.size,
        ),
        (
            "dwell_gvisor_pool_ready",
            "Pre-started sandboxes waiting in the warm pool.",
            |p| p.ready,
        ),
        (
            "dwell_gvisor_pool_memory_bytes",
            "Memory limit of each pooled sandbox (--gvisor-pool-memory).",
            |p| p.memory_bytes,
        ),
        (
            "dwell_gvisor_pool_claims_total",
            "Creates served warm from the pool since the daemon started.",
            |p| p.claimed_total,
        ),
        (
            "dwell_gvisor_pool_refill_failures_total",
            "Pool sandboxes that failed to start since the daemon started.",
            |p| p.refill_failures_total,
        ),
    ];
    for (name, help, f) in pool_series {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (runtime, p) in &pools {
            let _ = writeln!(out, "{name}{{runtime=\"{runtime}\"}} {}", f(p));
        }
    }
    let (dozing, doze_wakes) = st.ctl.doze_counts();
    let _ = writeln!(
        out,
        "# HELP dwell_sandboxes_dozing Running sandboxes frozen while idle (gVisor: see --doze-after).\n# TYPE dwell_sandboxes_dozing gauge\ndwell_sandboxes_dozing {dozing}\n# HELP dwell_doze_wakes_total Dozing sandboxes thawed by a call since the daemon started.\n# TYPE dwell_doze_wakes_total counter\ndwell_doze_wakes_total {doze_wakes}"
    );
    Ok(([("content-type", "text/plain; version=0.0.4")], out))
}

/// The audit log: all tenants for admins, the caller's own otherwise.
#[utoipa::path(get, path = "/v1/audit", tag = "tenants",
    summary = "The audit log: every tenant's for an admin, the caller's own otherwise",
    params(Audit),
    responses((status = 200, body = Vec<AuditEntry>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn audit(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<Audit>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let since = q
        .since
        .as_deref()
        .map(parse_since)
        .transpose()?
        .unwrap_or(0);
    let tenant = (!p.admin).then_some(p.tenant.as_str());
    let entries = st
        .ctl
        .audit(tenant, since, q.limit.unwrap_or(1000).min(10_000))?;
    wire::map_all(&entries).map(Json)
}
