//! End to end: attacks on the host boundary, run from inside a sandbox as
//! its root would (see crates/runtime/SECURITY.md). Each module is one
//! class of attack; every test runs on every runtime this host has (the
//! namespace runtime always, gVisor where runsc is installed) and checks
//! that the attack fails closed and that the sandbox and its neighbours
//! still work afterwards. Every probe is harmless to the host.

mod common;

#[path = "host_boundary/channel.rs"]
mod channel;
#[path = "host_boundary/daemon_limits.rs"]
mod daemon_limits;
#[path = "host_boundary/host_files.rs"]
mod host_files;
#[path = "host_boundary/paths.rs"]
mod paths;
#[path = "host_boundary/setuid.rs"]
mod setuid;
#[path = "host_boundary/support.rs"]
mod support;
#[path = "host_boundary/syscalls.rs"]
mod syscalls;
#[path = "host_boundary/userns.rs"]
mod userns;
