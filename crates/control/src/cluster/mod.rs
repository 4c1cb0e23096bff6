//! This daemon as a node of a cluster (`serve --cluster postgres://...`).
//!
//! The nodes share one PostgreSQL store and one object store. Each node
//! registers itself and keeps a lease alive ([`node`]); each sandbox has
//! one owner node (the record's `node`), and only the owner's control
//! plane touches it: every background pass of this daemon looks at the
//! sandboxes it owns ([`Membership::owns`]). A new sandbox goes where
//! [`placement`] finds room; requests for a sandbox owned elsewhere are
//! forwarded to its owner by the API layer (`dwell-cluster`).
//!
//! A single daemon (SQLite, no `--cluster`) has no membership: it owns
//! every record.

pub mod handoff;
pub mod moves;
pub mod node;
pub mod placement;
pub mod recovery;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// How a daemon joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// This node's name, unique in the cluster.
    pub node: String,
    /// `host:port` where the other nodes reach this one.
    pub advertise: String,
    /// Labels placement can select on (`zone=a`, `gpu=none`).
    pub labels: BTreeMap<String, String>,
    /// What this node offers to placement.
    pub capacity: Capacity,
    /// How long a lease lasts without a heartbeat; heartbeats go every
    /// third of it.
    pub lease: Duration,
    /// This daemon's instance (its data dir's id): another daemon may not
    /// take the node name while this one's lease lives.
    pub instance: String,
}

/// A node that serves a request instead of this one.
#[derive(Debug, Clone, PartialEq)]
pub struct Elsewhere {
    pub node: String,
    /// Where its node listener is (`host:port`).
    pub advertise: String,
}

/// A connected, not yet handshaken, stream to an agent.
pub struct AgentLink {
    pub stream: tokio::net::UnixStream,
    /// The agent key (hex) the handshake must prove, when it has one.
    pub key: Option<String>,
    /// Whether the image sets a default user or working directory for
    /// commands (see `Controller::has_command_defaults`).
    pub command_defaults: bool,
}

/// What a node offers: vCPUs, memory and disk bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub vcpus: f64,
    pub memory: u64,
    pub disk: u64,
}

/// This daemon's membership, once registered.
pub(crate) struct Membership {
    pub(crate) opts: ClusterOptions,
    /// The epoch of this incarnation's registration (0 before).
    epoch: AtomicI64,
    /// Set while this node's lease is gone and it fences itself: its
    /// background work (backups) waits.
    fenced: AtomicBool,
}

impl Membership {
    pub(crate) fn new(opts: ClusterOptions) -> Membership {
        Membership {
            opts,
            epoch: AtomicI64::new(0),
            fenced: AtomicBool::new(false),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.opts.node
    }

    pub(crate) fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub(crate) fn set_epoch(&self, e: i64) {
        self.epoch.store(e, Ordering::SeqCst)
    }

    pub(crate) fn fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    pub(crate) fn set_fenced(&self, f: bool) {
        self.fenced.store(f, Ordering::SeqCst)
    }

    /// Whether this node owns a sandbox whose record names `owner`.
    pub(crate) fn owns(&self, owner: Option<&str>) -> bool {
        owner == Some(self.opts.node.as_str())
    }
}
