//! `GET /sandboxes/{id}/metrics`: a sample of the sandbox's real usage,
//! from its cgroups (CPU time, memory) and its volume (disk). CPU percent
//! is the average since the previous sample of the same sandbox (or since
//! it started). The cgroup counters dwell reads have no page-cache figure:
//! `memCache` is 0.
//!
//! Samples are taken when asked for, not kept: a `start`/`end` range (Unix
//! seconds) gets the current sample when now falls in it (with one
//! collection interval of slack after `end`, as E2B's samples are aligned
//! to 5 s buckets), and nothing for a range wholly in the past or future.
//! `GET /sandboxes/metrics?sandbox_ids=a,b` gives the current sample of
//! each running sandbox named.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::{Extension, Json};
use dwell_api::Principal;
use dwell_control::State as S;

use crate::error::{E2bError, E2bResult};
use crate::routes::list::query_map;
use crate::{lifetime, view, wire, E2bState};

/// How far after a range's `end` the current sample still counts (ms): one
/// collection interval of E2B's, whose range ends are whole seconds.
const END_SLACK_MS: i64 = 5_000;

/// The most sandboxes one `GET /sandboxes/metrics` may name.
const MAX_IDS: usize = 100;

/// A time of a range query: Unix seconds.
fn seconds(q: &std::collections::HashMap<String, String>, name: &str) -> E2bResult<Option<i64>> {
    q.get(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .and_then(|s| s.checked_mul(1000))
                .ok_or_else(|| {
                    E2bError::bad_request(format!(
                        "{name} {v:?} is not a time; give Unix seconds (like 1767225600)"
                    ))
                })
        })
        .transpose()
}

pub async fn metrics(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> E2bResult<Json<Vec<wire::Metric>>> {
    let q = query_map(raw.as_deref());
    let (start, end) = (seconds(&q, "start")?, seconds(&q, "end")?);
    if let (Some(a), Some(b)) = (start, end) {
        if a > b {
            return Err(E2bError::bad_request(
                "start is after end; give a range whose start comes first",
            ));
        }
    }
    let Some(m) = sample(&st, &p, &id).await? else {
        return Ok(Json(Vec::new()));
    };
    let at = m.timestamp_unix.saturating_mul(1000);
    Ok(Json(if inside(at, start, end) {
        vec![m]
    } else {
        Vec::new()
    }))
}

/// Whether a sample taken at `at` (Unix ms) answers a query for
/// `start..=end` (Unix ms, either open), with [`END_SLACK_MS`] after `end`
/// (saturating: an `end` near the largest time is no overflow).
fn inside(at: i64, start: Option<i64>, end: Option<i64>) -> bool {
    start.is_none_or(|a| at >= a) && end.is_none_or(|b| at <= b.saturating_add(END_SLACK_MS))
}

/// `GET /sandboxes/metrics?sandbox_ids=a,b`: `{"sandboxes": {id: sample}}`
/// for each named sandbox of the caller that runs (one that does not, or is
/// not the caller's, is left out).
pub async fn many(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> E2bResult<Json<serde_json::Value>> {
    let q = query_map(raw.as_deref());
    let ids: Vec<String> = q
        .get("sandbox_ids")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(E2bError::bad_request(format!(
            "name 1 to {MAX_IDS} sandboxes: sandbox_ids=ID1,ID2"
        )));
    }
    let mut out = BTreeMap::new();
    for id in ids {
        match sample(&st, &p, &id).await {
            Ok(Some(m)) => {
                out.insert(id, m);
            }
            Ok(None) => {}
            Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Json(serde_json::json!({ "sandboxes": out })))
}

/// The current sample of a sandbox of the caller (404 for another tenant's
/// or a deleted one); `None` while it does not run.
async fn sample(st: &E2bState, p: &Principal, id: &str) -> E2bResult<Option<wire::Metric>> {
    let sb = st.ctl.inspect(&p.tenant, id).await?;
    if view::e2b_state(sb.state).is_none() {
        return Err(crate::error::E2bError::not_found(id));
    }
    let (S::Running, Some(stats)) = (sb.state, sb.stats.as_ref()) else {
        // A paused sandbox uses no CPU and reports no samples, as on E2B.
        return Ok(None);
    };
    let now = lifetime::now_ms();
    let prev = {
        let mut samples = st.cpu_samples.lock().unwrap_or_else(|e| e.into_inner());
        // Samples of sandboxes nobody asked about for a while (deleted
        // outside E2B, or just no longer watched) go.
        if samples.len() >= crate::CPU_SAMPLES_PRUNE_AT {
            samples.retain(|_, (t, _)| now - *t < crate::CPU_SAMPLE_TTL_MS);
        }
        samples.insert(sb.id.clone(), (now, stats.cpu_usage_ns))
    };
    let (t0, cpu0) = prev.unwrap_or((sb.started_at.unwrap_or(sb.created_at), 0));
    let wall_ns = ((now - t0).max(1) as f64) * 1e6;
    let used_ns = stats.cpu_usage_ns.saturating_sub(cpu0) as f64;
    let pct = (used_ns / (wall_ns * sb.spec.vcpus) * 100.0).clamp(0.0, 100.0);
    let (disk_used, disk_total) = sb
        .volume
        .as_ref()
        .map(|v| (v.used_bytes, v.size_bytes))
        .unwrap_or((0, sb.spec.disk_bytes));
    Ok(Some(wire::Metric {
        timestamp: crate::time::format_ms(now),
        timestamp_unix: now / 1000,
        cpu_count: sb.spec.vcpus.ceil().max(1.0) as u64,
        cpu_used_pct: (pct * 100.0).round() / 100.0,
        mem_used: stats.memory_bytes,
        mem_total: if stats.memory_limit_bytes > 0 {
            stats.memory_limit_bytes
        } else {
            sb.spec.memory_bytes
        },
        mem_cache: 0,
        disk_used,
        disk_total,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_at_the_ends_of_time_is_no_overflow() {
        let now = 1_767_225_600_000;
        let q: std::collections::HashMap<String, String> =
            [("end".to_string(), "9223372036854775".to_string())].into();
        let end = seconds(&q, "end").unwrap();
        assert!(inside(now, None, end), "a range ending far ahead holds now");
        assert!(inside(now, Some(i64::MIN), Some(i64::MAX)));
        assert!(!inside(now, Some(i64::MAX), Some(i64::MAX)));
        assert!(!inside(now, None, Some(i64::MIN)));
        assert!(inside(now, Some(now), Some(now - END_SLACK_MS)));
        assert!(!inside(now, None, Some(now - END_SLACK_MS - 1)));
        let q: std::collections::HashMap<String, String> =
            [("end".to_string(), "9223372036854776".to_string())].into();
        assert!(
            seconds(&q, "end").is_err(),
            "past i64 milliseconds: refused"
        );
    }
}
