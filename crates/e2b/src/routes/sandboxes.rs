//! Create, connect (resume), pause, set the timeout of, refresh, fork,
//! inspect and kill a sandbox.
//!
//! `network.maskRequestHost` is kept with the sandbox's every-port
//! exposure: the port proxy gives its servers that `Host` (forks keep it).
//!
//! `mcp` on create is accepted and left to the SDK, which starts the
//! `mcp-gateway` of the template inside the new sandbox itself and kills
//! the sandbox when that fails; dwell keeps nothing of it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bytes::Bytes;
use dwell_api::Principal;
use dwell_control::controller::EgressChange;
use dwell_control::{CreateRequest, Mode, Sandbox, State as S};
use dwell_runtime::host::egress::Precedence;

use crate::error::{json_body, E2bError, E2bResult};
use crate::routes::template_start;
use crate::{lifetime, view, wire, E2bState};

/// `POST /v2/sandboxes`: 201 with the new sandbox.
pub async fn create(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    body: Bytes,
) -> E2bResult<(StatusCode, Json<wire::Sandbox>)> {
    let req: wire::NewSandbox = json_body(&body, "create")?;
    if req
        .mcp
        .as_ref()
        .is_some_and(|m| !m.is_null() && !m.is_object())
    {
        return Err(E2bError::bad_request(
            "`mcp` is an object of MCP server settings (the SDK's `mcp=` option); give one or leave it out",
        ));
    }
    let auto_resume = req.auto_resume.as_ref().is_some_and(|a| a.enabled);
    let action = lifetime::on_timeout(
        req.auto_pause.unwrap_or(false),
        req.auto_pause_memory,
        auto_resume,
    )?;
    if req.volume_mounts.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(E2bError::bad_request(
            "E2B volumes are not available on dwell; create the sandbox without `volume_mounts` (its own files persist across pause and connect)",
        ));
    }
    let timeout = lifetime::check(req.timeout.unwrap_or(lifetime::DEFAULT_TIMEOUT_SECS))?;
    let template = req
        .template_id
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "base".to_string());
    let mut labels = req.metadata.unwrap_or_default();
    if let Some(k) = labels.keys().find(|k| k.starts_with(view::RESERVED_PREFIX)) {
        return Err(E2bError::bad_request(format!(
            "metadata key {k:?} uses the prefix {:?}, which dwell reserves; rename it",
            view::RESERVED_PREFIX
        )));
    }
    let resolved = resolve_template(&st, &p.tenant, &template).await?;
    labels.insert(view::LABEL_TEMPLATE.into(), template);
    let net = req.network.unwrap_or_default();
    check_deny_out(net.deny_out.as_deref().unwrap_or_default())?;
    refuse_transforms(net.rules.as_ref())?;
    if net.egress_proxy.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(E2bError::bad_request(
            "an egress proxy is not available on dwell; create the sandbox without \
             `network.egressProxy`",
        ));
    }
    let public_traffic = net.allow_public_traffic.unwrap_or(true);
    let mask = net.mask_request_host.as_deref();
    if let Some(m) = mask {
        dwell_control::ports::check_host_header(m).map_err(|e| {
            E2bError::bad_request(format!(
                "network.maskRequestHost is not valid: {e} (${{PORT}} is replaced by the port \
                 a request goes to)"
            ))
        })?;
    }
    let has_rules = net.allow_out.is_some() || net.deny_out.is_some();
    // Rules imply internet access unless it is switched off explicitly.
    // Left out, a sandbox has internet as on E2B, where this host can route
    // it (IPv4 forwarding on; dwell never turns it on): asked for
    // explicitly on a host that cannot, create fails with the reason.
    let nat = match req.allow_internet_access {
        Some(on) => on,
        None => has_rules || dwell_runtime::host::network::check_forwarding().is_ok(),
    };
    let (allow_out, deny_out) = if nat && has_rules {
        (
            Some(net.allow_out.unwrap_or_default()),
            Some(net.deny_out.unwrap_or_default()),
        )
    } else {
        (None, None)
    };
    let sb = st
        .ctl
        .create(
            &p.tenant,
            CreateRequest {
                image: resolved.image,
                from: resolved.from,
                vcpus: resolved.vcpus,
                memory: resolved.memory,
                service: resolved.service,
                mode: Some(Mode::Persistent),
                env: req.env_vars.unwrap_or_default(),
                labels,
                network: nat.then_some(dwell_runtime::NetworkMode::Nat),
                allow_out,
                deny_out,
                egress_precedence: Some(Precedence::AllowWins),
                policies: Some(lifetime::create_policies(timeout, action, auto_resume)),
                ..Default::default()
            },
        )
        .await?;
    // Every port is reachable as PORT-ID.DOMAIN through the port proxy:
    // publicly, or with the traffic access token.
    if let Err(e) = st.ctl.expose_all_ports(&sb.id, public_traffic, mask) {
        let _ = st.ctl.delete(&p.tenant, &sb.id, true).await;
        return Err(e.into());
    }
    if let Some(ready) = &resolved.ready {
        if let Err(e) = template_start::wait(&st, &p.tenant, &sb.id, ready).await {
            let _ = st.ctl.delete(&p.tenant, &sb.id, true).await;
            return Err(e);
        }
    }
    Ok((StatusCode::CREATED, Json(view::sandbox(&st, &sb)?)))
}

/// What the create request `body` of `p` needs of a node, for placement
/// in a cluster; None when it does not parse or its template is not
/// found (the create, served where it arrived, then says why).
pub(crate) async fn needs_of(
    st: &E2bState,
    p: &Principal,
    body: &[u8],
) -> Option<dwell_control::cluster::placement::Needs> {
    let req: wire::NewSandbox = serde_json::from_slice(body).ok()?;
    let template = req
        .template_id
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| crate::BASE_TEMPLATE.to_string());
    let resolved = resolve_template(st, &p.tenant, &template).await.ok()?;
    let create = CreateRequest {
        image: resolved.image,
        from: resolved.from,
        vcpus: resolved.vcpus,
        memory: resolved.memory,
        service: resolved.service,
        mode: Some(Mode::Persistent),
        ..Default::default()
    };
    let ctl = st.ctl.clone();
    tokio::task::spawn_blocking(move || ctl.needs_of(&create).ok())
        .await
        .ok()
        .flatten()
}

/// A template id as what a sandbox starts from: `base` is the built-in
/// `host-user` image (the host image with E2B's account `user`), `host`
/// the plain host image;
/// otherwise one of the tenant's templates (`name`, `name:tag` or its
/// id: the image its build made, with its start and ready commands), an
/// image of that name, else a snapshot of the tenant.
async fn resolve_template(
    st: &E2bState,
    tenant: &str,
    template: &str,
) -> E2bResult<template_start::Resolved> {
    use template_start::Resolved;
    if template == "host" {
        return Ok(Resolved::default());
    }
    // E2B's base template has the account `user` as its default user.
    if template == crate::BASE_TEMPLATE {
        return Ok(Resolved {
            image: Some(dwell_storage::HOST_USER_IMAGE.to_string()),
            ..Default::default()
        });
    }
    if let Some(r) = template_start::from_template(st, tenant, template)? {
        return Ok(r);
    }
    // Template images are reached through their templates only.
    if !template.starts_with(template_start::IMAGE_PREFIX)
        && st.ctl.image_for_tenant(tenant, template).await.is_ok()
    {
        return Ok(Resolved {
            image: Some(template.to_string()),
            ..Default::default()
        });
    }
    match st.ctl.snapshot(tenant, template).await {
        Ok(m) => Ok(Resolved {
            from: Some(m.id),
            ..Default::default()
        }),
        Err(dwell_control::Error::SnapshotNotFound(_)) => Err(E2bError::new(
            404,
            format!(
                "template {template:?} is none of your templates, no dwell image and none of your snapshots; use \"base\" (the host image with the account user), a template you built with Template.build, an image from `dwell image ls`, or a snapshot id or name from Sandbox.list_snapshots()"
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// A sandbox of the caller's tenant, by id.
fn find(st: &E2bState, p: &Principal, id: &str) -> E2bResult<Sandbox> {
    let sb = st.ctl.get(&p.tenant, id)?;
    if view::e2b_state(sb.state).is_none() {
        return Err(E2bError::not_found(id));
    }
    Ok(sb)
}

/// `POST /v2/sandboxes/{id}/connect`: 200 when it runs (the timeout only
/// grows), 201 when it was paused (or stopped) and now runs again.
pub async fn connect(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> E2bResult<(StatusCode, Json<wire::Sandbox>)> {
    let req: wire::Connect = json_body(&body, "connect")?;
    let timeout = req.timeout.map(lifetime::check).transpose()?;
    let sb = find(&st, &p, &id)?;
    let (status, sb) = match sb.state {
        S::Running | S::Creating => {
            if let Some(t) = timeout {
                let end = lifetime::now_ms() + t as i64 * 1000;
                if end > view::end_ms(&sb) {
                    lifetime::set(&st.ctl, &p.tenant, &sb, t)?;
                }
            }
            (StatusCode::OK, sb)
        }
        S::Paused | S::Hibernated | S::Stopped | S::Error | S::Archived => {
            // The timeout is set first (so that an old, passed deadline
            // cannot stop the sandbox again as it comes up) and put back
            // if the sandbox does not come up: a still paused sandbox keeps
            // no new deadline.
            let t = timeout.unwrap_or(lifetime::DEFAULT_TIMEOUT_SECS);
            let before = lifetime::current(&sb);
            lifetime::set(&st.ctl, &p.tenant, &sb, t)?;
            let r = if matches!(sb.state, S::Paused | S::Hibernated) {
                st.ctl.resume(&p.tenant, &sb.id).await
            } else {
                st.ctl.start(&p.tenant, &sb.id).await
            };
            match r {
                Ok(sb) => (StatusCode::CREATED, sb),
                Err(e) => {
                    if let Err(re) = st.ctl.update_policies(&p.tenant, &sb.id, &before) {
                        tracing::warn!("sandbox {}: restoring its timeout failed: {re}", sb.id);
                    }
                    return Err(e.into());
                }
            }
        }
        S::Deleted => return Err(E2bError::not_found(&id)),
    };
    Ok((status, Json(view::sandbox(&st, &sb)?)))
}

/// `POST /sandboxes/{id}/pause`: 204; 409 when already paused; 503 with
/// `Retry-After` while it is still being created. Processes
/// are frozen with their memory (cgroup freezer); files stay on the
/// sandbox's volume. A paused sandbox has no timeout.
pub async fn pause(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> E2bResult<StatusCode> {
    // `{"memory": false}`: keep the files only (E2B's filesystem-only
    // pause): the sandbox is stopped, and connect boots it again.
    let keep_memory = json_body::<wire::Pause>(&body, "pause")?
        .memory
        .unwrap_or(true);
    let sb = find(&st, &p, &id)?;
    match sb.state {
        S::Running => {}
        S::Paused | S::Hibernated | S::Stopped | S::Error | S::Archived => {
            return Err(E2bError::conflict(format!(
                "sandbox {id} is already paused; resume it with Sandbox.connect({id:?})"
            )))
        }
        // The SDK reads any 409 as "already paused": a sandbox on its way
        // up answers 503, which it retries.
        s => {
            return Err(E2bError::retry_later(
                1,
                format!("sandbox {id} is {}; pause it once it runs", s.as_str()),
            ))
        }
    }
    let before = lifetime::clear(&st.ctl, &p.tenant, &sb)?;
    let r = if keep_memory {
        st.ctl.pause(&p.tenant, &sb.id).await
    } else {
        st.ctl.stop(&p.tenant, &sb.id).await
    };
    if let Err(e) = r {
        let _ = st.ctl.update_policies(&p.tenant, &sb.id, &before);
        return Err(e.into());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/timeout`: the sandbox times out `timeout` seconds
/// from now (longer or shorter than before).
pub async fn set_timeout(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> E2bResult<StatusCode> {
    let req: wire::Timeout = json_body(&body, "timeout")?;
    let t = lifetime::check_new(req.timeout.ok_or_else(|| {
        E2bError::bad_request("the body needs the new timeout: {\"timeout\": SECONDS}")
    })?)?;
    let sb = find(&st, &p, &id)?;
    if !matches!(sb.state, S::Running | S::Creating) {
        return Err(E2bError::conflict(format!(
            "sandbox {id} is paused and has no timeout; give it one when you resume it with Sandbox.connect({id:?}, timeout={t})"
        )));
    }
    lifetime::set(&st.ctl, &p.tenant, &sb, t)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The longest `POST /sandboxes/{id}/refreshes` (seconds), as on E2B.
pub const MAX_REFRESH_SECS: u64 = 3600;

/// `POST /sandboxes/{id}/refreshes`: keep a running sandbox alive for
/// `duration` more seconds from now; a later timeout stays (204).
pub async fn refresh(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> E2bResult<StatusCode> {
    let req: wire::Refresh = json_body(&body, "refresh")?;
    let d = req.duration.ok_or_else(|| {
        E2bError::bad_request("the body needs how long to keep it alive: {\"duration\": SECONDS}")
    })?;
    if d > MAX_REFRESH_SECS {
        return Err(E2bError::bad_request(format!(
            "duration {d} is out of range; give 0 to {MAX_REFRESH_SECS} seconds (set_timeout sets longer ones)"
        )));
    }
    let sb = find(&st, &p, &id)?;
    if !matches!(sb.state, S::Running | S::Creating) {
        return Err(E2bError::conflict(format!(
            "sandbox {id} is paused and has no timeout; resume it with Sandbox.connect({id:?})"
        )));
    }
    if lifetime::now_ms() + d as i64 * 1000 > view::end_ms(&sb) {
        lifetime::set(&st.ctl, &p.tenant, &sb, d)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The most forks one request makes.
pub const MAX_FORKS: u64 = 20;

/// `POST /sandboxes/{id}/fork`: `count` new sandboxes that start from this
/// one (dwell's fork: a warm copy where the runtime saves memory, else a
/// cold copy of its files), each with the source's metadata, template and
/// timeout behaviour and its own `timeout`; 201 with one result per fork,
/// the sandbox or why it failed (a failed one leaves nothing).
pub async fn fork(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> E2bResult<(StatusCode, Json<Vec<wire::ForkResult>>)> {
    let req: wire::Fork = json_body(&body, "fork")?;
    let count = req.count.unwrap_or(1);
    if count == 0 || count > MAX_FORKS {
        return Err(E2bError::bad_request(format!(
            "count {count} is out of range; give 1 to {MAX_FORKS} forks"
        )));
    }
    let timeout = lifetime::check(req.timeout.unwrap_or(lifetime::DEFAULT_TIMEOUT_SECS))?;
    let src = find(&st, &p, &id)?;
    let all_ports = st.ctl.all_ports_exposure(&src.id)?;
    let public_traffic = all_ports.as_ref().is_none_or(|e| e.public);
    let mask = all_ports.and_then(|e| e.host_header);
    let copy = CreateRequest {
        mode: Some(Mode::Persistent),
        env: src.spec.env.clone(),
        labels: src.spec.labels.clone(),
        policies: Some(lifetime::create_policies(
            timeout,
            lifetime::effective_action(&src),
            src.spec.policies.auto_resume.unwrap_or(false),
        )),
        ..Default::default()
    };
    // In a task of its own: a client that goes away midway must not cut a
    // fork short (a half-made fork, a snapshot not deleted, a source left
    // hibernated). What it makes then times out as asked.
    let (ctl, tenant, src_id) = (st.ctl.clone(), p.tenant.clone(), src.id.clone());
    let forks = tokio::spawn(async move {
        let forks = ctl.fork(&tenant, &src_id, count as usize, &copy).await?;
        let mut out = Vec::with_capacity(forks.len());
        for f in forks {
            out.push(match f {
                Ok(sb) => match ctl.expose_all_ports(&sb.id, public_traffic, mask.as_deref()) {
                    Ok(()) => Ok(sb),
                    Err(e) => {
                        let _ = ctl.delete(&tenant, &sb.id, true).await;
                        Err(e)
                    }
                },
                Err(e) => Err(e),
            });
        }
        Ok::<_, dwell_control::Error>(out)
    })
    .await
    .map_err(|e| E2bError::new(500, format!("the fork failed: {e}")))??;
    let mut out = Vec::with_capacity(forks.len());
    for f in forks {
        let made = f
            .map_err(E2bError::from)
            .and_then(|sb| view::sandbox(&st, &sb).map_err(E2bError::from));
        out.push(match made {
            Ok(sb) => wire::ForkResult {
                sandbox: Some(sb),
                error: None,
            },
            Err(e) => wire::ForkResult {
                sandbox: None,
                error: Some(wire::ErrorBody {
                    code: e.status.as_u16(),
                    message: e.message,
                }),
            },
        });
    }
    Ok((StatusCode::CREATED, Json(out)))
}

/// Per-host request transforms (`network.rules`) are not available.
fn refuse_transforms(rules: Option<&serde_json::Value>) -> E2bResult<()> {
    let empty = match rules {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Object(m)) => m.is_empty(),
        Some(_) => false,
    };
    if empty {
        return Ok(());
    }
    Err(E2bError::bad_request(
        "per-host request transforms (`network.rules`) are not available on dwell; list the \
         hosts in allowOut without rules",
    ))
}

/// E2B takes only addresses and CIDR blocks in `denyOut`.
fn check_deny_out(deny: &[String]) -> E2bResult<()> {
    for d in deny {
        if let Ok(dwell_runtime::host::egress::Entry::Domain(_)) =
            dwell_runtime::host::egress::parse_entry("denyOut", d)
        {
            return Err(E2bError::bad_request(format!(
                "denyOut entry {d:?} is a domain name; denyOut takes IP addresses and CIDR blocks \
                 only (deny everything with \"0.0.0.0/0\" and list the allowed domains in allowOut)"
            )));
        }
    }
    Ok(())
}

/// `PUT /sandboxes/{id}/network`: replace the egress rules of a running
/// sandbox (allow wins over deny); 204. The sandbox keeps running.
pub async fn update_network(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> E2bResult<StatusCode> {
    let req: wire::NetworkUpdate = json_body(&body, "network update")?;
    let sb = find(&st, &p, &id)?;
    let mut deny = req.deny_out.unwrap_or_default();
    check_deny_out(&deny)?;
    refuse_transforms(req.rules.as_ref())?;
    if req.allow_internet_access == Some(false) && !deny.iter().any(|d| d.trim() == "0.0.0.0/0") {
        deny.push("0.0.0.0/0".into());
    }
    let change = EgressChange {
        allow: Some(req.allow_out.unwrap_or_default()),
        deny: Some(deny),
        precedence: Some(Precedence::AllowWins),
    };
    st.ctl.update_egress(&p.tenant, &sb.id, &change).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /sandboxes/{id}`: 204, or 404 when there is no such sandbox.
pub async fn kill(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> E2bResult<StatusCode> {
    let sb = find(&st, &p, &id)?;
    st.ctl.delete(&p.tenant, &sb.id, true).await?;
    st.cpu_samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&sb.id);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /sandboxes/{id}`: the sandbox's details.
pub async fn get_one(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> E2bResult<Json<wire::Listed>> {
    let sb = find(&st, &p, &id)?;
    let state = view::e2b_state(sb.state).ok_or_else(|| E2bError::not_found(&id))?;
    Ok(Json(view::detail(&st, &sb, state)?))
}
