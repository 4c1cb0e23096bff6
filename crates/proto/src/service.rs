//! The sandbox's service: a long-running command the agent supervises
//! (an image's entrypoint + cmd, such as a database), with a restart
//! policy, a bounded log and an optional health check. The daemon sends
//! the definition with `service_set` after every start of the sandbox
//! (idempotently: the same definition again changes nothing); the agent
//! keeps its state through pause/resume and checkpoint/restore.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::messages::ExitStatus;

/// When the agent starts the service again after it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Never: an exit leaves it exited.
    #[default]
    No,
    /// After an exit with a non-zero code or by a signal (and after a
    /// failure to start), up to `max_retries` times when set.
    OnFailure,
    /// After every exit, 0 included, until stopped.
    Always,
}

impl RestartPolicy {
    /// The snake_case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

/// A health check the agent runs on an interval while the service runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckSpec {
    /// `["CMD", program, arg...]` (run directly) or `["CMD-SHELL",
    /// "command line"]` (run with `/bin/sh -c`), as Docker states them.
    pub test: Vec<String>,
    /// Time between checks; default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// A check running longer fails (and is killed); default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Failures during this time after a start do not count; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period_ms: Option<u64>,
    /// Consecutive failures that make it unhealthy; default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// Defaults of a health check.
pub const HEALTH_INTERVAL_MS: u64 = 30_000;
pub const HEALTH_TIMEOUT_MS: u64 = 30_000;
pub const HEALTH_RETRIES: u32 = 3;
/// Default grace between the stop signal and SIGKILL.
pub const STOP_TIMEOUT_MS: u64 = 10_000;

impl HealthCheckSpec {
    /// The argv the check runs, or why the test is not a valid one.
    pub fn command_line(&self) -> Result<Vec<String>, String> {
        match self.test.split_first() {
            Some((k, rest)) if k == "CMD" && !rest.is_empty() => Ok(rest.to_vec()),
            Some((k, [cmd])) if k == "CMD-SHELL" => {
                Ok(vec!["/bin/sh".into(), "-c".into(), cmd.clone()])
            }
            _ => Err(format!(
                "health check test {:?} is not [\"CMD\", program, args...] or [\"CMD-SHELL\", \"command\"]",
                self.test
            )),
        }
    }
}

/// What the agent runs as the service, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Program and arguments (the image's entrypoint + cmd, resolved);
    /// the program is looked up in `PATH`.
    pub command: Vec<String>,
    /// Variables added to the sandbox's environment (which already holds
    /// the image's and the create request's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory; default the sandbox's (the image's WORKDIR, else `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// User name or `uid[:gid]`; default the sandbox's (the image's USER, else root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// With `on-failure`: give up after this many restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheckSpec>,
    /// Signal number that asks it to stop; default SIGTERM (15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<i32>,
    /// Grace after the stop signal before SIGKILL; default 10 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_ms: Option<u64>,
}

impl ServiceSpec {
    /// Why the definition cannot run, if it cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err("the service command is empty".into());
        }
        if let Some(s) = self.stop_signal {
            if !(1..=64).contains(&s) {
                return Err(format!("stop signal {s} is not a signal number (1-64)"));
            }
        }
        if let Some(h) = &self.healthcheck {
            h.command_line()?;
            if h.interval_ms == Some(0) {
                return Err("the health check interval must be more than 0".into());
            }
        }
        Ok(())
    }
}

/// Where the service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Its process runs.
    Running,
    /// It ended and the restart policy does not start it again.
    Exited,
    /// It ended; it starts again when its backoff delay is over.
    BackingOff,
    /// Stopped on request (`service_control stop`); started on request.
    Stopped,
    #[serde(other)]
    Unknown,
}

impl ServiceState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ServiceState::Running => "running",
            ServiceState::Exited => "exited",
            ServiceState::BackingOff => "backing-off",
            ServiceState::Stopped => "stopped",
            ServiceState::Unknown => "unknown",
        }
    }
}

/// Health of a service with a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// No verdict yet (within the start period, or fewer failures than retries).
    Starting,
    Healthy,
    Unhealthy,
    #[serde(other)]
    Unknown,
}

impl HealthState {
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Unknown => "unknown",
        }
    }
}

/// One thing that happened to the service (the agent keeps the last 64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEvent {
    /// Increases by one per event over the agent's life.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// `started`, `exited`, `restarting`, `stopped`, `failed` (could not
    /// start), `gave_up` (on-failure retries used up), `health` (a change).
    pub kind: String,
    pub message: String,
}

/// The service's state as `service_status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub state: ServiceState,
    /// Pid of the running process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Times the agent started it again after an exit.
    pub restarts: u32,
    /// When the current (or last) process started, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// How the last process ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ExitStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_at_ms: Option<u64>,
    /// Of a service backing off: when it starts again, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start_at_ms: Option<u64>,
    /// Why the last start failed (the program is missing, a bad user...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Of a service with a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthState>,
    /// Consecutive failed checks.
    #[serde(default)]
    pub health_failures: u32,
    /// The end of the last check's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_output: Option<String>,
    /// Recent events, oldest first.
    #[serde(default)]
    pub events: Vec<ServiceEvent>,
}

/// What `service_control` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceAction {
    /// Start it if it is not running (resets the restart count).
    Start,
    /// The stop signal, then SIGKILL after the stop timeout; no restart.
    Stop,
    /// Stop, then start.
    Restart,
}

/// Set by the daemon in a sandbox's environment: the working directory of
/// commands that name none (the image's WORKDIR). The agent takes it out
/// of its environment at start.
pub const DEFAULT_WORKDIR_ENV: &str = "DWELL_DEFAULT_WORKDIR";
/// Set by the daemon in a sandbox's environment: the user of commands that
/// name none (the image's USER). The agent takes it out of its environment.
pub const DEFAULT_USER_ENV: &str = "DWELL_DEFAULT_USER";
