//! What the gateways (REST API, E2B API, envd, `dwell serve`) read and
//! write besides sandbox operations: API keys, tenant records, the audit
//! log, and sandboxes looked up by id alone (envd routes by sandbox id and
//! checks the sandbox's own access token, not a tenant's key). Every
//! gateway goes through these methods; none holds the store.

use dwell_store::{ApiKey, AuditEntry, KeyRecord, Tenant};

use crate::controller::Controller;
use crate::error::Result;
use crate::model::{Record, Sandbox, SandboxSpec};

impl Controller {
    /// The API key whose SHA-256 is `hash`, revoked ones included.
    pub fn api_key(&self, hash: &str) -> Result<Option<KeyRecord>> {
        Ok(self.inner.store.key_record_by_hash(hash)?)
    }

    /// Note that `key` was used (written at most once a minute per key).
    pub fn api_key_used(&self, key: &KeyRecord) -> Result<()> {
        Ok(self.inner.store.touch_key(key)?)
    }

    /// Keep a new API key, by the SHA-256 of its secret.
    pub fn add_api_key(&self, key: &ApiKey, hash: &str) -> Result<()> {
        Ok(self.inner.store.insert_key(key, hash)?)
    }

    /// The API keys of `tenant`, revoked ones included.
    pub fn api_keys(&self, tenant: &str) -> Result<Vec<KeyRecord>> {
        Ok(self.inner.store.list_keys(tenant)?)
    }

    /// Revoke key `id` of `tenant`; `None` when the tenant has no such key.
    pub fn revoke_api_key(&self, tenant: &str, id: &str) -> Result<Option<KeyRecord>> {
        Ok(self.inner.store.revoke_key(tenant, id)?)
    }

    /// Whether an admin API key exists.
    pub fn has_admin_key(&self) -> Result<bool> {
        Ok(self.inner.store.has_admin_key()?)
    }

    /// The record of `tenant`, if it has one (see [`Self::tenant_limits`]
    /// for the limits it is held to either way).
    pub fn tenant(&self, name: &str) -> Result<Option<Tenant>> {
        Ok(self.inner.store.get_tenant(name)?)
    }

    /// Append a request that changed something to the audit log.
    pub fn audit_request(
        &self,
        tenant: &str,
        key_id: &str,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<()> {
        Ok(self
            .inner
            .store
            .add_audit(tenant, key_id, method, path, status)?)
    }

    /// Audit entries since `since` (Unix ms), of one tenant or of all,
    /// at most `limit`.
    pub fn audit(&self, tenant: Option<&str>, since: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        Ok(self.inner.store.audit(tenant, since, limit)?)
    }

    /// The live (not deleted) sandbox `id` of any tenant, as its record
    /// says (no volume or disk reads: envd asks on every request).
    pub fn live_sandbox(&self, id: &str) -> Result<Option<Sandbox>> {
        let rec: Option<Record> = self.inner.store.get_sandbox(id)?;
        Ok(rec
            .filter(|r| r.deleted_at.is_none())
            .map(|r| Sandbox::from_record(&r)))
    }

    /// Every live sandbox of every tenant, oldest first, as the records say.
    pub fn all_sandboxes(&self) -> Result<Vec<Sandbox>> {
        Ok(self
            .inner
            .store
            .list_sandboxes::<SandboxSpec>(None)?
            .iter()
            .map(Sandbox::from_record)
            .collect())
    }
}
