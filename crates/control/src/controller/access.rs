//! What the gateways (REST API, E2B API, envd, `dwell serve`) read and
//! write besides sandbox operations: API keys, tenant records, the audit
//! log, the web console's login tokens and sessions, and sandboxes looked up by id alone (envd routes by sandbox id and
//! checks the sandbox's own access token, not a tenant's key). Every
//! gateway goes through these methods; none holds the store.

use dwell_store::{
    ApiKey, AuditEntry, ConsoleSession, KeyRecord, LoginGrant, LoginRefusal, SessionLookup, SshKey,
    Tenant,
};

use crate::controller::Controller;
use crate::error::{Error, Result};
use crate::model::{Record, Sandbox, SandboxSpec};
use crate::ssh_keys::{LoginName, SshLogin};

impl Controller {
    /// The API key `id`, revoked or not.
    pub fn api_key_by_id(&self, id: &str) -> Result<Option<KeyRecord>> {
        Ok(self.inner.store.key_record_by_id(id)?)
    }

    /// Keeps a one-time console login token (by the hash of its secret).
    pub fn add_console_login(&self, hash: &str, grant: &LoginGrant, ttl_ms: i64) -> Result<()> {
        Ok(self.inner.store.insert_console_login(hash, grant, ttl_ms)?)
    }

    /// Spends a console login token: who it logs in, or why it is refused.
    pub fn take_console_login(
        &self,
        hash: &str,
    ) -> Result<std::result::Result<LoginGrant, LoginRefusal>> {
        Ok(self.inner.store.take_console_login(hash)?)
    }

    /// Starts a console session.
    #[allow(clippy::too_many_arguments)]
    pub fn add_console_session(
        &self,
        id: &str,
        hash: &str,
        csrf: &str,
        grant: &LoginGrant,
        ttl_ms: i64,
        idle_ms: i64,
        user_agent: &str,
    ) -> Result<ConsoleSession> {
        Ok(self
            .inner
            .store
            .insert_console_session(id, hash, csrf, grant, ttl_ms, idle_ms, user_agent)?)
    }

    /// The console session whose cookie hashes to `hash`.
    pub fn console_session(&self, hash: &str) -> Result<SessionLookup> {
        Ok(self.inner.store.console_session(hash)?)
    }

    /// Console session `id`, revoked, expired or live.
    pub fn console_session_by_id(&self, id: &str) -> Result<SessionLookup> {
        Ok(self.inner.store.console_session_by_id(id)?)
    }

    /// Marks a console session seen by a request it passed.
    pub fn touch_console_session(&self, s: &mut ConsoleSession) -> Result<()> {
        Ok(self.inner.store.touch_console_session(s)?)
    }

    /// `tenant`'s live console sessions, newest first.
    pub fn console_sessions(&self, tenant: &str) -> Result<Vec<ConsoleSession>> {
        Ok(self.inner.store.console_sessions(tenant)?)
    }

    /// Revokes `tenant`'s console session `id`, or all of them.
    pub fn revoke_console_sessions(&self, tenant: &str, id: Option<&str>) -> Result<u64> {
        Ok(self.inner.store.revoke_console_sessions(tenant, id)?)
    }

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

    /// Register an SSH public key (one OpenSSH line) for `tenant`, named
    /// `name` (default: the key's comment, or its fingerprint's start).
    pub fn add_ssh_key(&self, tenant: &str, name: Option<&str>, text: &str) -> Result<SshKey> {
        let parsed = crate::ssh_keys::parse(text)?;
        let name = match name {
            Some(n) => {
                crate::ssh_keys::check_name(n)?;
                n.to_string()
            }
            None => crate::ssh_keys::default_name(&parsed),
        };
        let existing = self.inner.store.list_ssh_keys(tenant)?;
        if let Some(k) = existing
            .iter()
            .find(|k| k.fingerprint == parsed.fingerprint)
        {
            return Err(Error::Conflict(format!(
                "this key ({}) is already registered for tenant {tenant} as {:?} ({}); it \
                 logs in already, or remove it first (`dwell ssh-key rm {}`) to register it \
                 under another name",
                parsed.fingerprint, k.name, k.id, k.id
            )));
        }
        if let Some(k) = existing.iter().find(|k| k.name == name) {
            return Err(Error::Conflict(format!(
                "tenant {tenant} already has an SSH key named {name:?} ({}); pick another name \
                 with --name or remove it first",
                k.id
            )));
        }
        let key = SshKey {
            id: format!("sshkey-{}", &crate::ids::new_id()[..12]),
            tenant: tenant.into(),
            name,
            public_key: parsed.key,
            fingerprint: parsed.fingerprint,
            created_at: 0,
            last_used_at: None,
        };
        if !self.inner.store.insert_ssh_key(&key)? {
            return Err(Error::Conflict(format!(
                "tenant {tenant} registered the same key or name meanwhile; list them with \
                 `dwell ssh-key ls`"
            )));
        }
        let stored = self.inner.store.list_ssh_keys(tenant)?;
        Ok(stored.into_iter().find(|k| k.id == key.id).unwrap_or(key))
    }

    /// The SSH keys of `tenant`, oldest first.
    pub fn ssh_keys(&self, tenant: &str) -> Result<Vec<SshKey>> {
        Ok(self.inner.store.list_ssh_keys(tenant)?)
    }

    /// Remove `tenant`'s SSH key by id or name; `None` when it has no such key.
    pub fn remove_ssh_key(&self, tenant: &str, id_or_name: &str) -> Result<Option<SshKey>> {
        let removed = self.inner.store.delete_ssh_key(tenant, id_or_name)?;
        if removed.is_some() {
            // After the row is gone: the gateway re-checks what it sees.
            self.inner.ssh_keys_changed.send_modify(|n| *n += 1);
        }
        Ok(removed)
    }

    /// The SSH gateway's login check for a client that proved the key with
    /// this fingerprint and asked for `user` ([`LoginName`]: `SANDBOX` or
    /// `SANDBOX+TENANT`, the sandbox by name or id).
    ///
    /// A qualified name logs in only when that tenant registered the key.
    /// A bare sandbox id names one sandbox, whose tenant must hold the key.
    /// A bare sandbox name is ambiguous when several tenants registered the
    /// key (public keys are public: anyone may register anyone's), so it is
    /// refused then rather than resolved to one of them. Unknown keys,
    /// sandboxes and another tenant's sandboxes are refused alike. A login
    /// counts as a use of the key.
    pub fn ssh_login(&self, fingerprint: &str, user: &str) -> Result<SshLogin> {
        let Some(name) = LoginName::parse(user) else {
            return Ok(SshLogin::Refused);
        };
        let keys = self.inner.store.ssh_keys_by_fingerprint(fingerprint)?;
        let (sandbox, candidates): (&str, Vec<&SshKey>) = match name {
            LoginName::Qualified { sandbox, tenant } => (
                sandbox,
                keys.iter().filter(|k| k.tenant == tenant).collect(),
            ),
            LoginName::Bare(sandbox) => {
                let mut tenants: Vec<String> = keys.iter().map(|k| k.tenant.clone()).collect();
                tenants.sort();
                tenants.dedup();
                if tenants.len() > 1 && !crate::ids::looks_like_id(sandbox) {
                    return Ok(SshLogin::Ambiguous { tenants });
                }
                (sandbox, keys.iter().collect())
            }
        };
        for key in candidates {
            match self.get(&key.tenant, sandbox) {
                Ok(sb) => {
                    self.inner.store.touch_ssh_key(key)?;
                    return Ok(SshLogin::Granted(key.clone(), Box::new(sb)));
                }
                Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(SshLogin::Refused)
    }

    /// Whether a live SSH login still holds: key `key_id` is still
    /// registered, by `tenant`, and `tenant` still has the live sandbox
    /// `sandbox_id`. The gateway asks before every new channel and when
    /// keys change ([`Self::ssh_keys_changed`]).
    pub fn ssh_login_holds(&self, key_id: &str, tenant: &str, sandbox_id: &str) -> Result<bool> {
        let key_ok = self
            .inner
            .store
            .ssh_key(key_id)?
            .is_some_and(|k| k.tenant == tenant);
        if !key_ok {
            return Ok(false);
        }
        match self.record(tenant, sandbox_id) {
            Ok(rec) => Ok(rec.id == sandbox_id),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A receiver that sees a new value whenever an SSH key is removed, so
    /// the gateway can close the connections logged in with it.
    pub fn ssh_keys_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.ssh_keys_changed.subscribe()
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
