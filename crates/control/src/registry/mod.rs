//! Registry pulls (OCI distribution v2, through the `oci-client` crate):
//! which hosts speak plain HTTP ([`RegistrySettings::is_insecure`]), which
//! mirrors serve a registry, tenants' stored logins ([`credentials`]),
//! fetching and verifying manifests and blobs ([`pull`], [`download`]).
//!
//! Trust: registry content is untrusted. Every manifest, index, config and
//! layer is checked against the sha256 digest that names it before it is
//! used or stored; manifests and configs are size-capped; layers must be
//! exactly the size their descriptor states; descriptors' alternate `urls`
//! are never followed. Layers are extracted by the image store's safe
//! extractor.
//!
//! Tenants: each pull uses a fresh client holding only the pulling tenant's
//! login for that host, so one tenant's credentials never serve another's
//! pull. An image pulled with credentials is recorded as usable by that
//! tenant only; another tenant gets it after its own pull succeeds against
//! the registry (with its own credentials, or anonymously), which adds it.
//!
//! With an object store, pulled blobs are shared with other daemons
//! ([`share`]).

pub mod credentials;
pub mod download;
pub mod pull;
pub mod share;

use std::collections::{BTreeMap, BTreeSet};

/// A mirror of a registry: where to try first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port]`.
    pub host: String,
    /// The mirror was named with `http://`: plain HTTP.
    pub plain_http: bool,
}

/// Which registries are mirrored and which speak plain HTTP.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Mirrors per registry host (`docker.io`), tried in order before it.
    pub mirrors: BTreeMap<String, Vec<Mirror>>,
    /// Hosts (`host:port`) reached over plain HTTP.
    pub insecure: BTreeSet<String>,
    /// Layers downloaded at once per pull.
    pub parallel: usize,
    /// When set, the only registry hosts pulls may contact (mirrors
    /// included); `loopback` in the list allows every loopback address.
    pub allowed: Option<BTreeSet<String>>,
}

impl RegistrySettings {
    /// Parses `REGISTRY=URL` (`docker.io=http://127.0.0.1:5000`).
    pub fn add_mirror(&mut self, spec: &str) -> Result<(), String> {
        let (registry, url) = spec.split_once('=').ok_or_else(|| {
            format!("mirror {spec:?} is not REGISTRY=URL, e.g. docker.io=http://127.0.0.1:5000")
        })?;
        let (plain_http, host) = if let Some(h) = url.strip_prefix("http://") {
            (true, h)
        } else if let Some(h) = url.strip_prefix("https://") {
            (false, h)
        } else {
            (false, url)
        };
        let host = host.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "mirror URL {url:?} must be http(s)://HOST[:PORT] with no path"
            ));
        }
        let registry = if registry == "index.docker.io" {
            dwell_storage::image::reference::DOCKER_HUB
        } else {
            registry
        };
        self.mirrors
            .entry(registry.to_string())
            .or_default()
            .push(Mirror {
                host: host.to_string(),
                plain_http,
            });
        Ok(())
    }

    /// Whether pulls may contact `host` (see [`Self::allowed`]).
    pub fn is_allowed(&self, host: &str) -> bool {
        match &self.allowed {
            None => true,
            Some(a) => a.contains(host) || (a.contains("loopback") && is_loopback(host)),
        }
    }

    /// Whether `host` is reached over plain HTTP: named insecure, a mirror
    /// given as `http://`, or a loopback address (as Docker does).
    pub fn is_insecure(&self, host: &str) -> bool {
        if self.insecure.contains(host) {
            return true;
        }
        if self
            .mirrors
            .values()
            .flatten()
            .any(|m| m.plain_http && m.host == host)
        {
            return true;
        }
        is_loopback(host)
    }
}

/// `localhost`, `127.0.0.0/8` or `[::1]`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    if name == "localhost" {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_mirrors_are_insecure() {
        let mut s = RegistrySettings::default();
        assert!(s.is_insecure("127.0.0.1:5000"));
        assert!(s.is_insecure("localhost:5000"));
        assert!(s.is_insecure("[::1]:5000"));
        assert!(!s.is_insecure("registry.example.com:5000"));
        assert!(!s.is_insecure("128.0.0.1:5000"));
        s.add_mirror("docker.io=http://mirror.local:5000").unwrap();
        assert!(s.is_insecure("mirror.local:5000"));
        s.insecure.insert("reg.local:5000".into());
        assert!(s.is_insecure("reg.local:5000"));
        assert!(s.add_mirror("nonsense").is_err());
        assert!(s.add_mirror("docker.io=http://h/path").is_err());
        assert_eq!(s.mirrors["docker.io"][0].host, "mirror.local:5000");
        assert!(s.is_allowed("docker.io"));
        s.allowed = Some(["loopback".to_string(), "reg.local:5000".to_string()].into());
        assert!(s.is_allowed("127.0.0.1:5000") && s.is_allowed("reg.local:5000"));
        assert!(!s.is_allowed("docker.io"));
    }
}
