//! Connections to a running sandbox's agent for exec, files and streams.

use dwell_proto::AgentClient;

use super::Controller;
use crate::error::Result;
use crate::model::Sandbox;
use crate::transitions::{refused, Request, Rules};

impl Controller {
    /// The sandbox (which must be running) and a connection to its agent.
    pub async fn agent(&self, tenant: &str, id_or_name: &str) -> Result<(Sandbox, AgentClient)> {
        let sb = self.get(tenant, id_or_name)?;
        match sb.state {
            s if s.allows(Request::Exec) => {}
            s => {
                // Clients word the way out from the facts (resume a paused
                // sandbox, start a stopped one).
                let message = format!(
                    "sandbox {} is {}; commands and files need it running",
                    sb.name,
                    s.as_str()
                );
                return Err(refused(&sb, Request::Exec, message));
            }
        }
        let client = crate::connections::client(&self.inner, &sb.id).await?;
        Ok((sb, client))
    }

    /// Drop a cached agent connection that failed, so the next call
    /// reconnects (the agent may have been restarted with its sandbox).
    pub async fn agent_failed(&self, id: &str) {
        crate::connections::forget(&self.inner, id).await;
    }
}
