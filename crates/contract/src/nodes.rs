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
}
