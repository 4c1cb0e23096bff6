//! The Template SDK's routes: ask for a build (`POST /v3/templates`), get
//! upload links for COPY files (`GET /templates/{id}/files/{hash}`) and
//! upload them, start the build with the step list (`POST
//! /v2/templates/{id}/builds/{build}`, in [`super::template_builds`]),
//! poll its status and logs, check a name (`GET /templates/aliases/{name}`),
//! list, tag and delete templates.
//!
//! Templates belong to the API key's tenant: another tenant's template id
//! or name answers 404, exactly as one that does not exist.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use bytes::Bytes;
use dwell_api::Principal;
use dwell_store::{E2bBuild, E2bTemplate};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::error::{json_body, E2bError, E2bResult};
use crate::routes::list::query_map;
use crate::template_files::{self as files, MAX_TENANT_FILES, MAX_UPLOAD};
use crate::template_wire as w;
use crate::{time, translate, E2bState};

/// The tag a build gets when it is asked for without one.
pub const DEFAULT_TAG: &str = "default";

/// A template name with an optional `:tag`.
pub fn split_name(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (name, None),
    }
}

fn check_name(name: &str) -> E2bResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(E2bError::bad_request(format!(
            "template name {name:?} is not valid: use 1-128 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )));
    }
    if matches!(name, "base" | "host") {
        return Err(E2bError::bad_request(format!(
            "template name {name:?} is the built-in base template; choose another name"
        )));
    }
    Ok(())
}

fn check_tag(tag: &str) -> E2bResult<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(E2bError::bad_request(format!(
            "tag {tag:?} is not valid: use 1-128 letters, digits, '-', '_' or '.'"
        )))
    }
}

pub fn template_not_found(id: &str) -> E2bError {
    E2bError::new(
        404,
        format!("template {id:?} not found; build it with Template.build(template, {id:?}) (an API key sees only its own tenant's templates)"),
    )
}

fn build_not_found(template: &str, build: &str) -> E2bError {
    E2bError::new(
        404,
        format!("template {template:?} has no build {build:?}; use the build id Template.build_in_background returned"),
    )
}

fn store_err(e: dwell_store::Error) -> E2bError {
    E2bError::new(500, format!("the template store failed: {e}"))
}

/// The caller's template by id or name.
pub fn find(st: &E2bState, tenant: &str, id: &str) -> E2bResult<E2bTemplate> {
    st.ctl
        .store()
        .e2b_template(tenant, id)
        .map_err(store_err)?
        .ok_or_else(|| template_not_found(id))
}

/// The build of template `name[:tag]` of `tenant` a sandbox or another
/// template starts from: the tagged build, else (no tag given) the
/// `default` tag or the newest ready build. `Ok(None)` when the tenant has
/// no such template.
pub fn ready_build(
    st: &E2bState,
    tenant: &str,
    name_tag: &str,
) -> E2bResult<Option<(E2bTemplate, E2bBuild)>> {
    let store = st.ctl.store();
    let (name, tag) = split_name(name_tag);
    let Some(t) = store.e2b_template(tenant, name).map_err(store_err)? else {
        return Ok(None);
    };
    let b = match tag {
        Some(tag) => store.e2b_tagged_build(&t.id, tag).map_err(store_err)?,
        None => match store
            .e2b_tagged_build(&t.id, DEFAULT_TAG)
            .map_err(store_err)?
        {
            Some(b) => Some(b),
            None => store.e2b_latest_ready(&t.id).map_err(store_err)?,
        },
    };
    match b {
        Some(b) if b.image.is_some() => Ok(Some((t, b))),
        _ => Err(E2bError::new(
            404,
            match tag {
                Some(tag) => format!("template {name:?} has no ready build tagged {tag:?}; see Template.get_tags({name:?})"),
                None => format!("template {name:?} has no ready build yet; wait for Template.build to finish (or see its status and logs)"),
            },
        )),
    }
}

/// `POST /v3/templates`: 202 with the template (made on first use of the
/// name) and a new build waiting for its step list.
pub async fn request_build(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    body: Bytes,
) -> E2bResult<(StatusCode, Json<w::RequestedV3>)> {
    let req: w::BuildRequestV3 = json_body(&body, "template build request")?;
    let full = req
        .name
        .or(req.alias)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            E2bError::bad_request(
                "the request has no template name: Template.build(template, \"my-template\")",
            )
        })?;
    let (name, tag) = split_name(&full);
    check_name(name)?;
    let mut tags: Vec<String> = Vec::new();
    for t in tag
        .into_iter()
        .chain(req.tags.iter().flatten().map(String::as_str))
    {
        check_tag(t)?;
        if !tags.iter().any(|x| x == t) {
            tags.push(t.to_string());
        }
    }
    if tags.is_empty() {
        tags.push(DEFAULT_TAG.to_string());
    }
    for (what, v) in [("cpuCount", req.cpu_count), ("memoryMB", req.memory_mb)] {
        if v.is_some_and(|v| v < 1) {
            return Err(E2bError::bad_request(format!("{what} must be at least 1")));
        }
    }
    let build_id = files::new_uuid();
    let new_id = files::new_template_id();
    let (t, b) = st
        .ctl
        .store()
        .e2b_request_build(&dwell_store::E2bBuildRequest {
            tenant: &p.tenant,
            name,
            new_template_id: &new_id,
            build_id: &build_id,
            tags: &tags,
            cpu_count: req.cpu_count,
            memory_mb: req.memory_mb,
        })
        .map_err(store_err)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(w::RequestedV3 {
            template_id: t.id,
            build_id: b.id,
            public: false,
            names: vec![t.name.clone()],
            tags: b.tags,
            aliases: vec![t.name],
        }),
    ))
}

/// `GET /templates/{id}/files/{hash}`: 201 with whether the files are
/// there already and a one-time URL to upload them to (a PUT of the tar).
pub async fn upload_link(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path((id, hash)): Path<(String, String)>,
    headers: HeaderMap,
) -> E2bResult<(StatusCode, Json<w::FileUpload>)> {
    find(&st, &p.tenant, &id)?;
    translate::check_hash(&hash).map_err(E2bError::bad_request)?;
    let present = files::upload_path(st.ctl.data_dir(), &p.tenant, &hash).is_file();
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '@']))
        .ok_or_else(|| {
            E2bError::bad_request(
                "the request has no usable Host header, which the upload URL is made from",
            )
        })?;
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    let token = st.uploads.grant(&p.tenant, &hash);
    Ok((
        StatusCode::CREATED,
        Json(w::FileUpload {
            present,
            url: Some(format!("{scheme}://{host}/templates/files/upload/{token}")),
            headers: None,
        }),
    ))
}

/// `PUT /templates/files/upload/{token}` (no API key: the token is the
/// grant): the tar of a COPY step's files, at most [`MAX_UPLOAD`] bytes.
pub async fn upload(
    State(st): State<E2bState>,
    Path(token): Path<String>,
    body: Body,
) -> E2bResult<StatusCode> {
    let grant = st.uploads.take(&token).ok_or_else(|| {
        E2bError::new(
            404,
            "this upload URL is unknown, used or expired; build again to get a new one",
        )
    })?;
    let dir = files::tenant_dir(st.ctl.data_dir(), &grant.tenant);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| E2bError::new(500, format!("cannot make {}: {e}", dir.display())))?;
    // Room set aside for this upload (with the tenant's other running
    // uploads counted), given back when this returns: by then the file is
    // on disk, where the next reservation counts it, or is removed.
    let (uploads, data_dir, tenant) = (
        st.uploads.clone(),
        st.ctl.data_dir().to_path_buf(),
        grant.tenant.clone(),
    );
    let reservation = tokio::task::spawn_blocking(move || uploads.reserve(&data_dir, &tenant))
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
        E2bError::new(
            413,
            format!("this tenant already keeps (or is uploading) {MAX_TENANT_FILES} bytes of template files; delete templates you no longer need, or wait for running uploads"),
        )
    })?;
    let cap = reservation.bytes;
    let tmp = dir.join(format!(".upload-{}", files::random_hex(8)));
    let r = receive(body, &tmp, cap).await;
    if let Err(e) = r {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    let dest = dir.join(&grant.hash);
    if let Err(e) = tokio::fs::rename(&tmp, &dest).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(E2bError::new(
            500,
            format!("cannot keep the upload at {}: {e}", dest.display()),
        ));
    }
    Ok(StatusCode::OK)
}

async fn receive(body: Body, tmp: &std::path::Path, cap: u64) -> E2bResult<()> {
    let io = |e: std::io::Error| E2bError::new(500, format!("cannot write the upload: {e}"));
    let mut f = tokio::fs::File::create(tmp).await.map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut n: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| E2bError::bad_request(format!("the upload broke off: {e}")))?;
        n += chunk.len() as u64;
        if n > cap {
            return Err(E2bError::new(
                413,
                format!("the upload is larger than {cap} bytes (one upload takes at most {MAX_UPLOAD}, a tenant keeps at most {MAX_TENANT_FILES} of template files); copy fewer files, or delete templates you no longer need"),
            ));
        }
        f.write_all(&chunk).await.map_err(io)?;
    }
    f.sync_all().await.map_err(io)?;
    Ok(())
}

fn log_entry(l: &dwell_store::E2bLogLine) -> w::LogEntry {
    w::LogEntry {
        timestamp: time::format_ms(l.at),
        message: l.message.clone(),
        level: l.level.clone(),
        step: l.step.clone(),
    }
}

fn level_rank(l: &str) -> Option<u8> {
    match l {
        "debug" => Some(0),
        "info" => Some(1),
        "warn" => Some(2),
        "error" => Some(3),
        _ => None,
    }
}

/// `GET /templates/{id}/builds/{build}/status?logsOffset=&limit=&level=`:
/// the build's status and up to `limit` (100) log entries from the
/// `logsOffset`-th on (with `level`, only those at that level or above;
/// the offset still counts every entry).
pub async fn status(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path((id, build)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> E2bResult<Json<w::BuildInfo>> {
    let q = query_map(raw.as_deref());
    let t = find(&st, &p.tenant, &id)?;
    let store = st.ctl.store();
    let b = store
        .e2b_build(&t.id, &build)
        .map_err(store_err)?
        .ok_or_else(|| build_not_found(&id, &build))?;
    let num = |k: &str, default: i64, max: i64| -> E2bResult<i64> {
        match q.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (0..=max).contains(n))
                .ok_or_else(|| {
                    E2bError::bad_request(format!("{k}={v:?} is not a number from 0 to {max}"))
                }),
        }
    };
    let offset = num("logsOffset", 0, i32::MAX as i64)?;
    let limit = num("limit", 100, 100)?;
    let min = match q.get("level") {
        None => 0,
        Some(l) => level_rank(l).ok_or_else(|| {
            E2bError::bad_request(format!(
                "level={l:?} is not a log level (debug, info, warn, error)"
            ))
        })?,
    };
    let lines = store.e2b_logs(&b.id, offset, limit).map_err(store_err)?;
    let log_entries = lines
        .iter()
        .filter(|l| level_rank(&l.level).unwrap_or(1) >= min)
        .map(log_entry)
        .collect();
    let reason = match (&b.reason, b.status.as_str()) {
        (Some(message), dwell_store::BUILD_ERROR) => {
            let all = store.e2b_logs(&b.id, 0, i64::MAX).map_err(store_err)?;
            let tail = all.len().saturating_sub(20);
            Some(w::StatusReason {
                message: message.clone(),
                step: b.reason_step.clone(),
                log_entries: all[tail..].iter().map(log_entry).collect(),
            })
        }
        _ => None,
    };
    Ok(Json(w::BuildInfo {
        logs: Vec::new(),
        log_entries,
        template_id: t.id,
        build_id: b.id,
        status: b.status,
        reason,
    }))
}

/// `GET /templates/aliases/{alias}`: 200 when the caller's tenant has a
/// template of that name (or it is the built-in `base`), else 404.
pub async fn alias(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(alias): Path<String>,
) -> E2bResult<Json<w::AliasFound>> {
    let (name, _) = split_name(&alias);
    // The built-in base template exists for every tenant.
    if name == crate::BASE_TEMPLATE {
        return Ok(Json(w::AliasFound {
            template_id: crate::BASE_TEMPLATE.to_string(),
            public: true,
        }));
    }
    let t = st
        .ctl
        .store()
        .e2b_template(&p.tenant, name)
        .map_err(store_err)?
        .filter(|t| t.name == name)
        .ok_or_else(|| template_not_found(&alias))?;
    Ok(Json(w::AliasFound {
        template_id: t.id,
        public: false,
    }))
}

/// `GET /templates`: the caller's templates.
pub async fn list(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
) -> E2bResult<Json<Vec<w::Template>>> {
    let store = st.ctl.store();
    let mut out = Vec::new();
    for t in store.e2b_templates(&p.tenant).map_err(store_err)? {
        let builds = store.e2b_builds(&t.id).map_err(store_err)?;
        let ready = store.e2b_latest_ready(&t.id).map_err(store_err)?;
        let last = builds.last();
        out.push(w::Template {
            template_id: t.id.clone(),
            build_id: ready
                .as_ref()
                .or(last)
                .map(|b| b.id.clone())
                .unwrap_or_default(),
            cpu_count: t.cpu_count.unwrap_or(1),
            memory_mb: t.memory_mb.unwrap_or(0),
            disk_size_mb: 0,
            public: false,
            aliases: vec![t.name.clone()],
            names: vec![t.name.clone()],
            created_at: time::format_ms(t.created_at),
            updated_at: time::format_ms(t.updated_at),
            created_by: None,
            last_spawned_at: None,
            spawn_count: 0,
            build_count: builds.len() as i64,
            envd_version: crate::ENVD_VERSION.to_string(),
            build_status: last.map(|b| b.status.clone()).unwrap_or_default(),
        });
    }
    Ok(Json(out))
}

/// `DELETE /templates/{id}` of a template: its builds, logs and tags go,
/// and the images its builds made. 409 while one of its builds runs.
/// `Ok(None)` when the caller has no template `id` (it may be a snapshot).
pub async fn delete(st: &E2bState, tenant: &str, id: &str) -> E2bResult<Option<StatusCode>> {
    let store = st.ctl.store();
    let Some(t) = store.e2b_template(tenant, id).map_err(store_err)? else {
        return Ok(None);
    };
    let builds = store.e2b_builds(&t.id).map_err(store_err)?;
    if builds
        .iter()
        .any(|b| b.status == dwell_store::BUILD_BUILDING)
    {
        return Err(E2bError::conflict(format!(
            "template {id:?} has a build running; delete it once the build ends"
        )));
    }
    store
        .e2b_delete_template(tenant, &t.id)
        .map_err(store_err)?;
    for b in builds {
        if let Some(image) = b.image {
            // An image a sandbox still runs on stays (its layers are the
            // sandbox's); `dwell image rm` removes it later.
            match store.e2b_image_used_by_sandbox(&image) {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!("template {}: image {image} stays, sandboxes use it", t.id);
                    continue;
                }
                Err(e) => {
                    tracing::warn!("template {}: image {image} stays: {e}", t.id);
                    continue;
                }
            }
            if let Err(e) = st.ctl.images().remove(&image) {
                tracing::warn!("template {}: removing image {image} failed: {e}", t.id);
            }
        }
    }
    if let Err(e) = gc_files(st, tenant).await {
        tracing::warn!("tenant {tenant}: removing unused template files failed: {e}");
    }
    Ok(Some(StatusCode::NO_CONTENT))
}

/// Remove `tenant`'s uploaded files that no build of its templates uses
/// any more (those younger than an upload URL's lifetime stay: a build may
/// be about to start with them).
async fn gc_files(st: &E2bState, tenant: &str) -> Result<(), String> {
    let store = st.ctl.store();
    let mut used = std::collections::HashSet::new();
    for t in store.e2b_templates(tenant).map_err(|e| e.to_string())? {
        for b in store.e2b_builds(&t.id).map_err(|e| e.to_string())? {
            let Some(spec) = b.spec.as_deref() else {
                continue;
            };
            if let Ok(spec) = serde_json::from_str::<w::BuildStart>(spec) {
                used.extend(spec.steps.into_iter().filter_map(|s| s.files_hash));
            }
        }
    }
    let dir = files::tenant_dir(st.ctl.data_dir(), tenant);
    tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > files::UPLOAD_LIFETIME);
            if old && !used.contains(&name) {
                std::fs::remove_file(e.path()).map_err(|err| format!("{name}: {err}"))?;
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `POST /templates/tags` `{target: "name:tag", tags}`: 201; the tags now
/// name the build `target` names.
pub async fn assign_tags(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    body: Bytes,
) -> E2bResult<(StatusCode, Json<w::AssignedTags>)> {
    let req: w::AssignTags = json_body(&body, "tag assignment")?;
    let target = req.target.filter(|t| !t.is_empty()).ok_or_else(|| {
        E2bError::bad_request(
            "the request has no target: {\"target\": \"name:tag\", \"tags\": [...]}",
        )
    })?;
    let tags = req
        .tags
        .filter(|t| !t.is_empty())
        .ok_or_else(|| E2bError::bad_request("the request has no tags to assign"))?;
    for t in &tags {
        check_tag(t)?;
    }
    let (_, b) = ready_build(&st, &p.tenant, &target)?
        .ok_or_else(|| template_not_found(split_name(&target).0))?;
    st.ctl
        .store()
        .e2b_assign_tags(&b.template_id, &b.id, &tags)
        .map_err(store_err)?;
    Ok((
        StatusCode::CREATED,
        Json(w::AssignedTags {
            tags,
            build_id: b.id,
        }),
    ))
}

/// `DELETE /templates/tags` `{name, tags}`: 204.
pub async fn remove_tags(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    body: Bytes,
) -> E2bResult<StatusCode> {
    let req: w::DeleteTags = json_body(&body, "tag removal")?;
    let name = req.name.filter(|t| !t.is_empty()).ok_or_else(|| {
        E2bError::bad_request(
            "the request has no template name: {\"name\": \"...\", \"tags\": [...]}",
        )
    })?;
    let tags = req.tags.unwrap_or_default();
    let t = find(&st, &p.tenant, split_name(&name).0)?;
    st.ctl
        .store()
        .e2b_remove_tags(&t.id, &tags)
        .map_err(store_err)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /templates/{id}/tags`.
pub async fn tags(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> E2bResult<Json<Vec<w::Tag>>> {
    let t = find(&st, &p.tenant, split_name(&id).0)?;
    let tags = st.ctl.store().e2b_tags(&t.id).map_err(store_err)?;
    Ok(Json(
        tags.into_iter()
            .map(|t| w::Tag {
                tag: t.tag,
                build_id: t.build_id,
                created_at: time::format_ms(t.created_at),
            })
            .collect(),
    ))
}
