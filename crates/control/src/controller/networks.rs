//! Private network requests: create, list, inspect and remove a tenant's
//! networks, and put a stopped sandbox on one or take it off (see
//! [`crate::networks`]). Removing a network that still has members is
//! refused (409) with their names: a member's interface and its peers'
//! names depend on it, so the sandboxes leave first (deleted, or taken
//! off while stopped).

use dwell_runtime::host::private_net;
use dwell_store::Network;

use super::Controller;
use crate::context::blocking;
use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::model::{Sandbox, State};
use crate::networks::{self, NetworkView};

impl Controller {
    /// Peer names of private networks, for the DNS resolver.
    pub fn peer_names(&self) -> networks::NetworkPeers {
        networks::NetworkPeers(self.inner.clone())
    }

    /// A network of `tenant` by name or id (another tenant's is not found).
    pub(crate) fn network_record(&self, tenant: &str, name_or_id: &str) -> Result<Network> {
        self.inner
            .store
            .find_network(tenant, name_or_id)?
            .ok_or_else(|| Error::NetworkNotFound(name_or_id.to_string()))
    }

    /// Create a network for `tenant`, on `subnet` or the first free /24 of
    /// [`networks::DEFAULT_POOL`].
    pub async fn create_network(
        &self,
        tenant: &str,
        name: &str,
        subnet: Option<&str>,
    ) -> Result<NetworkView> {
        networks::validate_name(name)?;
        let asked = subnet.map(networks::validate_subnet).transpose()?;
        // One at a time: two creates must not pick the same default subnet.
        let _g = self.inner.quota_lock.lock().await;
        if self.inner.store.find_network(tenant, name)?.is_some() {
            return Err(Error::NetworkNameTaken(name.to_string()));
        }
        let subnet = match asked {
            Some(s) => s,
            None => networks::pick_subnet(&self.inner.store.list_networks(None)?)?,
        };
        let id = new_id();
        let n = Network {
            bridge: private_net::bridge_name(&id),
            id,
            tenant: tenant.to_string(),
            name: name.to_string(),
            subnet,
            created_at: self.inner.clock.now_ms(),
        };
        self.inner.store.insert_network(&n)?;
        networks::view(&self.inner, &n)
    }

    /// The tenant's networks with their members, by name.
    pub fn networks(&self, tenant: &str) -> Result<Vec<NetworkView>> {
        self.inner
            .store
            .list_networks(Some(tenant))?
            .iter()
            .map(|n| networks::view(&self.inner, n))
            .collect()
    }

    /// One network with its members.
    pub fn network(&self, tenant: &str, name_or_id: &str) -> Result<NetworkView> {
        networks::view(&self.inner, &self.network_record(tenant, name_or_id)?)
    }

    /// Remove a network without members, and its bridge.
    pub async fn delete_network(&self, tenant: &str, name_or_id: &str) -> Result<()> {
        let _g = self.inner.quota_lock.lock().await;
        let n = self.network_record(tenant, name_or_id)?;
        let v = networks::view(&self.inner, &n)?;
        if !v.members.is_empty() {
            let names: Vec<&str> = v.members.iter().map(|m| m.sandbox.as_str()).collect();
            return Err(Error::Conflict(format!(
                "network {} still has {} member(s): {}; delete those sandboxes, or stop them \
                 and take them off the network, then remove it",
                n.name,
                names.len(),
                names.join(", "),
            )));
        }
        // The bridge first: a crash in between leaves a record whose bridge
        // is made again on demand, never a bridge without a record.
        let bridge = n.bridge.clone();
        blocking(move || private_net::remove_bridge(&bridge)).await?;
        if !self.inner.store.delete_network(&n.id)? {
            return Err(Error::Conflict(format!(
                "network {} gained a member meanwhile; try again",
                n.name
            )));
        }
        Ok(())
    }

    /// The networks `names` name for a sandbox: each exists for `tenant`,
    /// no duplicates, no overlapping subnets, at most
    /// [`networks::MAX_PER_SANDBOX`].
    pub(crate) fn resolve_networks(&self, tenant: &str, names: &[String]) -> Result<Vec<Network>> {
        if names.len() > networks::MAX_PER_SANDBOX {
            return Err(Error::invalid(
                "networks",
                format!(
                    "{} networks asked for; a sandbox can be on at most {}",
                    names.len(),
                    networks::MAX_PER_SANDBOX
                ),
            ));
        }
        let mut out: Vec<Network> = Vec::new();
        for name in names {
            let n = self.network_record(tenant, name)?;
            if out.iter().any(|o| o.id == n.id) {
                return Err(Error::invalid(
                    "networks",
                    format!("network {} is named twice", n.name),
                ));
            }
            if let Some(o) = out
                .iter()
                .find(|o| networks::subnets_overlap(&o.subnet, &n.subnet))
            {
                return Err(Error::invalid(
                    "networks",
                    format!(
                        "networks {} ({}) and {} ({}) overlap: a sandbox cannot be on both",
                        o.name, o.subnet, n.name, n.subnet
                    ),
                ));
            }
            out.push(n);
        }
        Ok(out)
    }

    /// Put a sandbox that is not running on a network: it gets its address
    /// now and its interface at its next start.
    pub async fn connect_network(
        &self,
        tenant: &str,
        id_or_name: &str,
        network: &str,
    ) -> Result<Sandbox> {
        self.change_membership(tenant, id_or_name, network, true)
            .await
    }

    /// Take a sandbox that is not running off a network.
    pub async fn disconnect_network(
        &self,
        tenant: &str,
        id_or_name: &str,
        network: &str,
    ) -> Result<Sandbox> {
        self.change_membership(tenant, id_or_name, network, false)
            .await
    }

    async fn change_membership(
        &self,
        tenant: &str,
        id_or_name: &str,
        network: &str,
        join: bool,
    ) -> Result<Sandbox> {
        let rec = self.record(tenant, id_or_name)?;
        let lock = self.inner.lock_for(&rec.id);
        let n = {
            let _g = lock.lock().await;
            let rec = self.record(tenant, &rec.id)?;
            if !matches!(rec.state, State::Stopped | State::Archived | State::Error) {
                return Err(Error::Conflict(format!(
                    "sandbox {} is {}; its networks change only while it is stopped: stop it \
                     first, then start it again",
                    rec.name,
                    rec.state.as_str(),
                )));
            }
            let n = self.network_record(tenant, network)?;
            let on: Vec<Network> = self
                .inner
                .store
                .networks_of(&rec.id)?
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            if join {
                if on.iter().any(|o| o.id == n.id) {
                    return Err(Error::Conflict(format!(
                        "sandbox {} is already on network {}",
                        rec.name, n.name
                    )));
                }
                let mut names: Vec<String> = on.iter().map(|o| o.name.clone()).collect();
                names.push(n.name.clone());
                self.resolve_networks(tenant, &names)?;
                self.join(&n, &rec.id)?;
                self.inner.store.add_event(
                    &rec.id,
                    "request",
                    &format!("joined network {}", n.name),
                )?;
            } else {
                if !self.inner.store.leave_network(&n.id, &rec.id)? {
                    return Err(Error::Conflict(format!(
                        "sandbox {} is not on network {}",
                        rec.name, n.name
                    )));
                }
                self.inner.store.add_event(
                    &rec.id,
                    "request",
                    &format!("left network {}", n.name),
                )?;
            }
            n
        };
        networks::refresh_members(&self.inner, &[n.id]).await;
        self.get_by_id(&rec.id)
    }

    /// Make `sandbox_id` a member of `n` (an address from the store).
    pub(crate) fn join(&self, n: &Network, sandbox_id: &str) -> Result<()> {
        match self.inner.store.join_network(n, sandbox_id) {
            Ok(_) => Ok(()),
            Err(dwell_store::Error::Exhausted(m)) => Err(Error::Conflict(m)),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dwell_dns::PeerNames;

    use crate::error::Error;
    use crate::reconcile::tests::{controller, creating, Idle};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peers_resolve_within_their_networks_and_tenants_only() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = controller(dir.path(), Arc::new(Idle::default()));
        let team = ctl.create_network("t", "team", None).await.unwrap();
        ctl.create_network("t", "other", None).await.unwrap();
        // Another tenant: the same name, even the same subnet.
        ctl.create_network("u", "team", Some(&team.subnet))
            .await
            .unwrap();
        let err = ctl.create_network("t", "team", None).await.unwrap_err();
        assert!(matches!(err, Error::NetworkNameTaken(_)), "{err}");
        assert_eq!(err.status(), 409);
        let err = ctl.network("u", "other").unwrap_err();
        assert!(matches!(err, Error::NetworkNotFound(_)), "{err}");
        assert_eq!(err.status(), 404);

        for (id, tenant, name, net) in [
            ("sbdb", "t", "db", "team"),
            ("sbapp", "t", "app", "team"),
            ("sbspy", "t", "spy", "other"),
            ("sbx", "u", "x", "team"),
        ] {
            let mut rec = creating(&ctl, id);
            rec.tenant = tenant.into();
            rec.name = name.into();
            ctl.inner.store.insert_sandbox(&rec).unwrap();
            let n = ctl.network_record(tenant, net).unwrap();
            ctl.join(&n, id).unwrap();
        }
        let peers = ctl.peer_names();
        let db = ctl.network("t", "team").unwrap().members[0].address.clone();
        let db: std::net::IpAddr = db.parse().unwrap();
        assert_eq!(peers.resolve("sbapp", "db"), Some(db));
        assert_eq!(peers.resolve("sbapp", "db.team"), Some(db));
        assert_eq!(peers.resolve("sbapp", "DB.Team."), Some(db));
        assert_eq!(peers.resolve("sbapp", "db.other"), None);
        assert_eq!(peers.resolve("sbspy", "db"), None, "another network");
        assert_eq!(peers.resolve("sbx", "db"), None, "another tenant");
        assert_eq!(peers.resolve("sbx", "app.team"), None, "another tenant");
        assert!(peers.resolve("sbx", "x").is_some());

        // Members hold a network; joining twice the same subnet is refused.
        let err = ctl.delete_network("t", "team").await.unwrap_err();
        assert!(err.to_string().contains("2 member(s): db, app"), "{err}");
        let err = ctl
            .resolve_networks("t", &["team".into(), "team".into()])
            .unwrap_err();
        assert_eq!(err.status(), 400);
        ctl.inner.store.leave_all_networks("sbspy").unwrap();
        ctl.delete_network("t", "other").await.unwrap();
        assert!(ctl.network("t", "other").is_err());
    }
}
