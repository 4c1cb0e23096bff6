//! Tenant private networks: `POST/GET /v1/networks`, `GET/DELETE
//! /v1/networks/{name}`, and a sandbox's membership
//! (`POST/DELETE /v1/sandboxes/{id}/networks/{network}`). Members of one
//! network reach each other by name (`SANDBOX` and `SANDBOX.NETWORK`) and
//! nothing of other networks or tenants; a network gives no way out of the
//! host (that is the sandbox's `network: nat`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::sandbox::State;

/// `POST /v1/networks`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    /// 1-32 lowercase letters, digits and '-', starting with a letter;
    /// unique among the tenant's networks.
    pub name: String,
    /// An IPv4 subnet (`a.b.c.d/len`, /16 to /29, inside the private
    /// ranges). Default: the first free /24 of 10.210.0.0/16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

/// One member of a network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct NetworkMember {
    pub sandbox_id: String,
    /// The sandbox's name: its peers reach it by it.
    pub sandbox: String,
    /// Its IPv4 address on the network, kept until it leaves.
    pub address: String,
    pub state: State,
}

/// A private network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub subnet: String,
    /// The host bridge that carries it.
    pub bridge: String,
    /// Unix milliseconds.
    pub created_at: i64,
    #[serde(default)]
    pub members: Vec<NetworkMember>,
}

/// One network a sandbox is on (in its `networks`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct NetworkAttachment {
    pub network: String,
    pub address: String,
    pub subnet: String,
    /// The interface inside the sandbox (`eth1`, `eth2`, ...).
    pub interface: String,
}
