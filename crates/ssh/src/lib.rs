//! The SSH gateway of the dwell daemon (`dwell serve --ssh-listen ADDR`).
//!
//! A client logs in as the sandbox it wants (`ssh -p 2222 web@host`: the
//! user name is the sandbox's name or id) with a public key its tenant
//! registered (`dwell ssh-key add`); a wrong key and a sandbox of another
//! tenant are refused alike. Everything then goes through the sandbox's
//! agent, reached with [`dwell_control::Controller::agent`] (which also wakes
//! a paused sandbox whose policy allows it):
//!
//! - [`session`]: `shell` and `exec` channels with or without a PTY
//!   (window changes, signals, stdin and its end, `exit-status` /
//!   `exit-signal`), and `env` requests;
//! - [`sftp`]: the `sftp` subsystem (so `scp` and `sftp` work) on the
//!   agent's file operations;
//! - [`forward`]: local port forwarding (`direct-tcpip`, `ssh -L`) through
//!   the agent's TCP streams.
//!
//! In a cluster, a login to a sandbox another node runs drives its agent
//! through that node ([`remote`]).
//!
//! [`server`] accepts connections and authenticates them; [`host_key`] keeps
//! the gateway's ed25519 host key in the data dir. Every login is in the
//! audit log and counts as activity of its sandbox; open channels keep it
//! from being idle. Everything a client can make is bounded: connections,
//! channels per connection, authentication attempts and time, sftp packets
//! and open handles, idle connections.

pub mod forward;
pub mod host_key;
pub mod remote;
pub mod server;
pub mod session;
pub mod sftp;

pub use host_key::HostKey;
pub use remote::{Asker, Remote, RemoteAgent};
pub use server::{serve, Options};
