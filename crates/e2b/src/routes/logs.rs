//! `GET /sandboxes/{id}/logs` and `GET /v2/sandboxes/{id}/logs`: the
//! sandbox's lifecycle events (dwell's `dwell logs --events`: requests,
//! state changes, policies firing, service exits, errors) as E2B's sandbox
//! logs. An `error` event is level `error`, the rest `info`; the event's
//! kind is the entry's `fields.kind`. A killed sandbox keeps its events.
//!
//! v1: `start` (Unix ms, inclusive) and `limit`; oldest first, both as
//! `logs` (`{timestamp, line}`) and `logEntries`. v2: `cursor` (Unix ms),
//! `limit`, `direction` (`forward` from the cursor, or `backward` up to
//! it, newest first), `level` (the lowest level returned) and `search` (a
//! substring of the message). The store filters and limits (off the async
//! threads), among the sandbox's newest [`dwell_store::EVENTS_KEPT`]
//! events, the most it keeps.

use axum::extract::{Path, RawQuery, State};
use axum::{Extension, Json};
use dwell_api::Principal;
use serde_json::{json, Value};

use crate::error::{E2bError, E2bResult};
use crate::routes::list::query_map;
use crate::E2bState;

/// The most entries one answer has (and the default).
const MAX_LIMIT: u32 = 1000;

/// The levels, lowest first.
const LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];

fn level_of(kind: &str) -> &'static str {
    if kind == "error" {
        "error"
    } else {
        "info"
    }
}

fn level_index(level: &str) -> usize {
    LEVELS.iter().position(|x| *x == level).unwrap_or(0)
}

fn number(q: &std::collections::HashMap<String, String>, name: &str) -> E2bResult<Option<i64>> {
    q.get(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                E2bError::bad_request(format!("{name} {v:?} is not a number; give an integer"))
            })
        })
        .transpose()
}

fn limit(q: &std::collections::HashMap<String, String>) -> E2bResult<u32> {
    match number(q, "limit")? {
        None => Ok(MAX_LIMIT),
        Some(n) if n < 0 => Err(E2bError::bad_request(format!(
            "limit {n} is negative; give 0 to {MAX_LIMIT}"
        ))),
        Some(n) => Ok(n.min(i64::from(MAX_LIMIT)) as u32),
    }
}

/// The events of the caller's sandbox `id` that match `q`, searched by
/// the store off the async threads (it reads at most the sandbox's newest
/// [`dwell_store::EVENTS_KEPT`] rows).
async fn events(
    st: &E2bState,
    p: &Principal,
    id: &str,
    q: dwell_store::EventQuery,
) -> E2bResult<Vec<dwell_store::Event>> {
    let (ctl, tenant, id) = (st.ctl.clone(), p.tenant.clone(), id.to_string());
    tokio::task::spawn_blocking(move || ctl.find_events(&tenant, &id, &q))
        .await
        .map_err(|e| E2bError::new(500, format!("reading the sandbox's events failed: {e}")))?
        .map_err(E2bError::from)
}

fn entry(e: &dwell_store::Event) -> Value {
    json!({
        "timestamp": crate::time::format_ms(e.at),
        "level": level_of(&e.kind),
        "message": e.message,
        "fields": {"kind": e.kind},
    })
}

/// `GET /sandboxes/{id}/logs`.
pub async fn v1(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> E2bResult<Json<Value>> {
    let q = query_map(raw.as_deref());
    let start = number(&q, "start")?.unwrap_or(0);
    let n = limit(&q)?;
    let q = dwell_store::EventQuery {
        from: Some(start),
        limit: n,
        ..Default::default()
    };
    let picked = events(&st, &p, &id, q).await?;
    let logs: Vec<Value> = picked
        .iter()
        .map(|e| json!({"timestamp": crate::time::format_ms(e.at), "line": e.message}))
        .collect();
    let entries: Vec<Value> = picked.iter().map(entry).collect();
    Ok(Json(json!({"logs": logs, "logEntries": entries})))
}

/// `GET /v2/sandboxes/{id}/logs`.
pub async fn v2(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> E2bResult<Json<Value>> {
    let q = query_map(raw.as_deref());
    let cursor = number(&q, "cursor")?;
    let n = limit(&q)?;
    let backward = match q.get("direction").map(String::as_str) {
        None | Some("") | Some("forward") => false,
        Some("backward") => true,
        Some(d) => {
            return Err(E2bError::bad_request(format!(
                "direction {d:?} is not a direction; use forward or backward"
            )))
        }
    };
    let min_level = match q.get("level").map(String::as_str) {
        None | Some("") => 0,
        Some(l) => LEVELS.iter().position(|x| *x == l).ok_or_else(|| {
            E2bError::bad_request(format!(
                "level {l:?} is not a log level; use debug, info, warn or error"
            ))
        })?,
    };
    let search = q.get("search").filter(|s| !s.is_empty()).cloned();
    // Only `error` events are above `info`.
    let kind = (min_level > level_index("info")).then(|| "error".to_string());
    let q = dwell_store::EventQuery {
        from: cursor.filter(|_| !backward),
        to: cursor.filter(|_| backward),
        kind,
        contains: search,
        newest_first: backward,
        limit: n,
    };
    let picked = events(&st, &p, &id, q).await?;
    Ok(Json(
        json!({"logs": picked.iter().map(entry).collect::<Vec<_>>()}),
    ))
}
