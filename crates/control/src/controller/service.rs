//! The sandbox's service as users reach it: its state and start / stop /
//! restart (see [`crate::service`]; the agent supervises it).

use dwell_proto::{ServiceAction, ServiceStatus};

use super::Controller;
use crate::error::{Error, Result};

impl Controller {
    /// Starts, stops or restarts the service of a sandbox (woken first
    /// when it sleeps and wakes on use).
    pub async fn service_control(
        &self,
        tenant: &str,
        id_or_name: &str,
        action: ServiceAction,
    ) -> Result<ServiceStatus> {
        let (sb, client) = self.agent_for(tenant, id_or_name, "service").await?;
        if sb.spec.service.is_none() {
            return Err(Error::NoService(sb.name));
        }
        // An agent started before the daemon knew the definition gets it now.
        if let Ok(Some(rec)) = self.inner.store.get_sandbox(&sb.id) {
            crate::service::ensure_sent(&self.inner, &rec).await;
        }
        let st = client.service_control(action).await?;
        let verb = match action {
            ServiceAction::Start => "start",
            ServiceAction::Stop => "stop",
            ServiceAction::Restart => "restart",
        };
        let _ = self
            .inner
            .store
            .add_event(&sb.id, "request", &format!("service {verb} requested"));
        crate::service::record_events(&self.inner, &sb.id, &st);
        Ok(st)
    }

    /// Whether the image of sandbox `id` (as it was started) gives
    /// commands a default user or working directory (its USER/WORKDIR):
    /// then a command should name neither, and get those.
    pub fn has_command_defaults(&self, id: &str) -> bool {
        crate::reconcile::config::config_of(&self.inner, id).is_ok_and(|c| {
            c.env.contains_key(dwell_proto::DEFAULT_USER_ENV)
                || c.env.contains_key(dwell_proto::DEFAULT_WORKDIR_ENV)
        })
    }

    /// The state of a running sandbox's service; `None` without one.
    pub async fn service_status(
        &self,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<Option<ServiceStatus>> {
        let sb = self.get(tenant, id_or_name)?;
        if sb.spec.service.is_none() || sb.state != crate::model::State::Running {
            return Ok(None);
        }
        crate::service::status(&self.inner, &sb.id).await
    }
}
