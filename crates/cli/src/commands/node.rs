//! `node ls|drain|undrain` (the nodes of a cluster) and `move` (a
//! sandbox to another node).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dwell_contract::nodes::Node;
use dwell_control::size::format_size;
use http_body_util::{BodyExt, Full};
use hyper::Method;

use crate::cli::{MoveArgs, NodeCommand};
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
        n.owned.to_string(),
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
                        "OWNED",
                        "HEARTBEAT",
                        "LABELS",
                    ],
                    &rows,
                );
            }
        }
        NodeCommand::Drain {
            node,
            json,
            wait,
            timeout,
        } => {
            let timeout = humantime::parse_duration(&timeout).with_context(|| {
                format!("--timeout {timeout:?}: give a duration like 30s or 10m")
            })?;
            set(c, &node, "drain", json && !wait).await?;
            if wait {
                let n = wait_drained(c, &node, timeout).await?;
                if json {
                    output::json(&n)?;
                }
            }
        }
        NodeCommand::Undrain { node, json } => set(c, &node, "undrain", json).await?,
    }
    Ok(0)
}

/// Polls node `node` until it owns no live sandbox, or fails after
/// `timeout` naming what is left and why (each one's last event).
async fn wait_drained(c: &Client, node: &str, timeout: Duration) -> Result<Node> {
    let t0 = Instant::now();
    loop {
        let nodes: Vec<Node> = c.get("/v1/nodes").await?;
        let Some(n) = nodes.into_iter().find(|n| n.name == node) else {
            bail!("node {node} is no longer listed by `dwell node ls`");
        };
        if n.owned == 0 {
            eprintln!(
                "node {node} is drained: every sandbox moved off ({:.1}s)",
                t0.elapsed().as_secs_f64()
            );
            return Ok(n);
        }
        if n.state != "draining" {
            bail!(
                "node {node} is {} now, no longer draining; {} sandbox(es) are still on it",
                n.state,
                n.owned
            );
        }
        if t0.elapsed() >= timeout {
            let all: Vec<serde_json::Value> = c.get("/v1/sandboxes").await.unwrap_or_default();
            let mut left = Vec::new();
            for s in all.iter().filter(|s| s["node"] == node) {
                let id = s["id"].as_str().unwrap_or("");
                let events: Vec<serde_json::Value> = c
                    .get(&format!("/v1/sandboxes/{}/events", enc(id)))
                    .await
                    .unwrap_or_default();
                let last = events
                    .last()
                    .and_then(|e| e["message"].as_str())
                    .or(s["reason"].as_str())
                    .unwrap_or("")
                    .to_string();
                left.push(format!(
                    "{} ({}): {last}",
                    s["name"].as_str().unwrap_or(""),
                    s["state"].as_str().unwrap_or("")
                ));
            }
            bail!(
                "node {node} still owns {} sandbox(es) after {}: {}; see `dwell logs SANDBOX --events` \
                 for why each did not move (ephemeral sandboxes, members of private networks and \
                 sandboxes with named volumes stay: remove or move them by hand)",
                n.owned,
                humantime::format_duration(timeout),
                if left.is_empty() {
                    "(of other tenants)".to_string()
                } else {
                    left.join("; ")
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `dwell move SANDBOX [--to NODE] [--warm]`.
pub async fn move_sandbox(c: &Client, a: MoveArgs) -> Result<i32> {
    let body = serde_json::to_vec(&dwell_contract::nodes::MoveRequest {
        to: a.to.clone(),
        warm: a.warm,
    })?;
    let t0 = Instant::now();
    let resp = c
        .send(
            Method::POST,
            &format!("/v1/sandboxes/{}/move", enc(&a.sandbox)),
            "application/json",
            Full::new(bytes::Bytes::from(body)),
        )
        .await?;
    let resp = crate::client::check(resp).await?;
    let accepted = resp.status().as_u16() == 202;
    let body = resp.into_body().collect().await?.to_bytes();
    let sb: serde_json::Value = serde_json::from_slice(&body)
        .context("the daemon sent an answer this CLI does not understand")?;
    if a.json {
        output::json(&sb)?;
    } else if accepted {
        eprintln!(
            "sandbox {} is handed to node {}, which could not be reached just now; it takes it \
             over on its next pass (`dwell inspect {}` shows when)",
            a.sandbox,
            sb["node"].as_str().unwrap_or("?"),
            a.sandbox
        );
    } else {
        eprintln!(
            "sandbox {} moved to node {} ({}) in {:.1}s",
            a.sandbox,
            sb["node"].as_str().unwrap_or("?"),
            sb["state"].as_str().unwrap_or("?"),
            t0.elapsed().as_secs_f64()
        );
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
