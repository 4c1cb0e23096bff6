//! Connections to a running sandbox's agent for exec, files and streams.

use dwell_proto::AgentClient;

use super::Controller;
use crate::error::Result;
use crate::model::{Sandbox, State};
use crate::transitions::{refused, Request, Rules};

impl Controller {
    /// The sandbox (which must be running) and a connection to its agent.
    pub async fn agent(&self, tenant: &str, id_or_name: &str) -> Result<(Sandbox, AgentClient)> {
        let sb = self.get(tenant, id_or_name)?;
        match sb.state {
            s if s.allows(Request::Exec) => {}
            State::Paused | State::Hibernated => {
                return Err(refused(
                    &sb,
                    Request::Exec,
                    format!(
                        "sandbox {} is {}; resume it with `dwell resume {}`",
                        sb.name,
                        sb.state.as_str(),
                        sb.name
                    ),
                ))
            }
            s => {
                return Err(refused(
                    &sb,
                    Request::Exec,
                    format!(
                        "sandbox {} is {}; start it with `dwell start {}`",
                        sb.name,
                        s.as_str(),
                        sb.name
                    ),
                ))
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
