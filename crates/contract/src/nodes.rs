//! `/v1/nodes`: the nodes of a cluster (`dwell serve --cluster ...`):
//! where each is reached, what it offers and holds, its lease. Admin only.
//! A single daemon has none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One node of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Node {
    pub name: String,
    /// `host:port` of its node listener.
    pub advertise: String,
    pub labels: BTreeMap<String, String>,
    /// `up` (takes new sandboxes), `draining` (keeps what it has, takes
    /// nothing new) or `lost` (its lease ran out).
    pub state: String,
    /// What it offers placement.
    pub vcpus: f64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// What its sandboxes hold, as of its last heartbeat.
    pub allocated_vcpus: f64,
    pub allocated_memory_bytes: u64,
    pub allocated_disk_bytes: u64,
    /// Its sandboxes that hold compute (creating, running, paused).
    pub sandboxes: u64,
    pub version: String,
    /// Unix ms.
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub lease_until: i64,
    /// Whether this is the node that answered.
    pub this_node: bool,
    /// The live sandboxes it owns, in any state (a drain is done when
    /// this is 0).
    #[serde(default)]
    pub owned: u64,
}

/// `POST /v1/sandboxes/{id}/move`: move a sandbox to another node (admin).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The node to move to; omitted: placement picks one (never the
    /// sandbox's own node).
    #[serde(default)]
    pub to: Option<String>,
    /// Keep memory and processes: a running gVisor sandbox is hibernated,
    /// moved and resumed. Without it the move is cold: the files move and
    /// its processes start again.
    #[serde(default)]
    pub warm: bool,
}

/// The node-only take-over request a moving node sends the new owner.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TakeOver {
    /// The state to bring the sandbox to (`running`, `stopped`,
    /// `hibernated`, `archived`); omitted: its recorded desired state.
    #[serde(default)]
    pub reach: Option<String>,
}
