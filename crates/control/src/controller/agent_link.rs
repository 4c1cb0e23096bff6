//! A raw connection to a sandbox's agent, for another node of the cluster
//! that serves a client of this node's sandbox itself (the SSH gateway of
//! the node the client reached): it gets the stream, unshaken, and the
//! agent key to handshake with, over the node channel (mutual TLS, nodes
//! of the cluster only), and drives the agent as if it were local.

use super::Controller;
use crate::cluster::AgentLink;
use crate::error::{Error, Result};
use crate::reconcile::config::config_of;

impl Controller {
    /// A new raw connection to the agent of sandbox `id_or_name` of
    /// `tenant`, which this node runs; a paused sandbox is woken first
    /// when its policy allows it, as for [`Controller::agent_for`] (`op`
    /// names the use in its events).
    pub async fn agent_link(&self, tenant: &str, id_or_name: &str, op: &str) -> Result<AgentLink> {
        // Woken if need be, and refused unless it can run commands.
        let (sb, _) = self.agent_for(tenant, id_or_name, op).await?;
        let cfg = config_of(&self.inner, &sb.id)?;
        let runtime = self.inner.runtime_of(&sb.id)?;
        let key = cfg.agent_key.clone();
        let id = sb.id.clone();
        let unreachable = |e: String| Error::Unavailable(format!("sandbox {id}: {e}"));
        let std_stream = tokio::time::timeout(
            dwell_proto::client::CONNECT_TIMEOUT,
            tokio::task::spawn_blocking(move || runtime.connect_agent(&cfg)),
        )
        .await
        .map_err(|_| unreachable("connecting to its agent timed out".into()))?
        .map_err(|e| unreachable(format!("a worker thread failed: {e}")))?
        .map_err(|e| unreachable(format!("{e} (is the sandbox running?)")))?;
        let stream = std_stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(std_stream))
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(AgentLink {
            stream,
            key,
            command_defaults: self.has_command_defaults(&sb.id),
        })
    }
}
