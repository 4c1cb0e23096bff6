//! `GET /sandboxes/{id}/metrics`: a sample of the sandbox's real usage,
//! from its cgroups (CPU time, memory) and its volume (disk). CPU percent
//! is the average since the previous sample of the same sandbox (or since
//! it started). The cgroup counters dwell reads have no page-cache figure:
//! `memCache` is 0.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use dwell_api::Principal;
use dwell_control::State as S;

use crate::error::E2bResult;
use crate::{lifetime, view, wire, E2bState};

pub async fn metrics(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> E2bResult<Json<Vec<wire::Metric>>> {
    let sb = st.ctl.inspect(&p.tenant, &id).await?;
    if view::e2b_state(sb.state).is_none() {
        return Err(crate::error::E2bError::not_found(&id));
    }
    let (S::Running, Some(stats)) = (sb.state, sb.stats.as_ref()) else {
        // A paused sandbox uses no CPU and reports no samples, as on E2B.
        return Ok(Json(Vec::new()));
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
    Ok(Json(vec![wire::Metric {
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
    }]))
}
