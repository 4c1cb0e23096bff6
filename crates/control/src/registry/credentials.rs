//! Tenants' registry logins (`dwell registry login`): the password is
//! sealed with the daemon key (like secret environment variables) and
//! opened only to build the client of that tenant's own pulls.

use std::collections::BTreeMap;

use dwell_store::RegistryCredential;

use crate::controller::Controller;
use crate::error::{Error, Result};

/// A login as shown (the password never is).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Login {
    pub registry: String,
    pub username: String,
    pub created_at: i64,
}

/// Normalizes a registry host as references name it (`index.docker.io`
/// is `docker.io`); refuses anything that is not `HOST[:PORT]`.
pub fn normalize_host(registry: &str) -> Result<String> {
    let r = registry
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let probe = format!("{r}/x");
    let parsed = dwell_storage::Reference::parse(&probe).map_err(|e| {
        Error::invalid(
            "registry",
            format!("{registry:?} is not a registry host ({e}); write HOST or HOST:PORT"),
        )
    })?;
    // A bare name without '.', ':' or "localhost" parses as a Docker Hub
    // repository; only accept it when it names Docker Hub itself.
    if parsed.registry == dwell_storage::image::reference::DOCKER_HUB
        && !matches!(r, "docker.io" | "index.docker.io" | "registry-1.docker.io")
    {
        return Err(Error::invalid(
            "registry",
            format!(
                "{registry:?} is not a registry host; write HOST or HOST:PORT (a host has a '.' or \
                 a port, or is localhost)"
            ),
        ));
    }
    Ok(parsed.registry)
}

impl Controller {
    /// Stores `tenant`'s login to `registry` (replacing an earlier one).
    pub fn registry_login(
        &self,
        tenant: &str,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<Login> {
        let registry = normalize_host(registry)?;
        if username.is_empty() || username.len() > 256 || username.contains(':') {
            return Err(Error::invalid(
                "username",
                "give a user name of 1-256 characters without ':'",
            ));
        }
        if password.is_empty() || password.len() > 8192 {
            return Err(Error::invalid(
                "password",
                "give a password (or token) of 1-8192 bytes",
            ));
        }
        let mut secret = BTreeMap::new();
        secret.insert("password".to_string(), password.to_string());
        let sealed = self.sealer()?.seal(&secret)?;
        let cred = RegistryCredential {
            tenant: tenant.to_string(),
            registry: registry.clone(),
            username: username.to_string(),
            sealed,
            created_at: 0,
        };
        self.inner.store.put_registry_credential(&cred)?;
        let stored = self
            .inner
            .store
            .get_registry_credential(tenant, &registry)?
            .ok_or_else(|| Error::Internal("the login was not stored".into()))?;
        Ok(Login {
            registry,
            username: stored.username,
            created_at: stored.created_at,
        })
    }

    /// Forgets `tenant`'s login to `registry`.
    pub fn registry_logout(&self, tenant: &str, registry: &str) -> Result<()> {
        let registry = normalize_host(registry)?;
        if self
            .inner
            .store
            .delete_registry_credential(tenant, &registry)?
        {
            Ok(())
        } else {
            Err(Error::RegistryLoginNotFound(registry))
        }
    }

    /// `tenant`'s logins.
    pub fn registry_logins(&self, tenant: &str) -> Result<Vec<Login>> {
        Ok(self
            .inner
            .store
            .list_registry_credentials(tenant)?
            .into_iter()
            .map(|c| Login {
                registry: c.registry,
                username: c.username,
                created_at: c.created_at,
            })
            .collect())
    }

    /// `tenant`'s user name and password for `host`, opened.
    pub(crate) fn registry_secret(
        &self,
        tenant: &str,
        host: &str,
    ) -> Result<Option<(String, String)>> {
        let Some(c) = self.inner.store.get_registry_credential(tenant, host)? else {
            return Ok(None);
        };
        let mut open = self.sealer()?.open(&c.sealed)?;
        let password = open.remove("password").ok_or_else(|| {
            Error::Internal(format!(
                "the stored login to {host} has no password; log in again"
            ))
        })?;
        Ok(Some((c.username, password)))
    }
}
