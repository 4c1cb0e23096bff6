//! Tenant private networks and their members. A network has a name unique
//! within its tenant, an IPv4 subnet and the name of the Linux bridge that
//! carries it on the host; a member is a sandbox with the address it got
//! when it joined. The address is allocated here, in one transaction, as
//! the lowest free host address from `.2` on (`.1` stays free for a
//! daemon-side service address), and kept until the sandbox leaves: its
//! peers' names stay valid across stop, start, pause and hibernation.

use std::net::Ipv4Addr;

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Store};

/// One private network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// `a.b.c.d/len`, the network address with its prefix length.
    pub subnet: String,
    /// The host bridge's interface name.
    pub bridge: String,
    pub created_at: i64,
}

/// A sandbox on a network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub network_id: String,
    pub sandbox_id: String,
    /// Its IPv4 address on the network (without prefix).
    pub address: String,
    pub joined_at: i64,
}

const COLUMNS: &str = "id, tenant, name, subnet, bridge, created_at";

fn network_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Network> {
    Ok(Network {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        subnet: r.get(3)?,
        bridge: r.get(4)?,
        created_at: r.get(5)?,
    })
}

fn member_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Member> {
    Ok(Member {
        network_id: r.get(0)?,
        sandbox_id: r.get(1)?,
        address: r.get(2)?,
        joined_at: r.get(3)?,
    })
}

/// The network address and prefix length of `a.b.c.d/len`.
pub fn parse_subnet(subnet: &str) -> Option<(u32, u8)> {
    let (addr, len) = subnet.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(addr) & mask, len))
}

impl Store {
    /// Record a new network; a name its tenant already uses is refused.
    pub fn insert_network(&self, n: &Network) -> Result<()> {
        let conn = self.conn();
        let r = conn.execute(
            &format!("INSERT INTO networks ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6)"),
            params![n.id, n.tenant, n.name, n.subnet, n.bridge, n.created_at],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::NetworkNameTaken(n.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The network of `tenant` with this name or id.
    pub fn find_network(&self, tenant: &str, name_or_id: &str) -> Result<Option<Network>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM networks WHERE tenant = ?1 AND (name = ?2 OR id = ?2) \
                     ORDER BY name = ?2 DESC LIMIT 1"
                ),
                params![tenant, name_or_id],
                network_row,
            )
            .optional()?)
    }

    /// A network by id, whatever its tenant.
    pub fn get_network(&self, id: &str) -> Result<Option<Network>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM networks WHERE id = ?1"),
                params![id],
                network_row,
            )
            .optional()?)
    }

    /// The networks of `tenant` (of every tenant with None), by name.
    pub fn list_networks(&self, tenant: Option<&str>) -> Result<Vec<Network>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM networks WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, name"
        ))?;
        let rows = stmt.query_map(params![tenant], network_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Remove a network that has no members; false when it has some (or
    /// does not exist).
    pub fn delete_network(&self, id: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let members: i64 = tx.query_row(
            "SELECT COUNT(*) FROM network_members WHERE network_id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        if members > 0 {
            return Ok(false);
        }
        let n = tx.execute("DELETE FROM networks WHERE id = ?1", params![id])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Make `sandbox_id` a member of `network` with the lowest free
    /// address (or return its membership when it already is one).
    pub fn join_network(&self, network: &Network, sandbox_id: &str) -> Result<Member> {
        let (base, len) = parse_subnet(&network.subnet).ok_or_else(|| {
            Error::Corrupt(format!(
                "network {}: subnet {:?}",
                network.id, network.subnet
            ))
        })?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let held = tx
            .query_row(
                "SELECT network_id, sandbox_id, address, joined_at FROM network_members \
                 WHERE network_id = ?1 AND sandbox_id = ?2",
                params![network.id, sandbox_id],
                member_row,
            )
            .optional()?;
        if let Some(m) = held {
            return Ok(m);
        }
        let used: std::collections::HashSet<u32> = {
            let mut stmt =
                tx.prepare("SELECT address FROM network_members WHERE network_id = ?1")?;
            let rows = stmt.query_map(params![network.id], |r| r.get::<_, String>(0))?;
            rows.filter_map(|a| a.ok()?.parse::<Ipv4Addr>().ok().map(u32::from))
                .collect()
        };
        let size: u64 = 1u64 << (32 - u32::from(len));
        // .0 is the network, .1 the daemon's, the last the broadcast.
        let free = (2..size.saturating_sub(1))
            .map(|i| base + i as u32)
            .find(|a| !used.contains(a))
            .ok_or_else(|| {
                Error::Exhausted(format!(
                    "network {} ({}) has no free address left; remove members or create a \
                     network with a larger --subnet",
                    network.name, network.subnet
                ))
            })?;
        let m = Member {
            network_id: network.id.clone(),
            sandbox_id: sandbox_id.to_string(),
            address: Ipv4Addr::from(free).to_string(),
            joined_at: self.now(),
        };
        tx.execute(
            "INSERT INTO network_members (network_id, sandbox_id, address, joined_at) \
             VALUES (?1, ?2, ?3, ?4)",
            params![m.network_id, m.sandbox_id, m.address, m.joined_at],
        )?;
        tx.commit()?;
        Ok(m)
    }

    /// Take `sandbox_id` off `network_id`; false when it was no member.
    pub fn leave_network(&self, network_id: &str, sandbox_id: &str) -> Result<bool> {
        let n = self.conn().execute(
            "DELETE FROM network_members WHERE network_id = ?1 AND sandbox_id = ?2",
            params![network_id, sandbox_id],
        )?;
        Ok(n > 0)
    }

    /// Take `sandbox_id` off every network (it is deleted).
    pub fn leave_all_networks(&self, sandbox_id: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM network_members WHERE sandbox_id = ?1",
            params![sandbox_id],
        )?;
        Ok(())
    }

    /// The members of a network, by address.
    pub fn network_members(&self, network_id: &str) -> Result<Vec<Member>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT network_id, sandbox_id, address, joined_at FROM network_members \
             WHERE network_id = ?1 ORDER BY joined_at, address",
        )?;
        let rows = stmt.query_map(params![network_id], member_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The networks a sandbox is on, with its membership, in the order it
    /// joined them.
    pub fn networks_of(&self, sandbox_id: &str) -> Result<Vec<(Network, Member)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT n.id, n.tenant, n.name, n.subnet, n.bridge, n.created_at, \
             m.network_id, m.sandbox_id, m.address, m.joined_at \
             FROM network_members m JOIN networks n ON n.id = m.network_id \
             WHERE m.sandbox_id = ?1 ORDER BY m.joined_at, n.name",
        )?;
        let rows = stmt.query_map(params![sandbox_id], |r| {
            Ok((
                network_row(r)?,
                Member {
                    network_id: r.get(6)?,
                    sandbox_id: r.get(7)?,
                    address: r.get(8)?,
                    joined_at: r.get(9)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(id: &str, tenant: &str, name: &str, subnet: &str) -> Network {
        Network {
            id: id.into(),
            tenant: tenant.into(),
            name: name.into(),
            subnet: subnet.into(),
            bridge: format!("br-{id}"),
            created_at: 0,
        }
    }

    #[test]
    fn names_are_unique_per_tenant_and_lookups_are_tenant_scoped() {
        let s = Store::in_memory().unwrap();
        s.insert_network(&net("n1", "a", "team", "10.1.0.0/24"))
            .unwrap();
        s.insert_network(&net("n2", "b", "team", "10.1.0.0/24"))
            .unwrap();
        let err = s
            .insert_network(&net("n3", "a", "team", "10.2.0.0/24"))
            .unwrap_err();
        assert!(
            matches!(err, Error::NetworkNameTaken(ref n) if n == "team"),
            "{err}"
        );
        assert_eq!(s.find_network("a", "team").unwrap().unwrap().id, "n1");
        assert_eq!(s.find_network("b", "n2").unwrap().unwrap().name, "team");
        assert!(s.find_network("a", "n2").unwrap().is_none());
        assert_eq!(s.list_networks(Some("a")).unwrap().len(), 1);
        assert_eq!(s.list_networks(None).unwrap().len(), 2);
    }

    #[test]
    fn addresses_are_allocated_once_reused_after_leaving_and_bounded() {
        let s = Store::in_memory().unwrap();
        let n = net("n1", "a", "team", "10.9.0.0/29");
        s.insert_network(&n).unwrap();
        assert_eq!(s.join_network(&n, "x").unwrap().address, "10.9.0.2");
        assert_eq!(s.join_network(&n, "y").unwrap().address, "10.9.0.3");
        // Joining again keeps the address.
        assert_eq!(s.join_network(&n, "x").unwrap().address, "10.9.0.2");
        assert!(s.leave_network("n1", "x").unwrap());
        assert_eq!(s.join_network(&n, "z").unwrap().address, "10.9.0.2");
        for id in ["p", "q", "r"] {
            s.join_network(&n, id).unwrap();
        }
        // A /29 has .2 to .6 for members.
        let err = s.join_network(&n, "full").unwrap_err().to_string();
        assert!(err.contains("no free address"), "{err}");
        assert_eq!(s.networks_of("y").unwrap()[0].0.name, "team");
        assert!(!s.delete_network("n1").unwrap(), "members hold it");
        for id in ["y", "z", "p", "q", "r"] {
            s.leave_all_networks(id).unwrap();
        }
        assert!(s.network_members("n1").unwrap().is_empty());
        assert!(s.delete_network("n1").unwrap());
        assert!(s.get_network("n1").unwrap().is_none());
    }
}
