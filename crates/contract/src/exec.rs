//! Running commands: `POST /v1/sandboxes/{id}/exec` (to completion), the
//! streaming WebSocket protocol of `GET .../exec` and `.../attach`, and the
//! process list.
//!
//! ## Streaming exec and attach (WebSocket)
//!
//! `GET /v1/sandboxes/{id}/exec` upgrades to a WebSocket. The client sends
//! one text message, the [`ExecRequest`] as JSON. Then:
//! - binary messages carry bytes, the first byte naming the channel:
//!   [`CH_STDIN`] (client to server), [`CH_STDOUT`], [`CH_STDERR`];
//! - text messages carry [`ClientMsg`] (client to server) and [`ServerMsg`]
//!   (server to client) as JSON. The server always sends `started` first
//!   and `exit` (or `error`) last, then closes.
//!
//! `GET /v1/sandboxes/{id}/processes/{pid}/attach` speaks the same protocol
//! without the first client message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const CH_STDIN: u8 = 0;
pub const CH_STDOUT: u8 = 1;
pub const CH_STDERR: u8 = 2;

/// Terminal size of a PTY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// What to run and how. Exactly one of `argv` (non-empty) or `shell` must
/// be set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up in `PATH`.
    pub argv: Vec<String>,
    /// A shell command line, run as `/bin/sh -c <shell>`.
    pub shell: Option<String>,
    /// Variables added to (overriding) the sandbox's environment.
    pub env: BTreeMap<String, String>,
    /// Working directory; default `/` (or the user's home when `user` is set).
    pub cwd: Option<String>,
    /// User name from the sandbox's /etc/passwd, or numeric `uid[:gid]`.
    pub user: Option<String>,
    /// Kill the process group after this many milliseconds and report `timed_out`.
    pub timeout_ms: Option<u64>,
    /// Give the process a stdin pipe fed by the stream (`false`: /dev/null).
    pub stdin: bool,
    /// Run on a PTY of this size (stdout and stderr merged).
    pub tty: Option<TtySize>,
    /// Keep running when the stream or connection goes away.
    pub background: bool,
    /// Free-form label shown in the process list.
    pub tag: Option<String>,
}

/// Client control messages on an exec/attach WebSocket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// No more stdin.
    StdinClose,
    /// The terminal was resized.
    Resize { rows: u16, cols: u16 },
    /// Send a signal to the process.
    Signal { signal: i32 },
}

/// Server messages on an exec/attach WebSocket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Started { pid: u32 },
    Exit(ExitReport),
    Error { code: String, message: String },
}

/// How a process ended, as the API reports it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ExitReport {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Killed because its timeout expired.
    pub timed_out: bool,
    /// Killed by the kernel's OOM killer (the sandbox hit its memory limit).
    pub oom_killed: bool,
}

impl ExitReport {
    /// The exit code a shell would report: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }
}

/// `POST /v1/sandboxes/{id}/exec`: run to completion and collect output.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ExecCall {
    #[serde(flatten)]
    pub request: ExecRequest,
    /// Text fed to stdin, then stdin is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_data: Option<String>,
}

/// Result of `POST /v1/sandboxes/{id}/exec`. Output is UTF-8 (invalid
/// sequences replaced); use the WebSocket for raw bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ExecResult {
    pub pid: u32,
    pub stdout: String,
    pub stderr: String,
    pub exit: ExitReport,
    pub duration_ms: u64,
}

/// How a process ended, as the agent saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExitStatus {
    /// Exit code when the process exited normally.
    pub code: Option<i32>,
    /// Signal number when the process was killed by a signal.
    pub signal: Option<i32>,
    /// Killed because `timeout_ms` expired.
    pub timed_out: bool,
}

/// A process started through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProcessInfo {
    pub pid: u32,
    pub argv: Vec<String>,
    pub tag: Option<String>,
    pub background: bool,
    pub tty: bool,
    pub running: bool,
    /// Set once the process has exited.
    pub exit: Option<ExitStatus>,
    /// Unix time in milliseconds.
    pub started_at_ms: u64,
}

/// `POST .../processes/{pid}/signal`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct SignalBody {
    /// 1-64 (15 = TERM, 9 = KILL).
    pub signal: i32,
}
