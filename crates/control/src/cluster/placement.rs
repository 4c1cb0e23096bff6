//! Where a new sandbox goes: a live node (`up`, lease not expired) whose
//! labels match the request's selector and whose free capacity (what it
//! offers minus what its sandboxes hold, as its last heartbeat said)
//! covers the request's vCPUs, memory and disk; of those, the one with the
//! most memory left in proportion, then the fewest sandboxes, then by
//! name (so that equal nodes fill in a fixed order).

use std::collections::BTreeMap;

use dwell_store::{NodeRecord, NodeState};

use crate::error::{Error, Result};
use crate::size::format_size;

/// What a new sandbox needs of a node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs {
    pub vcpus: f64,
    pub memory: u64,
    pub disk: u64,
    /// Labels the node must carry, all of them.
    pub selector: BTreeMap<String, String>,
}

/// Why a node was passed over, for the refusal's message.
fn unfit(n: &NodeRecord, needs: &Needs, now: i64) -> Option<String> {
    if n.state != NodeState::Up {
        return Some(format!("{}: {}", n.name, n.state.as_str()));
    }
    if n.lease_until < now {
        return Some(format!("{}: no heartbeat since its lease ended", n.name));
    }
    for (k, v) in &needs.selector {
        if n.labels.get(k) != Some(v) {
            return Some(format!("{}: no label {k}={v}", n.name));
        }
    }
    let free_cpu = n.vcpus - n.load.allocated_vcpus;
    if free_cpu + 1e-9 < needs.vcpus {
        return Some(format!(
            "{}: {free_cpu:.2} of {} vCPUs free",
            n.name, n.vcpus
        ));
    }
    let free_mem = n.memory.saturating_sub(n.load.allocated_memory);
    if free_mem < needs.memory {
        return Some(format!(
            "{}: {} of {} memory free",
            n.name,
            format_size(free_mem),
            format_size(n.memory)
        ));
    }
    let free_disk = n.disk.saturating_sub(n.load.allocated_disk);
    if free_disk < needs.disk {
        return Some(format!(
            "{}: {} of {} disk free",
            n.name,
            format_size(free_disk),
            format_size(n.disk)
        ));
    }
    None
}

/// The node a sandbox needing `needs` goes to, of `nodes`, at `now` (ms).
pub fn choose<'a>(nodes: &'a [NodeRecord], needs: &Needs, now: i64) -> Result<&'a NodeRecord> {
    let mut why = Vec::new();
    let mut best: Option<(&NodeRecord, f64)> = None;
    for n in nodes {
        if let Some(w) = unfit(n, needs, now) {
            why.push(w);
            continue;
        }
        let left = if n.memory == 0 {
            0.0
        } else {
            (n.memory - n.load.allocated_memory - needs.memory) as f64 / n.memory as f64
        };
        let better = match best {
            None => true,
            Some((b, bl)) => {
                left > bl + 1e-9
                    || ((left - bl).abs() <= 1e-9
                        && (n.load.sandboxes, &n.name) < (b.load.sandboxes, &b.name))
            }
        };
        if better {
            best = Some((n, left));
        }
    }
    best.map(|(n, _)| n).ok_or_else(|| {
        Error::Unavailable(format!(
            "no node of the cluster can take this sandbox ({} vCPUs, {} memory, {} disk{}): {}; \
             ask for less, free some (stop or remove sandboxes), or add a node",
            needs.vcpus,
            format_size(needs.memory),
            format_size(needs.disk),
            if needs.selector.is_empty() {
                String::new()
            } else {
                format!(
                    ", labels {}",
                    needs
                        .selector
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            },
            if why.is_empty() {
                "there are no nodes".to_string()
            } else {
                why.join("; ")
            }
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwell_store::NodeLoad;

    fn node(name: &str, memory_gib: u64, used_gib: u64) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            advertise: format!("{name}:7071"),
            labels: [("zone".to_string(), name.to_string())].into(),
            vcpus: 4.0,
            memory: memory_gib << 30,
            disk: 100 << 30,
            load: NodeLoad {
                sandboxes: used_gib,
                allocated_vcpus: 0.0,
                allocated_memory: used_gib << 30,
                allocated_disk: 0,
            },
            state: NodeState::Up,
            epoch: 1,
            version: String::new(),
            started_at: 0,
            heartbeat_at: 0,
            lease_until: 10_000,
        }
    }

    fn needs(mem_gib: u64) -> Needs {
        Needs {
            vcpus: 1.0,
            memory: mem_gib << 30,
            disk: 1 << 30,
            selector: BTreeMap::new(),
        }
    }

    #[test]
    fn the_node_with_most_room_left_wins() {
        let nodes = [node("n1", 8, 6), node("n2", 8, 2), node("n3", 16, 10)];
        assert_eq!(choose(&nodes, &needs(1), 0).unwrap().name, "n2");
        // Equal nodes fill in name order.
        let nodes = [node("n2", 8, 0), node("n1", 8, 0)];
        assert_eq!(choose(&nodes, &needs(1), 0).unwrap().name, "n1");
    }

    #[test]
    fn full_draining_lost_and_expired_nodes_are_passed_over() {
        let mut draining = node("n2", 64, 0);
        draining.state = NodeState::Draining;
        let mut expired = node("n3", 64, 0);
        expired.lease_until = 5;
        let nodes = [node("n1", 8, 7), draining, expired, node("n4", 8, 4)];
        assert_eq!(choose(&nodes, &needs(2), 10).unwrap().name, "n4");
        let e = choose(&nodes, &needs(5), 10).unwrap_err().to_string();
        assert!(e.contains("n1: 1GiB of 8GiB memory free"), "{e}");
        assert!(e.contains("n2: draining"), "{e}");
        assert!(e.contains("n3: no heartbeat"), "{e}");
        assert!(e.contains("add a node"), "{e}");
    }

    #[test]
    fn labels_select_nodes() {
        let nodes = [node("n1", 8, 0), node("n2", 8, 4)];
        let mut n = needs(1);
        n.selector.insert("zone".into(), "n2".into());
        assert_eq!(choose(&nodes, &n, 0).unwrap().name, "n2");
        n.selector.insert("zone".into(), "n9".into());
        let e = choose(&nodes, &n, 0).unwrap_err().to_string();
        assert!(e.contains("no label zone=n9"), "{e}");
    }
}
