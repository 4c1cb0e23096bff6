//! `dwell network create|ls|inspect|rm`: a tenant's private networks.

use anyhow::Result;
use dwell_contract::{CreateNetwork, Network};

use crate::cli::NetworkCommand;
use crate::client::{enc, Client};
use crate::output;

pub async fn run(c: &Client, cmd: NetworkCommand) -> Result<i32> {
    match cmd {
        NetworkCommand::Create { name, subnet, json } => {
            let n: Network = c
                .post("/v1/networks", &CreateNetwork { name, subnet })
                .await?;
            if json {
                output::json(&n)?;
            } else {
                println!(
                    "{} ({}): `dwell create --network {} ...` puts sandboxes on it",
                    n.name, n.subnet, n.name
                );
            }
        }
        NetworkCommand::Ls(a) => {
            let all: Vec<Network> = c.get("/v1/networks").await?;
            if a.json {
                output::json(&all)?;
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|n| {
                        vec![
                            n.name.clone(),
                            n.subnet.clone(),
                            n.members.len().to_string(),
                            output::ago(n.created_at),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "SUBNET", "MEMBERS", "CREATED"], &rows);
            }
        }
        NetworkCommand::Inspect { name, json } => {
            let n: Network = c.get(&format!("/v1/networks/{}", enc(&name))).await?;
            if json {
                output::json(&n)?;
                return Ok(0);
            }
            println!("name:    {}", n.name);
            println!("id:      {}", n.id);
            println!("subnet:  {}", n.subnet);
            println!("bridge:  {}", n.bridge);
            println!("created: {}", output::time(n.created_at));
            if n.members.is_empty() {
                println!("members: none");
            } else {
                let rows: Vec<Vec<String>> = n
                    .members
                    .iter()
                    .map(|m| {
                        vec![
                            m.sandbox.clone(),
                            format!("{}.{}", m.sandbox, n.name),
                            m.address.clone(),
                            m.state.as_str().to_string(),
                        ]
                    })
                    .collect();
                output::table(&["SANDBOX", "NAME", "ADDRESS", "STATE"], &rows);
            }
        }
        NetworkCommand::Rm { names } => {
            for name in names {
                c.json::<serde_json::Value>(
                    hyper::Method::DELETE,
                    &format!("/v1/networks/{}", enc(&name)),
                    None::<&()>,
                )
                .await?;
                println!("{name} removed");
            }
        }
    }
    Ok(0)
}
