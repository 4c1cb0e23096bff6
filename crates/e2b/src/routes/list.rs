//! `GET /v2/sandboxes`: the tenant's sandboxes, filtered by state,
//! metadata, start time and template, sorted by start time (newest first
//! unless `order=asc`, as on E2B), in pages linked by the `X-Next-Token`
//! header. `GET /sandboxes` (the list route before v2): the running ones,
//! filtered by metadata, newest first, in one answer.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use dwell_api::Principal;

use crate::error::{E2bError, E2bResult};
use crate::{paging, view, wire, E2bState};

/// The filters of a list request.
#[derive(Debug, Default)]
pub struct Filter {
    pub states: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub started_after: Option<i64>,
    pub template: Option<String>,
}

/// Query parameters as a map (the last value of a name wins).
pub fn query_map(q: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Parse the filters. `metadata` is itself a URL-encoded `k=v&k2=v2`
/// string whose keys and values the SDK percent-encodes once more.
pub fn filter(q: &HashMap<String, String>) -> E2bResult<Filter> {
    let mut f = Filter::default();
    if let Some(s) = q.get("state") {
        for st in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if st != "running" && st != "paused" {
                return Err(E2bError::bad_request(format!(
                    "state {st:?} is not a sandbox state; use running, paused or both (state=running,paused)"
                )));
            }
            f.states.push(st.to_string());
        }
    }
    if let Some(m) = q.get("metadata") {
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        for (k, v) in form_urlencoded::parse(m.as_bytes()) {
            f.metadata.insert(dec(&k), dec(&v));
        }
    }
    if let Some(s) = q.get("startedAfter") {
        f.started_after = Some(crate::time::parse_ms(s).ok_or_else(|| {
            E2bError::bad_request(format!(
                "startedAfter {s:?} is not an RFC 3339 time; write it like 2026-01-02T03:04:05Z"
            ))
        })?);
    }
    f.template = q.get("template").filter(|t| !t.is_empty()).cloned();
    Ok(f)
}

pub async fn list(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> E2bResult<(HeaderMap, Json<Vec<wire::Listed>>)> {
    let q = query_map(raw.as_deref());
    let f = filter(&q)?;
    let limit = paging::limit(q.get("limit").map(String::as_str))?;
    // Without an order, newest first (E2B's default).
    let descending = match q.get("order").map(String::as_str) {
        Some("asc") => false,
        None | Some("") | Some("desc") => true,
        Some(o) => {
            return Err(E2bError::bad_request(format!(
                "order {o:?} is not a sort order; use asc or desc"
            )))
        }
    };
    let items = select(&st, &p, &f, descending)?;
    let (page, next) = paging::page(
        items,
        key,
        q.get("nextToken").map(String::as_str),
        descending,
        limit,
    )?;
    let headers = paging::next_header(next)?;
    Ok((
        headers,
        Json(page.iter().map(|(sb, s)| view::listed(sb, s)).collect()),
    ))
}

/// The sort key of a listed sandbox: its start, then its id.
fn key(x: &(dwell_control::Sandbox, &'static str)) -> (i64, String) {
    (x.0.created_at, x.0.id.clone())
}

/// The tenant's sandboxes that pass `f`, with their E2B state, sorted by
/// start time (newest first when `descending`).
fn select(
    st: &E2bState,
    p: &Principal,
    f: &Filter,
    descending: bool,
) -> E2bResult<Vec<(dwell_control::Sandbox, &'static str)>> {
    let mut items: Vec<(dwell_control::Sandbox, &'static str)> = st
        .ctl
        .list(&p.tenant)?
        .into_iter()
        .filter_map(|sb| {
            let state = view::e2b_state(sb.state)?;
            let keep = (f.states.is_empty() || f.states.iter().any(|s| s == state))
                && f.started_after.is_none_or(|t| sb.created_at >= t)
                && f.template
                    .as_ref()
                    .is_none_or(|t| *t == view::template_of(&sb))
                && f.metadata
                    .iter()
                    .all(|(k, v)| sb.spec.labels.get(k) == Some(v));
            keep.then_some((sb, state))
        })
        .collect();
    items.sort_by_key(key);
    if descending {
        items.reverse();
    }
    Ok(items)
}

/// `GET /sandboxes`: the running sandboxes of the tenant (filtered by
/// `metadata`), newest first, unpaged, as the list route before v2 answers.
pub async fn list_running(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> E2bResult<Json<Vec<wire::Listed>>> {
    let q = query_map(raw.as_deref());
    let mut f = filter(&q)?;
    f.states = vec!["running".to_string()];
    let items = select(&st, &p, &f, true)?;
    Ok(Json(
        items.iter().map(|(sb, s)| view::listed(sb, s)).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_decoded_as_the_sdk_encodes_it() {
        // Python SDK: urlencode({quote(k): quote(v)}), then a query parameter.
        let q = query_map(Some(
            "metadata=who%3Dme%26note%3Da%252520b&state=running%2Cpaused",
        ));
        let f = filter(&q).unwrap();
        assert_eq!(f.metadata.get("who").map(String::as_str), Some("me"));
        assert_eq!(f.metadata.get("note").map(String::as_str), Some("a b"));
        assert_eq!(f.states, ["running", "paused"]);
        assert!(filter(&query_map(Some("state=asleep"))).is_err());
        assert!(filter(&query_map(Some("startedAfter=soon"))).is_err());
    }
}
