//! Logins to a sandbox another node of the cluster runs: the gateway the
//! client reached authenticates it (the keys are the cluster's), then
//! drives the sandbox's agent on its owner over the node channel: the
//! owner hands over a raw connection to the agent with what the session
//! needs of it (the agent key, the image's command defaults, the
//! sandbox's secret variables, which only the owner can open), and holds
//! the sandbox active while that connection is open. Everything else
//! (sessions, PTYs, sftp, forwarding) runs here, unchanged.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use dwell_control::controller::Elsewhere;
use dwell_proto::AgentClient;

/// An agent connection made through the owner node.
pub struct RemoteAgent {
    pub client: AgentClient,
    /// Whether the image sets a default user or working directory.
    pub command_defaults: bool,
    /// The sandbox's secret variables, opened by the owner.
    pub secrets: BTreeMap<String, String>,
}

/// Who asks, for the owner: the tenant, the login's key id, the sandbox id.
#[derive(Debug, Clone)]
pub struct Asker {
    pub tenant: String,
    pub key_id: String,
    pub sandbox_id: String,
}

type Connect = dyn Fn(Elsewhere, Asker) -> Pin<Box<dyn Future<Output = Result<RemoteAgent, String>> + Send>>
    + Send
    + Sync;

/// How the gateway reaches the agent of a sandbox on `Elsewhere` (set in
/// a cluster); the error is a message for the client.
#[derive(Clone)]
pub struct Remote(pub Arc<Connect>);

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Remote")
    }
}
