//! `registry login`, `registry logout`, `registry ls`: the tenant's
//! registry logins, which only its own pulls use.

use std::io::Read;

use anyhow::{bail, Result};
use dwell_contract::images::{LoginBody, RegistryLogin};

use crate::cli::RegistryCommand;
use crate::client::{enc, Client};
use crate::output;

pub async fn run(c: &Client, cmd: RegistryCommand) -> Result<i32> {
    match cmd {
        RegistryCommand::Login {
            registry,
            username,
            password_stdin,
            json,
        } => {
            if !password_stdin {
                bail!(
                    "give the password on stdin: `echo \"$TOKEN\" | dwell registry login {registry} \
                     -u {username} --password-stdin` (it is never taken as an argument)"
                );
            }
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']).to_string();
            if password.is_empty() {
                bail!("stdin held no password");
            }
            let l: RegistryLogin = c
                .post(
                    "/v1/registries/logins",
                    &LoginBody {
                        registry,
                        username,
                        password,
                    },
                )
                .await?;
            if json {
                output::json(&l)?;
            } else {
                println!("login for {} stored (user {})", l.registry, l.username);
            }
        }
        RegistryCommand::Logout { registry } => {
            let _: serde_json::Value = c
                .json(
                    hyper::Method::DELETE,
                    &format!("/v1/registries/logins?registry={}", enc(&registry)),
                    None::<&()>,
                )
                .await?;
            println!("login for {registry} removed");
        }
        RegistryCommand::Ls(a) => {
            let list: Vec<RegistryLogin> = c.get("/v1/registries/logins").await?;
            if a.json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|l| vec![l.registry.clone(), l.username.clone()])
                    .collect();
                output::table(&["REGISTRY", "USER"], &rows);
            }
        }
    }
    Ok(0)
}
