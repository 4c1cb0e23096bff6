//! The nodes of a cluster and their leases.
//!
//! Each daemon of a cluster registers itself ([`Store::register_node`]:
//! where other nodes reach it, what it has, its labels) and renews a lease
//! with heartbeats ([`Store::heartbeat_node`]). Registering bumps the
//! node's `epoch`; a heartbeat counts only for the epoch that made it, so
//! a daemon that was replaced under the same name, or whose lease expired
//! and was declared lost ([`Store::expire_nodes`]), learns it at its next
//! heartbeat. Which node owns a sandbox is the sandbox's `node` column.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::db::{Conn, Row};
use crate::{args, Error, Result, Store};

/// A node's state as the cluster sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Serving; new sandboxes may be placed on it.
    Up,
    /// Serving what it owns; new sandboxes avoid it, and `drain` moves its
    /// sandboxes off.
    Draining,
    /// Its lease expired: declared lost by another node. It must fence
    /// itself (stop stale copies) when it comes back.
    Lost,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Draining => "draining",
            NodeState::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<NodeState> {
        Some(match s {
            "up" => NodeState::Up,
            "draining" => NodeState::Draining,
            "lost" => NodeState::Lost,
            _ => return None,
        })
    }
}

/// What a node has and holds (reported at each heartbeat).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Sandboxes it owns that hold resources (not stopped, archived or
    /// deleted).
    pub sandboxes: u64,
    pub allocated_vcpus: f64,
    pub allocated_memory: u64,
    pub allocated_disk: u64,
}

/// One node as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// `host:port` where other nodes reach its node listener.
    pub advertise: String,
    pub labels: BTreeMap<String, String>,
    pub vcpus: f64,
    pub memory: u64,
    pub disk: u64,
    pub load: NodeLoad,
    pub state: NodeState,
    /// Grows at each registration: the fencing token of this incarnation.
    pub epoch: i64,
    /// The dwell version it runs.
    pub version: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub lease_until: i64,
}

const COLUMNS: &str = "name, advertise, labels, vcpus, memory, disk, allocated_vcpus, \
     allocated_memory, allocated_disk, sandboxes, state, epoch, version, started_at, \
     heartbeat_at, lease_until";

fn from_row(r: &Row) -> Result<NodeRecord> {
    let name: String = r.get(0)?;
    let labels: String = r.get(2)?;
    let state: String = r.get(10)?;
    Ok(NodeRecord {
        labels: serde_json::from_str(&labels)
            .map_err(|e| Error::Corrupt(format!("labels of node {name}: {e}")))?,
        state: NodeState::parse(&state)
            .ok_or_else(|| Error::Corrupt(format!("node {name} has state {state:?}")))?,
        advertise: r.get(1)?,
        vcpus: r.get(3)?,
        memory: r.get(4)?,
        disk: r.get(5)?,
        load: NodeLoad {
            allocated_vcpus: r.get(6)?,
            allocated_memory: r.get(7)?,
            allocated_disk: r.get(8)?,
            sandboxes: r.get(9)?,
        },
        epoch: r.get(11)?,
        version: r.get(12)?,
        started_at: r.get(13)?,
        heartbeat_at: r.get(14)?,
        lease_until: r.get(15)?,
        name,
    })
}

/// What a registration found of the node's previous incarnation.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// This incarnation's epoch (for heartbeats).
    pub epoch: i64,
    /// The state before: `Lost` (or an expired lease) means the node must
    /// fence itself before serving.
    pub previous: Option<(NodeState, i64)>,
}

impl Store {
    /// Registers (or re-registers) `node` with a lease until
    /// `lease_until`: a new epoch; a draining node stays draining, a lost
    /// or up one comes back up. `node.epoch`, `state` and the times are
    /// set here.
    pub fn register_node(&self, node: &NodeRecord, lease_until: i64) -> Result<Registration> {
        let now = self.now();
        let labels = serde_json::to_string(&node.labels)
            .map_err(|e| Error::Corrupt(format!("labels: {e}")))?;
        let mut tx = self.tx()?;
        let before = tx.query_opt(
            "SELECT state, lease_until, epoch FROM nodes WHERE name = ?1",
            args![node.name],
        )?;
        let previous = match &before {
            Some(r) => {
                let s: String = r.get(0)?;
                Some((NodeState::parse(&s).unwrap_or(NodeState::Lost), r.get(1)?))
            }
            None => None,
        };
        let epoch = match &before {
            Some(r) => r.get::<i64>(2)? + 1,
            None => 1,
        };
        let state = match previous {
            Some((NodeState::Draining, _)) => NodeState::Draining,
            _ => NodeState::Up,
        };
        tx.execute(
            &format!(
                "INSERT INTO nodes ({COLUMNS}) VALUES \
                 (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16) \
                 ON CONFLICT (name) DO UPDATE SET advertise = ?2, labels = ?3, vcpus = ?4, \
                 memory = ?5, disk = ?6, allocated_vcpus = ?7, allocated_memory = ?8, \
                 allocated_disk = ?9, sandboxes = ?10, state = ?11, epoch = ?12, version = ?13, \
                 started_at = ?14, heartbeat_at = ?15, lease_until = ?16"
            ),
            args![
                node.name,
                node.advertise,
                labels,
                node.vcpus,
                node.memory,
                node.disk,
                node.load.allocated_vcpus,
                node.load.allocated_memory,
                node.load.allocated_disk,
                node.load.sandboxes,
                state.as_str(),
                epoch,
                node.version,
                now,
                now,
                lease_until
            ],
        )?;
        tx.commit()?;
        Ok(Registration { epoch, previous })
    }

    /// Renews `name`'s lease for incarnation `epoch` and records its load.
    /// False when the lease is no longer this incarnation's: another
    /// daemon registered the name, or the node was declared lost.
    pub fn heartbeat_node(
        &self,
        name: &str,
        epoch: i64,
        lease_until: i64,
        load: &NodeLoad,
    ) -> Result<bool> {
        let n = self.db()?.execute(
            "UPDATE nodes SET heartbeat_at = ?3, lease_until = ?4, allocated_vcpus = ?5, \
             allocated_memory = ?6, allocated_disk = ?7, sandboxes = ?8 \
             WHERE name = ?1 AND epoch = ?2 AND state != 'lost'",
            args![
                name,
                epoch,
                self.now(),
                lease_until,
                load.allocated_vcpus,
                load.allocated_memory,
                load.allocated_disk,
                load.sandboxes
            ],
        )?;
        Ok(n == 1)
    }

    /// Every node, by name.
    pub fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.db()?
            .query(
                &format!("SELECT {COLUMNS} FROM nodes ORDER BY name"),
                args![],
            )?
            .iter()
            .map(from_row)
            .collect()
    }

    pub fn get_node(&self, name: &str) -> Result<Option<NodeRecord>> {
        self.db()?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM nodes WHERE name = ?1"),
                args![name],
            )?
            .map(|r| from_row(&r))
            .transpose()
    }

    /// Sets a live node `up` or `draining`; false when there is no such
    /// node or it is lost (a lost node comes back by registering).
    pub fn set_node_state(&self, name: &str, state: NodeState) -> Result<bool> {
        let n = self.db()?.execute(
            "UPDATE nodes SET state = ?2 WHERE name = ?1 AND state != 'lost'",
            args![name, state.as_str()],
        )?;
        Ok(n == 1)
    }

    /// Declares lost every live node whose lease ended before `now`, in
    /// one statement (of nodes racing to do it, each lost node is claimed
    /// by one); the names of those it declared.
    pub fn expire_nodes(&self, now: i64) -> Result<Vec<String>> {
        self.db()?
            .query(
                "UPDATE nodes SET state = 'lost' WHERE state != 'lost' AND lease_until < ?1 \
                 RETURNING name",
                args![now],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Forgets a node (an admin's `node rm` of a node that owns nothing).
    pub fn remove_node(&self, name: &str) -> Result<bool> {
        Ok(self
            .db()?
            .execute("DELETE FROM nodes WHERE name = ?1", args![name])?
            == 1)
    }

    /// The owner of sandbox `id` (`None` on a single node, or unknown).
    pub fn sandbox_node(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .db()?
            .query_opt("SELECT node FROM sandboxes WHERE id = ?1", args![id])?
            .map(|r| r.get::<Option<String>>(0))
            .transpose()?
            .flatten())
    }

    /// Makes `node` the owner of sandbox `id`, if `from` still is (`None`:
    /// no owner yet): ownership changes in one statement, and only from
    /// the owner the caller saw. False when someone else changed it.
    pub fn set_sandbox_node(&self, id: &str, from: Option<&str>, node: &str) -> Result<bool> {
        let n = match from {
            Some(f) => self.db()?.execute(
                "UPDATE sandboxes SET node = ?3 WHERE id = ?1 AND node = ?2",
                args![id, f, node],
            )?,
            None => self.db()?.execute(
                "UPDATE sandboxes SET node = ?2 WHERE id = ?1 AND node IS NULL",
                args![id, node],
            )?,
        };
        Ok(n == 1)
    }

    /// Hands sandbox `id` from node `from` to node `to` with what `to`
    /// must take over (`handoff`, JSON), in one statement: false when
    /// `from` no longer owns it.
    pub fn hand_over(&self, id: &str, from: &str, to: &str, handoff: &str) -> Result<bool> {
        let n = self.db()?.execute(
            "UPDATE sandboxes SET node = ?3, handoff = ?4, updated_at = ?5 \
             WHERE id = ?1 AND node = ?2",
            args![id, from, to, handoff, self.now()],
        )?;
        Ok(n == 1)
    }

    /// Hands sandbox `id` of the lost node `from` to `to`, to run again
    /// from a copy in the object store (`handoff`, JSON): the owner, the
    /// handoff, the state `archived` (its volume is that copy now), its
    /// desired state and the reason, in one statement and with an event.
    /// False when `from` no longer owns it, it was deleted, or `from` is
    /// no longer lost (it came back first: its sandboxes stay its own).
    pub fn recover_sandbox(
        &self,
        id: &str,
        from: &str,
        to: &str,
        handoff: &str,
        desired: crate::State,
        reason: &str,
    ) -> Result<bool> {
        let now = self.now();
        let mut tx = self.tx()?;
        let n = tx.execute(
            "UPDATE sandboxes SET node = ?3, handoff = ?4, desired_state = ?5, reason = ?6, \
             updated_at = ?7, state_changed_at = CASE WHEN state = 'archived' \
             THEN state_changed_at ELSE ?7 END, state = 'archived' \
             WHERE id = ?1 AND node = ?2 AND state != 'deleted' \
             AND EXISTS (SELECT 1 FROM nodes WHERE name = ?2 AND state = 'lost')",
            args![id, from, to, handoff, desired.as_str(), reason, now],
        )?;
        if n == 1 {
            crate::events::append_in(&mut *tx, id, now, "node", reason)?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// What sandbox `id`'s owner has still to take over, if anything.
    pub fn handoff_of(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .db()?
            .query_opt("SELECT handoff FROM sandboxes WHERE id = ?1", args![id])?
            .map(|r| r.get::<Option<String>>(0))
            .transpose()?
            .flatten())
    }

    /// Ids and handoffs of the live sandboxes `node` owns and has still to
    /// take over.
    pub fn handoffs_of_node(&self, node: &str) -> Result<Vec<(String, String)>> {
        self.db()?
            .query(
                "SELECT id, handoff FROM sandboxes WHERE node = ?1 AND handoff IS NOT NULL \
                 AND state != 'deleted' ORDER BY id",
                args![node],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
    }

    /// Marks sandbox `id`'s handoff `taken` (as read) taken by its owner
    /// `node`: false when the owner or the handoff changed meanwhile.
    pub fn clear_handoff(&self, id: &str, node: &str, taken: &str) -> Result<bool> {
        let n = self.db()?.execute(
            "UPDATE sandboxes SET handoff = NULL WHERE id = ?1 AND node = ?2 AND handoff = ?3",
            args![id, node, taken],
        )?;
        Ok(n == 1)
    }

    /// Ids of the live sandboxes `node` owns.
    pub fn sandboxes_of_node(&self, node: &str) -> Result<Vec<String>> {
        self.db()?
            .query(
                "SELECT id FROM sandboxes WHERE node = ?1 AND state != 'deleted' ORDER BY id",
                args![node],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            advertise: "127.0.0.1:7071".into(),
            labels: [("zone".to_string(), "a".to_string())].into(),
            vcpus: 2.0,
            memory: 24 << 30,
            disk: 100 << 30,
            load: NodeLoad::default(),
            state: NodeState::Up,
            epoch: 0,
            version: "0.1.0".into(),
            started_at: 0,
            heartbeat_at: 0,
            lease_until: 0,
        }
    }

    #[test]
    fn leases_epochs_and_expiry_on_both_engines() {
        for s in crate::testing::stores() {
            let e = s.engine();
            let r1 = s.register_node(&node("n1"), 10_000).unwrap();
            assert_eq!((r1.epoch, r1.previous), (1, None), "{e}");
            let load = NodeLoad {
                sandboxes: 3,
                allocated_vcpus: 1.5,
                allocated_memory: 3 << 30,
                allocated_disk: 30 << 30,
            };
            assert!(s.heartbeat_node("n1", 1, 20_000, &load).unwrap(), "{e}");
            let got = s.get_node("n1").unwrap().unwrap();
            assert_eq!((&got.load, got.lease_until), (&load, 20_000), "{e}");
            assert_eq!(got.labels["zone"], "a");
            // Draining survives a restart; a restart bumps the epoch and
            // the old incarnation's heartbeats stop counting.
            assert!(s.set_node_state("n1", NodeState::Draining).unwrap());
            let r2 = s.register_node(&node("n1"), 30_000).unwrap();
            assert_eq!(r2.epoch, 2);
            assert_eq!(r2.previous, Some((NodeState::Draining, 20_000)));
            assert_eq!(
                s.get_node("n1").unwrap().unwrap().state,
                NodeState::Draining
            );
            assert!(!s.heartbeat_node("n1", 1, 40_000, &load).unwrap(), "{e}");
            // Expiry: each lost node is declared once.
            s.register_node(&node("n2"), 50_000).unwrap();
            assert_eq!(
                s.expire_nodes(35_000).unwrap(),
                vec!["n1".to_string()],
                "{e}"
            );
            assert!(s.expire_nodes(35_000).unwrap().is_empty(), "{e}");
            assert!(!s.heartbeat_node("n1", 2, 60_000, &load).unwrap(), "{e}");
            assert!(!s.set_node_state("n1", NodeState::Up).unwrap());
            // Coming back after being lost: told so, and up again.
            let r3 = s.register_node(&node("n1"), 70_000).unwrap();
            assert_eq!(r3.previous.map(|p| p.0), Some(NodeState::Lost), "{e}");
            let names: Vec<_> = s
                .list_nodes()
                .unwrap()
                .into_iter()
                .map(|n| n.name)
                .collect();
            assert_eq!(names, ["n1", "n2"]);
            assert!(s.remove_node("n2").unwrap());
            assert!(s.get_node("n2").unwrap().is_none());
        }
    }

    #[test]
    fn ownership_moves_with_its_handoff_on_both_engines() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.db()
                .unwrap()
                .execute(
                    "INSERT INTO sandboxes (id, name, tenant, image, mode, runtime, spec, state, \
                     desired_state, created_at, updated_at, state_changed_at, node) VALUES \
                     ('a1', 'w', 't', 'host', 'persistent', 'ns', '{}', 'archived', 'running', \
                     1, 1, 1, 'n1')",
                    args![],
                )
                .unwrap();
            assert!(!s.hand_over("a1", "n2", "n3", "{}").unwrap(), "{e}");
            assert!(s.hand_over("a1", "n1", "n2", r#"{"x":1}"#).unwrap(), "{e}");
            assert_eq!(s.sandbox_node("a1").unwrap().as_deref(), Some("n2"));
            assert_eq!(s.sandboxes_of_node("n2").unwrap(), ["a1"]);
            assert_eq!(
                s.handoffs_of_node("n2").unwrap(),
                vec![("a1".to_string(), r#"{"x":1}"#.to_string())]
            );
            assert!(!s.clear_handoff("a1", "n1", r#"{"x":1}"#).unwrap(), "{e}");
            assert!(!s.clear_handoff("a1", "n2", r#"{"x":2}"#).unwrap(), "{e}");
            assert!(s.clear_handoff("a1", "n2", r#"{"x":1}"#).unwrap(), "{e}");
            assert!(s.handoff_of("a1").unwrap().is_none());
            assert!(s.handoffs_of_node("n2").unwrap().is_empty());
            assert!(!s.set_sandbox_node("a1", Some("n1"), "n3").unwrap());
            assert!(s.set_sandbox_node("a1", Some("n2"), "n3").unwrap());
        }
    }

    /// A spec with nothing in it.
    #[derive(Serialize, Deserialize)]
    struct Bare {}

    impl crate::Spec for Bare {
        const VERSION: u32 = 1;
    }

    #[test]
    fn a_lost_nodes_sandbox_is_recovered_once_on_both_engines() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.db()
                .unwrap()
                .execute(
                    "INSERT INTO sandboxes (id, name, tenant, image, mode, runtime, spec, state, \
                     desired_state, created_at, updated_at, state_changed_at, node) VALUES \
                     ('b1', 'w', 't', 'host', 'persistent', 'ns', '{}', 'running', 'running', \
                     1, 1, 1, 'n3')",
                    args![],
                )
                .unwrap();
            let why = "node n3 lost; restored from the backup of T0";
            // Not while n3 is up.
            s.register_node(&node("n3"), 10_000).unwrap();
            assert!(!s
                .recover_sandbox("b1", "n3", "n1", "{}", crate::State::Running, why)
                .unwrap());
            assert_eq!(s.expire_nodes(20_000).unwrap(), ["n3"], "{e}");
            assert!(!s
                .recover_sandbox("b1", "n2", "n1", "{}", crate::State::Running, why)
                .unwrap());
            assert!(
                s.recover_sandbox("b1", "n3", "n1", r#"{"h":1}"#, crate::State::Running, why)
                    .unwrap(),
                "{e}"
            );
            // Once only: n3 no longer owns it.
            assert!(!s
                .recover_sandbox("b1", "n3", "n2", "{}", crate::State::Running, why)
                .unwrap());
            let r = s.get_sandbox::<Bare>("b1").unwrap().unwrap();
            assert_eq!(r.state, crate::State::Archived, "{e}");
            assert_eq!(r.desired_state, crate::State::Running, "{e}");
            assert_eq!((r.reason.as_str(), r.node.as_deref()), (why, Some("n1")));
            assert_eq!(s.handoff_of("b1").unwrap().as_deref(), Some(r#"{"h":1}"#));
            let ev = s.events("b1", 0, 10).unwrap();
            assert_eq!(ev.len(), 1, "{e}");
            assert_eq!((ev[0].kind.as_str(), ev[0].message.as_str()), ("node", why));
        }
    }
}
