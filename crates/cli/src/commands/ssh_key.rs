//! `ssh-key add|ls|rm`: the tenant's SSH public keys for the daemon's SSH
//! gateway.

use std::io::Read;

use anyhow::{Context, Result};
use dwell_contract::ssh_keys::SshKey;

use crate::cli::SshKeyCommand;
use crate::client::{enc, Client};
use crate::output;

fn read_key(file: &str) -> Result<String> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .context("cannot read the public key from stdin")?;
    } else {
        let f = std::fs::File::open(file)
            .with_context(|| format!("cannot open the public key file {file}"))?;
        f.take(64 * 1024)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {file} (a public key is one line of text)"))?;
    }
    Ok(text)
}

fn when(t: Option<i64>) -> String {
    t.map(output::time).unwrap_or_else(|| "-".into())
}

pub async fn run(c: &Client, cmd: SshKeyCommand) -> Result<i32> {
    match cmd {
        SshKeyCommand::Add { file, name, json } => {
            let public_key = read_key(&file)?;
            let body = serde_json::json!({ "public_key": public_key, "name": name });
            let k: SshKey = c.post("/v1/ssh-keys", &body).await?;
            if json {
                output::json(&k)?;
            } else {
                println!("{}", k.id);
                eprintln!(
                    "added SSH key {} ({}) for tenant {}; log in with `ssh -p PORT SANDBOX@HOST`",
                    k.name, k.fingerprint, k.tenant
                );
            }
        }
        SshKeyCommand::Ls(a) => {
            let keys: Vec<SshKey> = c.get("/v1/ssh-keys").await?;
            if a.json {
                output::json(&keys)?;
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.id.clone(),
                            k.name.clone(),
                            k.fingerprint.clone(),
                            output::time(k.created_at),
                            when(k.last_used_at),
                        ]
                    })
                    .collect();
                output::table(&["ID", "NAME", "FINGERPRINT", "ADDED", "LAST LOGIN"], &rows);
            }
        }
        SshKeyCommand::Rm { key, json } => {
            let k: SshKey = c
                .json(
                    hyper::Method::DELETE,
                    &format!("/v1/ssh-keys/{}", enc(&key)),
                    None::<&()>,
                )
                .await?;
            if json {
                output::json(&k)?;
            } else {
                println!("removed SSH key {} ({})", k.name, k.id);
            }
        }
    }
    Ok(0)
}
