//! Secrets of a sandbox: its sealed environment variables, opened for exec
//! requests, and the access token of its in-sandbox API.

use super::Controller;
use crate::error::{Error, Result};
use crate::model::Record;

impl Controller {
    /// The secret variables of a sandbox, opened, for the exec requests
    /// sent to its agent (never stored or shown elsewhere).
    pub fn secret_env(&self, id: &str) -> Result<std::collections::BTreeMap<String, String>> {
        let rec: Record = self
            .inner
            .store
            .get_sandbox(id)?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        self.open_secrets(&rec)
    }

    /// A sandbox by id or name and its secret variables, opened, from one
    /// read of its record (what every exec needs before it starts). The
    /// sandbox is its record alone: no network or archive details, which
    /// running a command does not need (they cost a query and a file
    /// lookup per exec).
    pub fn sandbox_with_secrets(
        &self,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<(
        crate::model::Sandbox,
        std::collections::BTreeMap<String, String>,
    )> {
        let rec = self.record(tenant, id_or_name)?;
        let secrets = self.open_secrets(&rec)?;
        Ok((crate::model::Sandbox::from_record(&rec), secrets))
    }

    fn open_secrets(&self, rec: &Record) -> Result<std::collections::BTreeMap<String, String>> {
        match &rec.spec.sealed_env {
            None => Ok(Default::default()),
            Some(sealed) => self
                .inner
                .sealer
                .as_ref()
                .map_err(|e| Error::Internal(e.clone()))?
                .open(sealed),
        }
    }

    /// The access token of a sandbox's in-sandbox API (E2B's "envd access
    /// token"), derived from the daemon key and the sandbox id.
    pub fn sandbox_token(&self, id: &str) -> Result<String> {
        Ok(self.sealer()?.sandbox_token(id))
    }

    /// Whether `token` is the access token of sandbox `id`.
    pub fn sandbox_token_matches(&self, id: &str, token: &str) -> bool {
        self.sealer().is_ok_and(|s| s.token_matches(id, token))
    }

    pub(crate) fn sealer(&self) -> Result<&crate::secrets::Sealer> {
        self.inner
            .sealer
            .as_ref()
            .map_err(|e| Error::Internal(e.clone()))
    }
}
