//! Running a template build: `POST /v2/templates/{id}/builds/{build}`
//! takes the step list, checks it (400 with the step named), and starts
//! the build in the background with `dwell build` ([`Controller::build`]):
//! the uploaded files are unpacked into a context directory, the steps
//! become a Dockerfile ([`crate::translate`]), the build's events become
//! the build's log lines, and the result is an image named
//! `e2b-<template>:<build>` that the build's tags then name.
//!
//! [`Controller::build`]: dwell_control::Controller::build

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use bytes::Bytes;
use dwell_api::Principal;
use dwell_control::build::{BuildEvent, BuildRequest, Stream};
use dwell_store::{E2bBuild, E2bTemplate};

use crate::error::{json_body, E2bError, E2bResult};
use crate::routes::templates::{find, ready_build, template_not_found};
use crate::template_files as files;
use crate::template_wire as w;
use crate::translate::{self, Base, Plan};
use crate::E2bState;

/// The most log lines a build keeps (later output is dropped, said once).
pub const MAX_LOG_LINES: i64 = 10_000;
/// The longest log line kept (longer ones are cut).
pub const MAX_LOG_LINE: usize = 4096;

/// The image a build makes.
pub fn image_name(template_id: &str, build_id: &str) -> String {
    format!("e2b-{template_id}:{build_id}")
}

/// `POST /v2/templates/{id}/builds/{build}`: 202 once the build runs.
pub async fn start(
    State(st): State<E2bState>,
    Extension(p): Extension<Principal>,
    Path((id, build)): Path<(String, String)>,
    body: Bytes,
) -> E2bResult<StatusCode> {
    let spec: w::BuildStart = json_body(&body, "template build")?;
    let t = find(&st, &p.tenant, &id)?;
    let store = st.ctl.store();
    let b = store
        .e2b_build(&t.id, &build)
        .map_err(|e| E2bError::new(500, e.to_string()))?
        .ok_or_else(|| {
            E2bError::new(
                404,
                format!("template {id:?} has no build {build:?}; ask for one with Template.build"),
            )
        })?;
    if b.status != dwell_store::BUILD_WAITING {
        return Err(E2bError::conflict(format!(
            "build {build} of template {id:?} is {} already; ask for a new build with Template.build",
            b.status
        )));
    }
    let (base, pull, setup) = match translate::base_of(&spec).map_err(E2bError::bad_request)? {
        Base::Image(i) => {
            let pull = !dwell_storage::is_builtin(&i);
            let setup = translate::Setup::for_base(&i, None, false);
            (i, pull, setup)
        }
        Base::Template(name) => {
            let (_, from) =
                ready_build(&st, &p.tenant, &name)?.ok_or_else(|| template_not_found(&name))?;
            let image = from.image.unwrap_or_default();
            // Steps start as the user that template's image ends with.
            let ctl = st.ctl.clone();
            let key = image.clone();
            let user = tokio::task::spawn_blocking(move || ctl.images().lookup(&key))
                .await
                .map_err(|e| E2bError::new(500, e.to_string()))?
                .map_err(|e| E2bError::new(500, e.to_string()))?
                .and_then(|img| img.user);
            let setup = translate::Setup::for_base(&image, user.as_deref(), true);
            (image, false, setup)
        }
    };
    let plan = translate::plan(&spec, &base, &setup).map_err(E2bError::bad_request)?;
    for hash in &plan.files {
        if !files::upload_path(st.ctl.data_dir(), &p.tenant, hash).is_file() {
            return Err(E2bError::bad_request(format!(
                "the files of hash {hash} were not uploaded; upload them to the URL from GET /templates/{id}/files/{hash} first (the SDK does this in Template.build)"
            )));
        }
    }
    let spec_json = serde_json::to_string(&spec).map_err(|e| E2bError::new(500, e.to_string()))?;
    if !store
        .e2b_start_build(&b.id, &spec_json)
        .map_err(|e| E2bError::new(500, e.to_string()))?
    {
        return Err(E2bError::conflict(format!(
            "build {build} of template {id:?} was started already"
        )));
    }
    tokio::spawn(run(st.clone(), p.tenant.clone(), t, b, plan, base, pull));
    Ok(StatusCode::ACCEPTED)
}

/// Writes a build's log lines (at most [`MAX_LOG_LINES`]).
struct Log<'a> {
    st: &'a E2bState,
    build: String,
    lines: i64,
}

impl Log<'_> {
    fn line(&mut self, level: &str, step: Option<&str>, message: &str) {
        if self.lines > MAX_LOG_LINES {
            return;
        }
        self.lines += 1;
        let cut;
        let message = if self.lines > MAX_LOG_LINES {
            "(the build's log is full; later lines are left out)"
        } else if message.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            cut = format!("{}…", &message[..end]);
            &cut
        } else {
            message
        };
        if let Err(e) = self
            .st
            .ctl
            .store()
            .e2b_log(&self.build, level, step, message)
        {
            tracing::warn!("build {}: cannot keep a log line: {e}", self.build);
        }
    }
}

/// Run a started build to its end: ready with its image, or failed with
/// the reason and step.
async fn run(
    st: E2bState,
    tenant: String,
    t: E2bTemplate,
    b: E2bBuild,
    plan: Plan,
    base: String,
    pull: bool,
) {
    let mut log = Log {
        st: &st,
        build: b.id.clone(),
        lines: 0,
    };
    log.line(
        "info",
        Some(translate::BASE_STEP),
        &format!("Building template {} (build {}) from {base}", t.name, b.id),
    );
    let image = image_name(&t.id, &b.id);
    let result = match pull_base(&st, &tenant, &base, pull, &mut log).await {
        Ok(()) => build(&st, &tenant, &b, &plan, &image, &mut log).await,
        Err(e) => Err(e),
    };
    let store = st.ctl.store();
    let ended = match result {
        Ok(()) => {
            log.line(
                "info",
                Some(translate::FINALIZE_STEP),
                &format!("Template {} is ready (build {})", t.name, b.id),
            );
            store.e2b_build_ready(&t.id, &b.id, &image)
        }
        Err((message, step)) => {
            log.line("error", step.as_deref(), &message);
            store.e2b_build_failed(&b.id, &message, step.as_deref())
        }
    };
    if let Err(e) = ended {
        tracing::error!(
            "build {} of template {}: cannot record its end: {e}",
            b.id,
            t.id
        );
    }
    let dir = files::context_dir(st.ctl.data_dir(), &b.id);
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove the build context {}: {e}", dir.display());
        }
    }
}

/// Pull the base image from its registry unless the tenant has it.
async fn pull_base(
    st: &E2bState,
    tenant: &str,
    base: &str,
    pull: bool,
    log: &mut Log<'_>,
) -> Result<(), (String, Option<String>)> {
    if !pull {
        return Ok(());
    }
    let step = Some(translate::BASE_STEP.to_string());
    match st.ctl.image_for_tenant(tenant, base).await {
        Ok(_) => return Ok(()),
        Err(dwell_control::Error::Storage(dwell_storage::StorageError::ImageNotFound(_))) => {}
        Err(e) => return Err((e.to_string(), step)),
    }
    log.line("info", step.as_deref(), &format!("Pulling {base}"));
    match st.ctl.pull_image(tenant, base, None).await {
        Ok(img) => {
            log.line(
                "info",
                step.as_deref(),
                &format!(
                    "Pulled {base} ({})",
                    img.digest.as_deref().unwrap_or(&img.id)
                ),
            );
            Ok(())
        }
        Err(e) => Err((format!("cannot pull the base image {base}: {e}"), step)),
    }
}

/// Unpack the files and run the build; `Err((message, step))`.
async fn build(
    st: &E2bState,
    tenant: &str,
    b: &E2bBuild,
    plan: &Plan,
    image: &str,
    log: &mut Log<'_>,
) -> Result<(), (String, Option<String>)> {
    let (data_dir, tenant_s, build_id, hashes) = (
        st.ctl.data_dir().to_path_buf(),
        tenant.to_string(),
        b.id.clone(),
        plan.files.clone(),
    );
    let context = tokio::task::spawn_blocking(move || {
        files::prepare_context(&data_dir, &tenant_s, &build_id, &hashes)
    })
    .await
    .map_err(|e| (format!("unpacking the files failed: {e}"), None))?
    .map_err(|e| (e, Some(translate::BASE_STEP.to_string())))?;
    // RUN steps reach the internet, as on E2B (pip, apt, npm), when this
    // host can give sandboxes NAT; else they run without a network and
    // the log says why.
    let network = match dwell_runtime::host::network::check_forwarding() {
        Ok(()) => dwell_runtime::NetworkMode::Nat,
        Err(e) => {
            log.line(
                "warn",
                Some(translate::BASE_STEP),
                &format!("RUN steps have no internet access on this server: {e}"),
            );
            dwell_runtime::NetworkMode::None
        }
    };
    let req = BuildRequest {
        dockerfile: plan.dockerfile.clone(),
        context_dir: context,
        tags: vec![image.to_string()],
        no_cache: plan.no_cache,
        network: Some(network),
        ..Default::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let ctl = st.ctl.clone();
    let tenant_s = tenant.to_string();
    let mut task = tokio::spawn(async move { ctl.build(&tenant_s, req, tx).await });
    let label = |index: usize| -> String {
        index
            .checked_sub(1)
            .and_then(|i| plan.step_of.get(i))
            .cloned()
            .unwrap_or_else(|| translate::FINALIZE_STEP.to_string())
    };
    let mut partial: HashMap<(usize, bool), String> = HashMap::new();
    let mut on_event = |ev: BuildEvent, log: &mut Log<'_>| match ev {
        BuildEvent::Step { index, count, text } => {
            log.line(
                "info",
                Some(&label(index)),
                &format!("[{index}/{count}] {text}"),
            );
        }
        BuildEvent::Cached { index } => {
            log.line("info", Some(&label(index)), "CACHED");
        }
        BuildEvent::Output {
            index,
            stream,
            text,
        } => {
            let key = (index, matches!(stream, Stream::Stderr));
            let buf = partial.entry(key).or_default();
            buf.push_str(&text);
            while let Some(nl) = buf.find('\n') {
                let line: String = buf.drain(..=nl).collect();
                log.line(
                    "info",
                    Some(&label(index)),
                    line.trim_end_matches(['\n', '\r']),
                );
            }
            if buf.len() > MAX_LOG_LINE {
                let line = std::mem::take(buf);
                log.line("info", Some(&label(index)), &line);
            }
        }
        BuildEvent::Warning { index, message } => {
            log.line("warn", Some(&label(index)), &message);
        }
        BuildEvent::StepDone { index, .. } => {
            for ((i, _), rest) in partial.iter_mut() {
                if *i == index && !rest.is_empty() {
                    let line = std::mem::take(rest);
                    log.line("info", Some(&label(index)), &line);
                }
            }
        }
        BuildEvent::Error { .. } | BuildEvent::Done { .. } => {}
    };
    let result = loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => on_event(ev, log),
                None => break (&mut task).await,
            },
            r = &mut task => {
                while let Ok(ev) = rx.try_recv() {
                    on_event(ev, log);
                }
                break r;
            }
        }
    };
    for (_, rest) in partial.drain() {
        if !rest.is_empty() {
            log.line("info", None, &rest);
        }
    }
    match result {
        Ok(Ok(out)) => {
            log.line(
                "info",
                Some(translate::FINALIZE_STEP),
                &format!(
                    "Built {} ({} steps, {} from the cache)",
                    out.digest, out.steps, out.cached
                ),
            );
            Ok(())
        }
        Ok(Err(dwell_control::Error::BuildFailed {
            step,
            exit_code,
            message,
            ..
        })) => {
            let message = match exit_code {
                Some(c) if !message.contains(&format!("code {c}")) => {
                    format!("{message} (exit code {c})")
                }
                _ => message,
            };
            let message = match plan.run_users.get(&step) {
                // E2B's wording for a run_cmd(user=) whose user the image
                // lacks (the SDK's users match on it), then dwell's.
                Some((cmd, user)) if message.contains("does not exist") => format!(
                    "failed to run command '{cmd}': command failed: unauthenticated: invalid username: '{user}' ({message})"
                ),
                _ => message,
            };
            Err((message, Some(label(step.max(1)))))
        }
        Ok(Err(e)) => Err((e.to_string(), None)),
        Err(e) => Err((format!("the build task failed: {e}"), None)),
    }
}
