//! What dwell's integration tests share, in one place: a real `dwell serve`
//! driven through the `dwell` binary ([`daemon`]), bounded child processes
//! and polling ([`process`]), a small HTTP/1.1 client ([`http`]), a real
//! S3 server ([`moto`]), a real PostgreSQL ([`postgres`]) and
//! clusters of daemons on it ([`cluster`]), a real OCI registry ([`registry`]), private network namespaces with an "outside"
//! ([`netns`]), a real headless Chromium for the web console ([`browser`]),
//! and skips that print why ([`skip`]).
//!
//! A dev-dependency only: it pulls nothing into the binaries, and needs no
//! crate of the workspace (its users test those).

pub mod browser;
pub mod cases;
pub mod cluster;
pub mod connect;
pub mod daemon;
pub mod http;
pub mod moto;
pub mod netns;
pub mod postgres;
pub mod process;
pub mod registry;
pub mod skip;

pub use browser::{screenshot_dir, Browser, Viewport};
pub use daemon::{
    agent_bin, can_run, can_run_gvisor, cgroup_leftovers, dwell_bin, isolation, leftovers,
    runtimes, Daemon, E2bListeners,
};
pub use process::{
    command_deadline, free_port, host_processes_of, output_within, pid_alive, stderr, stdout, tail,
    wait_for, wait_within, KillOnDrop,
};
pub use skip::{has_root, has_runsc, has_tools, skip};
