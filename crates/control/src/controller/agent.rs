//! Connections to a running sandbox's agent for exec, files and streams:
//! the one entry point every exec, file operation, PTY, E2B envd call,
//! port proxy and SSH session takes, so each of them wakes a sleeping
//! sandbox the same way ([`super::wake`]).

use dwell_proto::AgentClient;

use super::Controller;
use crate::error::Result;
use crate::model::{Sandbox, State};
use crate::transitions::{refused, Request, Rules};

impl Controller {
    /// The sandbox (which must be running) and a connection to its agent.
    /// A paused or hibernated sandbox that wakes on use is resumed first
    /// (see [`Controller::agent_for`]).
    pub async fn agent(&self, tenant: &str, id_or_name: &str) -> Result<(Sandbox, AgentClient)> {
        self.agent_for(tenant, id_or_name, "use").await
    }

    /// [`Controller::agent`] for the operation `op` (`exec`, `file read`,
    /// `shell`, ...), which names it in the sandbox's events when it wakes
    /// the sandbox and in the error when it cannot.
    pub async fn agent_for(
        &self,
        tenant: &str,
        id_or_name: &str,
        op: &str,
    ) -> Result<(Sandbox, AgentClient)> {
        let sb = self.get(tenant, id_or_name)?;
        self.agent_for_sandbox(tenant, sb, op).await
    }

    /// [`Controller::agent_for`] of a sandbox the caller just read (its
    /// record is not read again unless it has to be woken first).
    pub async fn agent_for_sandbox(
        &self,
        tenant: &str,
        mut sb: Sandbox,
        op: &str,
    ) -> Result<(Sandbox, AgentClient)> {
        self.here(sb.node.as_deref(), &sb.name)?;
        if matches!(sb.state, State::Paused | State::Hibernated) {
            sb = self.wake(tenant, &sb, op).await?;
        }
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
