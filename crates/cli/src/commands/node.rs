//! `node ls|drain|undrain`: the nodes of a cluster.

use anyhow::Result;
use dwell_contract::nodes::Node;
use dwell_control::size::format_size;

use crate::cli::NodeCommand;
use crate::client::{enc, Client};
use crate::output;

fn row(n: &Node) -> Vec<String> {
    vec![
        format!("{}{}", n.name, if n.this_node { " *" } else { "" }),
        n.state.clone(),
        n.advertise.clone(),
        format!("{:.1}/{}", n.allocated_vcpus, n.vcpus),
        format!(
            "{}/{}",
            format_size(n.allocated_memory_bytes),
            format_size(n.memory_bytes)
        ),
        format!(
            "{}/{}",
            format_size(n.allocated_disk_bytes),
            format_size(n.disk_bytes)
        ),
        n.sandboxes.to_string(),
        output::ago(n.heartbeat_at),
        n.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    ]
}

pub async fn run(c: &Client, cmd: NodeCommand) -> Result<i32> {
    match cmd {
        NodeCommand::Ls(a) => {
            let nodes: Vec<Node> = c.get("/v1/nodes").await?;
            if a.json {
                output::json(&nodes)?;
            } else if nodes.is_empty() {
                eprintln!(
                    "this daemon is not a node of a cluster (start it with `dwell serve --cluster postgres://...`)"
                );
            } else {
                let rows: Vec<Vec<String>> = nodes.iter().map(row).collect();
                output::table(
                    &[
                        "NAME",
                        "STATE",
                        "ADDRESS",
                        "VCPUS",
                        "MEMORY",
                        "DISK",
                        "SANDBOXES",
                        "HEARTBEAT",
                        "LABELS",
                    ],
                    &rows,
                );
            }
        }
        NodeCommand::Drain { node, json } => set(c, &node, "drain", json).await?,
        NodeCommand::Undrain { node, json } => set(c, &node, "undrain", json).await?,
    }
    Ok(0)
}

async fn set(c: &Client, node: &str, verb: &str, json: bool) -> Result<()> {
    let n: Node = c
        .post(
            &format!("/v1/nodes/{}/{verb}", enc(node)),
            &serde_json::json!({}),
        )
        .await?;
    if json {
        output::json(&n)?;
    } else {
        eprintln!(
            "node {} is {}{}",
            n.name,
            n.state,
            if n.state == "draining" {
                ": new sandboxes go to the other nodes"
            } else {
                ""
            }
        );
    }
    Ok(())
}
