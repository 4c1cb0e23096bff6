//! `dwell volume create|ls|inspect|resize|snapshot|restore|rm`: a tenant's
//! named volumes.

use anyhow::Result;
use dwell_contract::sandbox::SizeArg;
use dwell_contract::snapshots::{RestoreBody, Snapshot, SnapshotCreate};
use dwell_contract::{CreateVolume, NamedVolume, ResizeVolume};

use crate::cli::VolumeCommand;
use crate::client::{enc, Client};
use crate::output;

pub async fn run(c: &Client, cmd: VolumeCommand) -> Result<i32> {
    match cmd {
        VolumeCommand::Create {
            name,
            size,
            from,
            json,
        } => {
            let v: NamedVolume = c
                .post(
                    "/v1/volumes",
                    &CreateVolume {
                        name,
                        size: size.map(SizeArg::Text),
                        from,
                    },
                )
                .await?;
            if json {
                output::json(&v)?;
            } else {
                println!(
                    "{} ({}): `dwell create --volume {}:/data ...` binds it in",
                    v.name,
                    output::size(v.size_bytes),
                    v.name
                );
            }
        }
        VolumeCommand::Ls(a) => {
            let all: Vec<NamedVolume> = c.get("/v1/volumes").await?;
            if a.json {
                output::json(&all)?;
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|v| {
                        vec![
                            v.name.clone(),
                            output::size(v.size_bytes),
                            output::size(v.used_bytes),
                            v.used_by.len().to_string(),
                            if v.mounted { "yes" } else { "no" }.to_string(),
                            output::ago(v.created_at),
                        ]
                    })
                    .collect();
                output::table(
                    &["NAME", "SIZE", "USED", "SANDBOXES", "MOUNTED", "CREATED"],
                    &rows,
                );
            }
        }
        VolumeCommand::Inspect { name, json } => {
            let v: NamedVolume = c.get(&format!("/v1/volumes/{}", enc(&name))).await?;
            if json {
                output::json(&v)?;
                return Ok(0);
            }
            print(&v);
        }
        VolumeCommand::Resize { name, size, json } => {
            let v: NamedVolume = c
                .post(
                    &format!("/v1/volumes/{}/resize", enc(&name)),
                    &ResizeVolume {
                        size: SizeArg::Text(size),
                    },
                )
                .await?;
            if json {
                output::json(&v)?;
            } else {
                println!("{} is now {}", v.name, output::size(v.size_bytes));
            }
        }
        VolumeCommand::Snapshot {
            name,
            snapshot_name,
            json,
        } => {
            let s: Snapshot = c
                .post(
                    &format!("/v1/volumes/{}/snapshots", enc(&name)),
                    &SnapshotCreate {
                        name: snapshot_name,
                    },
                )
                .await?;
            if json {
                output::json(&s)?;
            } else {
                println!(
                    "{}{}: snapshot of volume {name}; `dwell volume restore {name} {}` puts it back",
                    s.id,
                    s.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
                    s.id
                );
            }
        }
        VolumeCommand::Restore { name, snapshot } => {
            let v: NamedVolume = c
                .post(
                    &format!("/v1/volumes/{}/restore", enc(&name)),
                    &RestoreBody { snapshot },
                )
                .await?;
            println!("{} restored", v.name);
        }
        VolumeCommand::Rm { names } => {
            for name in names {
                c.json::<serde_json::Value>(
                    hyper::Method::DELETE,
                    &format!("/v1/volumes/{}", enc(&name)),
                    None::<&()>,
                )
                .await?;
                println!("{name} removed");
            }
        }
    }
    Ok(0)
}

fn print(v: &NamedVolume) {
    println!("name:    {}", v.name);
    println!("id:      {}", v.id);
    println!("size:    {}", output::size(v.size_bytes));
    println!("used:    {}", output::size(v.used_bytes));
    println!("mounted: {}", if v.mounted { "yes" } else { "no" });
    println!("created: {}", output::time(v.created_at));
    if v.used_by.is_empty() {
        println!("used by: no sandbox");
    } else {
        println!("used by: {}", v.used_by.join(", "));
    }
}
