//! The namespace runtime's own files in a sandbox's state directory (its
//! config for the boot process, the pid file, the daemon-only agent socket
//! dir) and the tmpfs it mounts at `/run/dwell`. The files both runtimes
//! share are in [`crate::host::layout`], re-exported here.

pub use crate::host::layout::*;
pub use crate::overlays::host_dir_name;

/// The config the boot process reads.
pub const CONFIG_FILE: &str = "config.json";
/// `<pid> <start time in clock ticks>` of the sandbox's PID 1.
pub const PID_FILE: &str = "pid";
/// Daemon-only directory (0700, never mounted into the sandbox) of the
/// socket the boot process binds and passes to the agent.
pub const HOST_AGENT_DIR: &str = "agent";
/// The agent's socket, relative to the state dir.
pub const HOST_AGENT_SOCKET: &str = "agent/agent.sock";
/// Descriptor the bound socket has in the agent (`--listen-fd 3`).
pub const AGENT_LISTEN_FD: i32 = 3;
/// Size of the tmpfs at /run/dwell in a sandbox.
pub const SANDBOX_RUN_TMPFS: &str = "size=256k,nr_inodes=256,mode=755";
/// Where sandboxes started before the socket was passed in (and before
/// agent keys) have their agent listen, relative to the state dir.
pub const LEGACY_AGENT_SOCKET: &str = "run/agent.sock";
