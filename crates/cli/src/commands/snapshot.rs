//! `snapshot create|ls|inspect|rm|gc` and `restore`.

use anyhow::Result;
use dwell_contract::snapshots::{GcSummary, Snapshot};
use dwell_contract::Sandbox;

use crate::cli::SnapshotCommand;
use crate::client::{enc, Client};
use crate::output;

fn show(s: &Snapshot) {
    println!("id:          {}", s.id);
    if let Some(n) = &s.name {
        println!("name:        {n}");
    }
    if let Some(sb) = &s.sandbox {
        println!("sandbox:     {sb}");
    }
    println!("created:     {}", s.created_at);
    println!(
        "volume:      {} ({} of data)",
        output::size(s.volume_size),
        output::size(s.data_bytes)
    );
    println!(
        "stored:      {} in {} chunks ({} new with this snapshot)",
        output::size(s.stored_bytes),
        s.chunks,
        output::size(s.uploaded_bytes)
    );
    if let Some(us) = s.freeze_us {
        println!("frozen:      {:.1} ms", us as f64 / 1000.0);
    }
    if let Some(b) = s.memory_bytes {
        println!(
            "memory:      {} of saved memory and processes (`dwell create --from {}` starts warm)",
            output::size(b),
            s.name.as_deref().unwrap_or(&s.id)
        );
    }
}

pub async fn run(c: &Client, cmd: SnapshotCommand) -> Result<i32> {
    match cmd {
        SnapshotCommand::Create {
            sandbox,
            name,
            json,
        } => {
            let s: Snapshot = crate::progress::track(
                c,
                &sandbox,
                c.post(
                    &format!("/v1/sandboxes/{}/snapshots", enc(&sandbox)),
                    &serde_json::json!({ "name": name }),
                ),
            )
            .await?;
            if json {
                output::json(&s)?;
            } else {
                println!("{}", s.name.as_deref().unwrap_or(&s.id));
                eprintln!(
                    "snapshot {} of {sandbox}: {} new of {} stored{}",
                    s.id,
                    output::size(s.uploaded_bytes),
                    output::size(s.stored_bytes),
                    s.freeze_us
                        .map(|us| format!(", frozen {:.1} ms", us as f64 / 1000.0))
                        .unwrap_or_default()
                );
            }
        }
        SnapshotCommand::Ls { sandbox, json } => {
            let q = sandbox
                .map(|s| format!("?sandbox={}", enc(&s)))
                .unwrap_or_default();
            let list: Vec<Snapshot> = c.get(&format!("/v1/snapshots{q}")).await?;
            if json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone().unwrap_or_default(),
                            s.id.clone(),
                            s.sandbox.clone().unwrap_or_default(),
                            s.created_at.clone(),
                            output::size(s.data_bytes),
                            output::size(s.uploaded_bytes),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "ID", "SANDBOX", "CREATED", "DATA", "NEW"], &rows);
            }
        }
        SnapshotCommand::Inspect { snapshot, json } => {
            let s: Snapshot = c.get(&format!("/v1/snapshots/{}", enc(&snapshot))).await?;
            if json {
                output::json(&s)?;
            } else {
                show(&s);
            }
        }
        SnapshotCommand::Rm { snapshots } => {
            let mut failed = 0;
            for s in &snapshots {
                match c
                    .json::<serde_json::Value>(
                        hyper::Method::DELETE,
                        &format!("/v1/snapshots/{}", enc(s)),
                        None::<&()>,
                    )
                    .await
                {
                    Ok(_) => println!("{s}"),
                    Err(e) => {
                        eprintln!("dwell: {s}: {e:#}");
                        failed += 1;
                    }
                }
            }
            return Ok(if failed > 0 { 1 } else { 0 });
        }
        SnapshotCommand::Gc { json } => {
            let r: GcSummary = c.post("/v1/gc/snapshots", &serde_json::json!({})).await?;
            if json {
                output::json(&r)?;
            } else {
                println!(
                    "deleted {} unreferenced chunks ({}) and {} orphan archives; kept {} in use by snapshots being written, {} younger than the grace period",
                    r.chunks_deleted,
                    output::size(r.bytes_freed),
                    r.orphan_archives_deleted,
                    r.kept_leased,
                    r.kept_young
                );
            }
        }
    }
    Ok(0)
}

pub async fn restore(c: &Client, sandbox: &str, snapshot: &str) -> Result<i32> {
    let sb: Sandbox = crate::progress::track(
        c,
        sandbox,
        c.post(
            &format!("/v1/sandboxes/{}/restore", enc(sandbox)),
            &serde_json::json!({ "snapshot": snapshot }),
        ),
    )
    .await?;
    println!(
        "{}: restored from {snapshot} ({})",
        sb.name,
        sb.state.as_str()
    );
    Ok(0)
}
