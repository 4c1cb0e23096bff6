//! Tenant private networks and their members. A network has a name unique
//! within its tenant, an IPv4 subnet and the name of the Linux bridge that
//! carries it on the host; a member is a sandbox with the address it got
//! when it joined. The address is allocated here, in one transaction, as
//! the lowest free host address from `.2` on (`.1` stays free for a
//! daemon-side service address), and kept until the sandbox leaves: its
//! peers' names stay valid across stop, start, pause and hibernation.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::db::{Conn, Row};
use crate::{args, Error, Result, Store};

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

fn network_row(r: &Row) -> Result<Network> {
    Ok(Network {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        subnet: r.get(3)?,
        bridge: r.get(4)?,
        created_at: r.get(5)?,
    })
}

/// A member from the columns `network_id, sandbox_id, address,
/// joined_at` starting at `at`.
fn member_at(r: &Row, at: usize) -> Result<Member> {
    Ok(Member {
        network_id: r.get(at)?,
        sandbox_id: r.get(at + 1)?,
        address: r.get(at + 2)?,
        joined_at: r.get(at + 3)?,
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
        let r = self.db()?.execute(
            &format!("INSERT INTO networks ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6)"),
            args![n.id, n.tenant, n.name, n.subnet, n.bridge, n.created_at],
        );
        match r {
            Ok(_) => Ok(()),
            Err(Error::Constraint(_)) => Err(Error::NetworkNameTaken(n.name.clone())),
            Err(e) => Err(e),
        }
    }

    /// The network of `tenant` with this name or id.
    pub fn find_network(&self, tenant: &str, name_or_id: &str) -> Result<Option<Network>> {
        self.db()?
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM networks WHERE tenant = ?1 AND (name = ?2 OR id = ?2) \
                     ORDER BY CASE WHEN name = ?2 THEN 0 ELSE 1 END LIMIT 1"
                ),
                args![tenant, name_or_id],
            )?
            .map(|r| network_row(&r))
            .transpose()
    }

    /// A network by id, whatever its tenant.
    pub fn get_network(&self, id: &str) -> Result<Option<Network>> {
        self.db()?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM networks WHERE id = ?1"),
                args![id],
            )?
            .map(|r| network_row(&r))
            .transpose()
    }

    /// The networks of `tenant` (of every tenant with None), by name.
    pub fn list_networks(&self, tenant: Option<&str>) -> Result<Vec<Network>> {
        self.db()?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM networks \
                     WHERE CAST(?1 AS TEXT) IS NULL OR tenant = ?1 ORDER BY tenant, name"
                ),
                args![tenant],
            )?
            .iter()
            .map(network_row)
            .collect()
    }

    /// Remove a network that has no members; false when it has some (or
    /// does not exist).
    pub fn delete_network(&self, id: &str) -> Result<bool> {
        // One statement: no member can join between the check and the
        // delete. A join committed meanwhile on another node (PostgreSQL)
        // makes the members' foreign key refuse it: members hold it too.
        let r = self.db()?.execute(
            "DELETE FROM networks WHERE id = ?1 \
             AND NOT EXISTS (SELECT 1 FROM network_members WHERE network_id = ?1)",
            args![id],
        );
        match r {
            Ok(n) => Ok(n > 0),
            Err(Error::Constraint(_)) => Ok(false),
            Err(e) => Err(e),
        }
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
        let mut tx = self.tx()?;
        // A write to the network's row first: joins of one network wait for
        // each other (on PostgreSQL, nodes of a cluster would otherwise pick
        // the same free address at once; on SQLite it takes the write lock),
        // and a network removed meanwhile is told apart.
        let locked = tx.execute(
            "UPDATE networks SET created_at = created_at WHERE id = ?1",
            args![network.id],
        )?;
        if locked == 0 {
            return Err(Error::Constraint(format!(
                "network {} ({}) no longer exists (removed while the sandbox joined it); \
                 create it again or leave it out",
                network.name, network.id
            )));
        }
        let held = tx
            .query_opt(
                "SELECT network_id, sandbox_id, address, joined_at FROM network_members \
                 WHERE network_id = ?1 AND sandbox_id = ?2",
                args![network.id, sandbox_id],
            )?
            .map(|r| member_at(&r, 0))
            .transpose()?;
        if let Some(m) = held {
            return Ok(m);
        }
        let used: std::collections::HashSet<u32> = tx
            .query(
                "SELECT address FROM network_members WHERE network_id = ?1",
                args![network.id],
            )?
            .iter()
            .filter_map(|r| r.get::<String>(0).ok()?.parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .collect();
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
            args![m.network_id, m.sandbox_id, m.address, m.joined_at],
        )?;
        tx.commit()?;
        Ok(m)
    }

    /// Take `sandbox_id` off `network_id`; false when it was no member.
    pub fn leave_network(&self, network_id: &str, sandbox_id: &str) -> Result<bool> {
        let n = self.db()?.execute(
            "DELETE FROM network_members WHERE network_id = ?1 AND sandbox_id = ?2",
            args![network_id, sandbox_id],
        )?;
        Ok(n > 0)
    }

    /// Take `sandbox_id` off every network (it is deleted).
    pub fn leave_all_networks(&self, sandbox_id: &str) -> Result<()> {
        self.db()?.execute(
            "DELETE FROM network_members WHERE sandbox_id = ?1",
            args![sandbox_id],
        )?;
        Ok(())
    }

    /// The members of a network, by address.
    pub fn network_members(&self, network_id: &str) -> Result<Vec<Member>> {
        self.db()?
            .query(
                "SELECT network_id, sandbox_id, address, joined_at FROM network_members \
                 WHERE network_id = ?1 ORDER BY joined_at, address",
                args![network_id],
            )?
            .iter()
            .map(|r| member_at(r, 0))
            .collect()
    }

    /// The networks a sandbox is on, with its membership, in the order it
    /// joined them.
    pub fn networks_of(&self, sandbox_id: &str) -> Result<Vec<(Network, Member)>> {
        self.db()?
            .query(
                "SELECT n.id, n.tenant, n.name, n.subnet, n.bridge, n.created_at, \
                 m.network_id, m.sandbox_id, m.address, m.joined_at \
                 FROM network_members m JOIN networks n ON n.id = m.network_id \
                 WHERE m.sandbox_id = ?1 ORDER BY m.joined_at, n.name",
                args![sandbox_id],
            )?
            .iter()
            .map(|r| Ok((network_row(r)?, member_at(r, 6)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

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

    /// `s` with a clock that moves 1 ms each time it is read.
    fn ticking(s: Store) -> Store {
        let t = Arc::new(AtomicI64::new(1_000));
        s.with_clock(move || t.fetch_add(1, Ordering::SeqCst))
    }

    #[test]
    fn names_are_unique_per_tenant_and_lookups_are_tenant_scoped() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.insert_network(&net("n1", "a", "team", "10.1.0.0/24"))
                .unwrap();
            s.insert_network(&net("n2", "b", "team", "10.1.0.0/24"))
                .unwrap();
            let err = s
                .insert_network(&net("n3", "a", "team", "10.2.0.0/24"))
                .unwrap_err();
            assert!(
                matches!(err, Error::NetworkNameTaken(ref n) if n == "team"),
                "{e}: {err}"
            );
            assert_eq!(
                s.find_network("a", "team").unwrap().unwrap().id,
                "n1",
                "{e}"
            );
            assert_eq!(
                s.find_network("b", "n2").unwrap().unwrap().name,
                "team",
                "{e}"
            );
            assert!(s.find_network("a", "n2").unwrap().is_none(), "{e}");
            assert_eq!(s.list_networks(Some("a")).unwrap().len(), 1, "{e}");
            assert_eq!(s.list_networks(None).unwrap().len(), 2, "{e}");
            assert_eq!(
                s.get_network("n2").unwrap().unwrap(),
                net("n2", "b", "team", "10.1.0.0/24"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_name_wins_over_an_id_and_lists_are_ordered_by_tenant_and_name() {
        for s in crate::testing::stores() {
            let e = s.engine();
            // "n9" is one network's id and another's name, in one tenant.
            s.insert_network(&net("n9", "a", "zeta", "10.1.0.0/24"))
                .unwrap();
            s.insert_network(&net("n1", "a", "n9", "10.2.0.0/24"))
                .unwrap();
            s.insert_network(&net("n2", "a", "alpha", "10.3.0.0/24"))
                .unwrap();
            s.insert_network(&net("n3", "0", "mid", "10.4.0.0/24"))
                .unwrap();
            assert_eq!(s.find_network("a", "n9").unwrap().unwrap().id, "n1", "{e}");
            assert_eq!(
                s.find_network("a", "zeta").unwrap().unwrap().id,
                "n9",
                "{e}"
            );
            let names = |t| -> Vec<String> {
                s.list_networks(t)
                    .unwrap()
                    .into_iter()
                    .map(|n| format!("{}/{}", n.tenant, n.name))
                    .collect()
            };
            assert_eq!(names(None), ["0/mid", "a/alpha", "a/n9", "a/zeta"], "{e}");
            assert_eq!(names(Some("a")), ["a/alpha", "a/n9", "a/zeta"], "{e}");
            assert!(names(Some("nobody")).is_empty(), "{e}");
        }
    }

    #[test]
    fn addresses_are_allocated_once_reused_after_leaving_and_bounded() {
        for s in crate::testing::stores() {
            let e = s.engine();
            let n = net("n1", "a", "team", "10.9.0.0/29");
            s.insert_network(&n).unwrap();
            assert_eq!(s.join_network(&n, "x").unwrap().address, "10.9.0.2", "{e}");
            assert_eq!(s.join_network(&n, "y").unwrap().address, "10.9.0.3", "{e}");
            // Joining again keeps the address.
            assert_eq!(s.join_network(&n, "x").unwrap().address, "10.9.0.2", "{e}");
            assert!(s.leave_network("n1", "x").unwrap(), "{e}");
            assert!(!s.leave_network("n1", "x").unwrap(), "{e}");
            assert_eq!(s.join_network(&n, "z").unwrap().address, "10.9.0.2", "{e}");
            for id in ["p", "q", "r"] {
                s.join_network(&n, id).unwrap();
            }
            // A /29 has .2 to .6 for members.
            let err = s.join_network(&n, "full").unwrap_err().to_string();
            assert!(err.contains("no free address"), "{e}: {err}");
            assert_eq!(s.networks_of("y").unwrap()[0].0.name, "team", "{e}");
            assert!(!s.delete_network("n1").unwrap(), "{e}: members hold it");
            for id in ["y", "z", "p", "q", "r"] {
                s.leave_all_networks(id).unwrap();
            }
            assert!(s.network_members("n1").unwrap().is_empty(), "{e}");
            assert!(s.delete_network("n1").unwrap(), "{e}");
            assert!(!s.delete_network("n1").unwrap(), "{e}: gone already");
            assert!(s.get_network("n1").unwrap().is_none(), "{e}");
            // Joining a network removed meanwhile says so, and adds nothing.
            let err = s.join_network(&n, "late").unwrap_err().to_string();
            assert!(err.contains("no longer exists"), "{e}: {err}");
            assert!(s.networks_of("late").unwrap().is_empty(), "{e}");
        }
    }

    #[test]
    fn memberships_are_listed_in_the_order_they_were_made() {
        for s in crate::testing::stores() {
            let s = ticking(s);
            let e = s.engine();
            let b = net("nb", "a", "b-net", "10.2.0.0/24");
            let a = net("na", "a", "a-net", "10.1.0.0/24");
            s.insert_network(&b).unwrap();
            s.insert_network(&a).unwrap();
            let first = s.join_network(&b, "x").unwrap();
            let second = s.join_network(&a, "x").unwrap();
            s.join_network(&b, "y").unwrap();
            assert!(first.joined_at < second.joined_at, "{e}");
            let of: Vec<(String, Member)> = s
                .networks_of("x")
                .unwrap()
                .into_iter()
                .map(|(n, m)| (n.name, m))
                .collect();
            assert_eq!(
                of,
                [
                    ("b-net".to_string(), first.clone()),
                    ("a-net".to_string(), second)
                ],
                "{e}"
            );
            let members: Vec<String> = s
                .network_members("nb")
                .unwrap()
                .into_iter()
                .map(|m| format!("{} {}", m.sandbox_id, m.address))
                .collect();
            assert_eq!(members, ["x 10.2.0.2", "y 10.2.0.3"], "{e}");
            assert_eq!(s.network_members("nb").unwrap()[0], first, "{e}");
        }
    }

    #[test]
    fn joins_at_once_get_distinct_addresses() {
        for s in crate::testing::stores() {
            let e = s.engine();
            let n = net("n1", "a", "team", "10.7.0.0/28");
            s.insert_network(&n).unwrap();
            // 12 joins from 6 threads, with the 13 addresses of a /28.
            let got: Vec<Member> = std::thread::scope(|scope| {
                let joins: Vec<_> = (0..6)
                    .map(|t| {
                        let (s, n) = (&s, &n);
                        scope.spawn(move || {
                            (0..2)
                                .map(|i| s.join_network(n, &format!("sb-{t}-{i}")).unwrap())
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                joins.into_iter().flat_map(|j| j.join().unwrap()).collect()
            });
            let mut addrs: Vec<String> = got.iter().map(|m| m.address.clone()).collect();
            addrs.sort();
            addrs.dedup();
            assert_eq!(addrs.len(), 12, "{e}: {got:?}");
            assert_eq!(s.network_members("n1").unwrap().len(), 12, "{e}");
        }
    }
}
