//! `dwell service start|stop|restart|status` and the service flags of
//! `create`: the sandbox's supervised start command.

use anyhow::{bail, Result};
use dwell_contract::service::{
    HealthCheckSpec, HealthState, ServiceAction, ServiceArgs, ServiceControlBody, ServiceState,
    ServiceStatus,
};

use crate::cli::{ServiceCommand, ServiceFlags};
use crate::client::{enc, Client};
use crate::output;

fn millis(flag: &str, s: &Option<String>) -> Result<Option<u64>> {
    match s {
        None => Ok(None),
        Some(t) => match humantime::parse_duration(t.trim()) {
            Ok(d) => Ok(Some(d.as_millis() as u64)),
            Err(_) => bail!("--{flag} {t:?} is not a duration; use e.g. 500ms, 10s, 1m"),
        },
    }
}

/// The `service` part of a create request, from the flags and the words
/// after `--`; `None` when no flag was given.
pub fn args(f: &ServiceFlags, trailing: &[String]) -> Result<Option<ServiceArgs>> {
    let entrypoint = match &f.entrypoint {
        Some(e) => Some(split("entrypoint", e)?),
        None => None,
    };
    let cmd = match (&f.cmd, trailing.is_empty()) {
        (Some(_), false) => bail!("give the command either with --cmd or after --, not both"),
        (Some(c), true) => Some(split("cmd", c)?),
        (None, false) => Some(trailing.to_vec()),
        (None, true) => None,
    };
    let no_healthcheck = f.health_cmd.as_deref() == Some("none");
    let tuned = f.health_interval.is_some()
        || f.health_timeout.is_some()
        || f.health_retries.is_some()
        || f.health_start_period.is_some();
    let healthcheck = match &f.health_cmd {
        Some(c) if c != "none" => Some(HealthCheckSpec {
            test: vec!["CMD-SHELL".into(), c.clone()],
            interval_ms: millis("health-interval", &f.health_interval)?,
            timeout_ms: millis("health-timeout", &f.health_timeout)?,
            start_period_ms: millis("health-start-period", &f.health_start_period)?,
            retries: f.health_retries,
        }),
        _ if tuned => bail!("--health-interval/--health-timeout/--health-retries/--health-start-period tune a check given with --health-cmd"),
        _ => None,
    };
    let a = ServiceArgs {
        entrypoint,
        cmd,
        disabled: f.no_service,
        restart: f.restart.clone(),
        healthcheck,
        no_healthcheck,
        stop_signal: f.stop_signal.clone(),
        stop_timeout_ms: millis("stop-timeout", &f.stop_timeout)?,
    };
    Ok(Some(a).filter(|a| a != &ServiceArgs::default()))
}

fn split(flag: &str, s: &str) -> Result<Vec<String>> {
    match shlex::split(s) {
        Some(v) => Ok(v),
        None => bail!("--{flag} {s:?} has an unterminated quote or a trailing backslash"),
    }
}

pub async fn run(c: &Client, cmd: ServiceCommand) -> Result<i32> {
    let (a, action) = match cmd {
        ServiceCommand::Start(a) => (a, Some(ServiceAction::Start)),
        ServiceCommand::Stop(a) => (a, Some(ServiceAction::Stop)),
        ServiceCommand::Restart(a) => (a, Some(ServiceAction::Restart)),
        ServiceCommand::Status(a) => (a, None),
    };
    let path = format!("/v1/sandboxes/{}/service", enc(&a.sandbox));
    let st: ServiceStatus = match action {
        Some(action) => c.post(&path, &ServiceControlBody { action }).await?,
        None => c.get(&path).await?,
    };
    if a.json {
        output::json(&st)?;
    } else {
        print_status(&st);
    }
    Ok(0)
}

fn state_name(s: ServiceState) -> &'static str {
    match s {
        ServiceState::Running => "running",
        ServiceState::Exited => "exited",
        ServiceState::BackingOff => "backing-off",
        ServiceState::Stopped => "stopped",
        ServiceState::Unknown => "unknown",
    }
}

/// One line: state, pid, restarts, last exit, health.
pub fn summary(st: &ServiceStatus) -> String {
    let mut s = state_name(st.state).to_string();
    if let Some(pid) = st.pid {
        s.push_str(&format!(" (pid {pid})"));
    }
    s.push_str(&format!(", {} restarts", st.restarts));
    if let Some(e) = &st.last_exit {
        match (e.code, e.signal) {
            (Some(c), _) => s.push_str(&format!(", last exit code {c}")),
            (None, Some(sig)) => s.push_str(&format!(", last killed by signal {sig}")),
            _ => {}
        }
    }
    if let Some(at) = st.next_start_at_ms {
        s.push_str(&format!(", starts again at {}", output::time(at as i64)));
    }
    if let Some(h) = st.health {
        let name = match h {
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Unknown => "unknown",
        };
        s.push_str(&format!(", health {name}"));
        if st.health_failures > 0 {
            s.push_str(&format!(" ({} failed checks in a row)", st.health_failures));
        }
    }
    if let Some(e) = &st.error {
        s.push_str(&format!("; last start failed: {e}"));
    }
    s
}

fn print_status(st: &ServiceStatus) {
    println!("service:     {}", summary(st));
    if let Some(at) = st.started_at_ms {
        println!("started:     {}", output::time(at as i64));
    }
    for e in st.events.iter().rev().take(10).rev() {
        println!(
            "event:       {}  {:<10}  {}",
            output::time(e.at_ms as i64),
            e.kind,
            e.message
        );
    }
}
