//! A sandbox from a template (`Sandbox.create("name[:tag]")`): the image
//! its build made, the template's CPU and memory, and its start command as
//! the sandbox's service (`/bin/sh -c START`, not restarted, as E2B runs it
//! once). With a ready command the service gets it as its health check,
//! and the create answers once the check passed (the command exited 0),
//! as E2B's does, or fails after [`READY_TIMEOUT`] (the sandbox is then
//! deleted). A template without a start command starts no service, even
//! when its base image has a start command; its ready command, if any, is
//! run until it exits 0 before the create answers.

use std::time::{Duration, Instant};

use dwell_control::model::{ServiceArgs, SizeArg};
use dwell_proto::{HealthCheckSpec, HealthState, ServiceState};

use crate::error::{E2bError, E2bResult};
use crate::routes::templates::ready_build;
use crate::template_wire::BuildStart;
use crate::E2bState;

/// How long a create waits for the ready command to succeed.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the ready command runs until it succeeds.
pub const READY_INTERVAL_MS: u64 = 500;
/// The names of the images template builds make start with this.
pub const IMAGE_PREFIX: &str = "e2b-";

/// What a sandbox starts from.
#[derive(Debug, Default)]
pub struct Resolved {
    pub image: Option<String>,
    pub from: Option<String>,
    pub vcpus: Option<f64>,
    pub memory: Option<SizeArg>,
    pub service: Option<ServiceArgs>,
    pub ready: Option<Ready>,
}

/// What a create waits for before it answers.
#[derive(Debug)]
pub enum Ready {
    /// The service's health check (this ready command) passed.
    Service(String),
    /// This ready command (of a template without a start command) exited 0.
    Command(String),
}

/// Wait for `ready` in sandbox `id`.
pub async fn wait(st: &E2bState, tenant: &str, id: &str, ready: &Ready) -> E2bResult<()> {
    match ready {
        Ready::Service(c) => wait_ready(st, tenant, id, c).await,
        Ready::Command(c) => poll_command(st, tenant, id, c).await,
    }
}

/// Run `cmd` in the sandbox until it exits 0 (each run at most 30 s).
async fn poll_command(st: &E2bState, tenant: &str, id: &str, cmd: &str) -> E2bResult<()> {
    let t0 = Instant::now();
    loop {
        let (_, agent) = st.ctl.agent(tenant, id).await?;
        let req = dwell_proto::ExecRequest {
            shell: Some(cmd.to_string()),
            timeout_ms: Some(30_000),
            ..Default::default()
        };
        let ok = match agent.exec(req).await {
            Ok(stream) => stream
                .output(64 << 10)
                .await
                .is_ok_and(|o| o.status.code == Some(0)),
            Err(_) => false,
        };
        if ok {
            return Ok(());
        }
        if t0.elapsed() > READY_TIMEOUT {
            return Err(E2bError::new(
                500,
                format!(
                    "the template's ready command {cmd:?} did not succeed within {} s; fix set_ready_cmd and build the template again",
                    READY_TIMEOUT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(READY_INTERVAL_MS)).await;
    }
}

/// `template` as one of `tenant`'s templates; `Ok(None)` when it is none.
pub fn from_template(st: &E2bState, tenant: &str, template: &str) -> E2bResult<Option<Resolved>> {
    let Some((t, b)) = ready_build(st, tenant, template)? else {
        return Ok(None);
    };
    let spec: BuildStart = b
        .spec
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| E2bError::new(500, format!("the stored build {} is unreadable: {e}", b.id)))?
        .unwrap_or_default();
    let start = spec.start_cmd.filter(|c| !c.trim().is_empty());
    let ready = spec.ready_cmd.filter(|c| !c.trim().is_empty());
    let service = match &start {
        None => ServiceArgs {
            disabled: true,
            ..Default::default()
        },
        Some(cmd) => ServiceArgs {
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), cmd.clone()]),
            cmd: Some(Vec::new()),
            restart: Some("no".into()),
            healthcheck: ready.as_ref().map(|r| HealthCheckSpec {
                test: vec!["CMD-SHELL".into(), r.clone()],
                interval_ms: Some(READY_INTERVAL_MS),
                timeout_ms: Some(30_000),
                start_period_ms: None,
                retries: Some(3),
            }),
            no_healthcheck: ready.is_none(),
            ..Default::default()
        },
    };
    Ok(Some(Resolved {
        image: b.image,
        from: None,
        vcpus: t.cpu_count.map(|c| c as f64),
        memory: t
            .memory_mb
            .map(|m| SizeArg::Bytes((m as u64).saturating_mul(1 << 20))),
        ready: match (&start, ready) {
            (_, None) => None,
            (Some(_), Some(r)) => Some(Ready::Service(r)),
            (None, Some(r)) => Some(Ready::Command(r)),
        },
        service: Some(service),
    }))
}

/// Wait until the sandbox's service reports healthy (its ready command
/// exited 0); an error names what went wrong.
pub async fn wait_ready(st: &E2bState, tenant: &str, id: &str, ready: &str) -> E2bResult<()> {
    let t0 = Instant::now();
    loop {
        let status = st.ctl.service_status(tenant, id).await?;
        if let Some(s) = &status {
            if s.health == Some(HealthState::Healthy) {
                return Ok(());
            }
            if matches!(s.state, ServiceState::Exited | ServiceState::Stopped) {
                let how = s
                    .last_exit
                    .as_ref()
                    .map(|e| format!(" ({e:?})"))
                    .or_else(|| s.error.as_ref().map(|e| format!(" ({e})")))
                    .unwrap_or_default();
                return Err(E2bError::new(
                    500,
                    format!("the template's start command ended{how} before its ready command {ready:?} succeeded; fix set_start_cmd and build the template again"),
                ));
            }
        }
        if t0.elapsed() > READY_TIMEOUT {
            return Err(E2bError::new(
                500,
                format!(
                    "the template's ready command {ready:?} did not succeed within {} s; fix set_ready_cmd (or the start command) and build the template again",
                    READY_TIMEOUT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
