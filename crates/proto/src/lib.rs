//! dwell-proto: the protocol spoken between the dwell daemon and `dwell-agent`,
//! the PID 1 of every sandbox.
//!
//! * [`auth`]: the per-sandbox agent key and the handshake proofs.
//! * [`frame`]: the length-prefixed, multiplexed frame codec (see `PROTOCOL.md`).
//! * [`messages`]: the JSON control messages and the request/response types
//!   (all `serde`, reused by the daemon's REST API).
//! * [`service`]: the sandbox's supervised service (definition, status).
//! * [`client`]: [`AgentClient`], an async, cheaply clonable client that runs
//!   many concurrent requests and process streams over one connection.

pub mod auth;
pub mod client;
pub mod error;
pub mod frame;
pub mod messages;
pub mod service;

pub use auth::AgentKey;
pub use client::{
    AgentClient, FileReader, FileWriter, FsEvent, LogChunk, Peer, ProcessEvent, ProcessInput,
    ProcessOutput, ProcessStream, ServiceLogs, SleepGate, TcpTunnel, WakeHook, WatchFlusher,
    WatchItem, Watcher,
};
pub use error::{Error, Result};
pub use messages::*;
pub use service::*;

/// The protocol version this crate speaks; both ends must agree on it in the handshake.
pub const PROTOCOL_VERSION: u32 = 2;

/// The version before the authenticated handshake. Frames and messages are
/// the same; a client without a key speaks it, so agents started before
/// keys existed (running or hibernated across an upgrade) stay reachable,
/// and an agent without a key accepts it.
pub const UNAUTHENTICATED_PROTOCOL_VERSION: u32 = 1;

/// The first line of the block of peer names the daemon keeps in a
/// sandbox's `/etc/hosts` (its private networks), written through the
/// agent; the agent leaves the block to the daemon.
pub const HOSTS_BLOCK_BEGIN: &str =
    "# dwell private networks: managed by dwell, replaced on every change";
/// The last line of that block.
pub const HOSTS_BLOCK_END: &str = "# end of dwell private networks";
