//! Snapshots through E2B: `POST /sandboxes/{id}/snapshots` captures the
//! sandbox's volume as a dwell snapshot (its id is E2B's `snapshotID` and
//! can be a template of a new sandbox), `GET /snapshots` lists them in
//! pages, `DELETE /templates/{id}` deletes one.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use bytes::Bytes;
use dwell_api::Principal;
use dwell_snapshot::Manifest;

use crate::error::{json_body, E2bError, E2bResult};
use crate::routes::list::query_map;
use crate::{paging, wire, E2bState};

fn view(m: &Manifest) -> wire::Snapshot {
    wire::Snapshot {
        snapshot_id: m.id.clone(),
        names: m.labels.get("name").cloned().into_iter().collect(),
    }
}

pub async fn create(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> E2bResult<(StatusCode, Json<wire::Snapshot>)> {
    let req: wire::NewSnapshot = json_body(&body, "snapshot")?;
    let sb = st.ctl.get(&p.tenant, &id)?;
    let m = st
        .ctl
        .snapshot_create(&p.tenant, &sb.id, req.name.filter(|n| !n.is_empty()))
        .await?;
    Ok((StatusCode::CREATED, Json(view(&m))))
}

pub async fn list(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> E2bResult<(HeaderMap, Json<Vec<wire::Snapshot>>)> {
    let q = query_map(raw.as_deref());
    let limit = paging::limit(q.get("limit").map(String::as_str))?;
    let mut all = st.ctl.snapshots(&p.tenant, None).await?;
    if let Some(sb) = q.get("sandboxID").filter(|s| !s.is_empty()) {
        all.retain(|m| m.source.sandbox.as_deref() == Some(sb.as_str()));
    }
    if let Some(n) = q.get("name").filter(|s| !s.is_empty()) {
        all.retain(|m| m.labels.get("name") == Some(n));
    }
    let key = |m: &Manifest| {
        (
            crate::time::parse_ms(&m.created_at).unwrap_or(0),
            m.id.clone(),
        )
    };
    all.sort_by_key(key);
    let (page, next) = paging::page(
        all,
        key,
        q.get("nextToken").map(String::as_str),
        false,
        limit,
    )?;
    let headers = paging::next_header(next)?;
    Ok((headers, Json(page.iter().map(view).collect())))
}

/// `DELETE /templates/{id}`: the caller's template of that id or name,
/// else its snapshot.
pub async fn delete(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> E2bResult<StatusCode> {
    if let Some(done) = crate::routes::templates::delete(&st, &p.tenant, &id).await? {
        return Ok(done);
    }
    match st.ctl.snapshot_delete(&p.tenant, &id).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(dwell_control::Error::SnapshotNotFound(_)) => Err(E2bError::new(
            404,
            format!("no template or snapshot {id:?} (an API key sees only its own tenant's)"),
        )),
        Err(e) => Err(e.into()),
    }
}
