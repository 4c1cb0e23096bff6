//! Request and response bodies shared by the API and its clients (the CLI),
//! beyond the agent's own types from `dwell_proto` which are reused as is.
//!
//! ## Streaming exec and attach (WebSocket)
//!
//! `GET /v1/sandboxes/{id}/exec` upgrades to a WebSocket. The client sends
//! one text message, the [`ExecRequest`](dwell_proto::ExecRequest) as JSON.
//! Then:
//! - binary messages carry bytes, the first byte naming the channel:
//!   [`CH_STDIN`] (client to server), [`CH_STDOUT`], [`CH_STDERR`];
//! - text messages carry [`ClientMsg`] (client to server) and [`ServerMsg`]
//!   (server to client) as JSON. The server always sends `started` first
//!   and `exit` (or `error`) last, then closes.
//!
//! `GET /v1/sandboxes/{id}/processes/{pid}/attach` speaks the same protocol
//! without the first client message.

use serde::{Deserialize, Serialize};

pub const CH_STDIN: u8 = 0;
pub const CH_STDOUT: u8 = 1;
pub const CH_STDERR: u8 = 2;

/// Client control messages on an exec/attach WebSocket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Started { pid: u32 },
    Exit(ExitReport),
    Error { code: String, message: String },
}

/// How a process ended, as the API reports it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExecCall {
    #[serde(flatten)]
    pub request: dwell_proto::ExecRequest,
    /// Text fed to stdin, then stdin is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_data: Option<String>,
}

/// Result of `POST /v1/sandboxes/{id}/exec`. Output is UTF-8 (invalid
/// sequences replaced); use the WebSocket for raw bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExecResult {
    pub pid: u32,
    pub stdout: String,
    pub stderr: String,
    pub exit: ExitReport,
    pub duration_ms: u64,
}

/// `POST .../processes/{pid}/signal`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SignalBody {
    pub signal: i32,
}

/// `POST .../fs/mkdir`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MkdirBody {
    pub path: String,
    #[serde(default)]
    pub parents: bool,
}

/// `POST .../fs/rename`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RenameBody {
    pub from: String,
    pub to: String,
}

/// `POST /v1/images`: import an OCI layout dir or `docker save` tarball
/// that is on the daemon's host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImportBody {
    pub name: String,
    pub path: String,
}

/// `GET /v1/info`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Info {
    pub version: String,
    pub runtime: String,
    pub tenant: String,
}
