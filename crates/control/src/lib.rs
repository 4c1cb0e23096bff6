//! The control plane of the dwell daemon.
//!
//! Requests never drive a runtime directly. They validate input, write the
//! *desired* state of a sandbox to the [store](dwell_store), and ask the
//! [`reconcile`] module to make the observed state match. The reconciler
//! records each step as an event before it takes it, so a daemon killed at
//! any point finds, on restart, records that tell it what to finish: it
//! adopts sandboxes that still run, completes half-done creates and deletes,
//! and marks sandboxes whose processes vanished.
//!
//! - [`model`]: the sandbox as users see it (spec, state, mode) and input
//!   validation.
//! - [`controller`]: the operations behind the API, one module per group
//!   (create, lifecycle, snapshots, tenants, views, ...) behind a thin
//!   façade.
//! - [`error`]: errors with a code, an HTTP status and structured facts.
//! - [`transitions`]: what each state allows, the one table the request
//!   guards and the reconciler read.
//! - [`reconcile`]: the reconciler, one file per transition, executing
//!   the table's steps.
//! - [`cluster`]: this daemon as a node of a cluster (registration,
//!   leases, placement); a single node has none.
//! - [`runtimes`]: the isolation runtimes the daemon offers, by kind, and
//!   which one each sandbox uses; control asks their capabilities, never
//!   their names.
//! - `context` (the data every operation reads), `state_dir` (what lives
//!   under `sandboxes/<id>/`) and `connections` (the cached connections to
//!   agents): crate-private plumbing.
//! - [`policy`]: lifecycle policies (TTL, idle, pause/stop/hibernate/archive/
//!   delete after), evaluated by the reconciler's sweep against a
//!   [`clock::Clock`].
//! - [`snapshots`], [`archive`], [`snapshot_gc`], [`progress`]: snapshots of
//!   volumes, archived sandboxes, store garbage collection, and the progress
//!   of long snapshot operations; [`memory`]: a hibernated sandbox's saved
//!   memory stored with its volume.
//! - [`ssh_keys`]: SSH public keys as users register them (parsed and
//!   fingerprinted) for the SSH gateway.
//! - [`networks`]: tenant private networks (members reach each other by
//!   name).
//! - [`quota`], [`limits`]: per-tenant quotas, the quota of tenants
//!   without a record and the daemon-wide ceilings of one sandbox.
//! - [`volumes`]: a tenant's named volumes, bound into the sandboxes that
//!   name them and mounted on the host while one of those runs;
//!   [`volume_spec`]: how a sandbox's spec names them, and the checks.
//! - [`build`]: Dockerfile builds (request, events, result); RUN steps run
//!   in sandboxes of the building tenant.
//! - [`service`]: the sandbox's service (the image's start command the
//!   agent supervises): resolved at create, sent to the agent at start.
//! - `egress`: default egress rules and the DNS resolver's attachment to
//!   running NAT sandboxes.

pub mod agents;
pub mod archive;
pub mod backup;
pub mod backup_settings;
pub mod build;
pub mod clock;
pub mod cluster;
mod connections;
mod context;
pub mod controller;
pub mod crashpoint;
mod deadline_wakes;
pub mod diff;
mod doze;
mod doze_book;
mod egress;
pub mod error;
pub mod ids;
pub mod keyfile;
pub mod limits;
pub mod memory;
pub mod metering;
pub mod model;
pub mod networks;
mod orphans;
pub mod policy;
pub mod ports;
pub mod progress;
pub mod quota;
pub mod reconcile;
pub mod registry;
pub mod runtimes;
pub mod secrets;
pub mod service;
mod service_book;
pub mod size;
pub mod snapshot_gc;
pub mod snapshot_settings;
pub mod snapshots;
pub mod ssh_keys;
mod state_dir;
mod templates;
mod thaw;
pub mod transitions;
mod volume_pool;
pub mod volume_spec;
pub mod volumes;

pub use controller::{Controller, ControllerOptions};
pub use error::{Error, Result};
pub use model::{CreateRequest, Mode, Sandbox, SandboxSpec, State};
pub use ports::{Exposed, PortRoute, PortSettings};
pub use ssh_keys::SshLogin;
