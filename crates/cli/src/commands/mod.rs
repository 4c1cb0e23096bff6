//! One file per group of subcommands.

mod build;
pub mod cluster_flags;
mod cp;
mod data_lock;
mod doctor;
mod exec;
mod image;
mod limits;
mod listener;
mod network;
mod node;
mod ports;
mod private;
mod registry;
mod runtimes;
mod sandbox;
pub mod serve;
mod serve_e2b;
mod serve_planes;
mod serve_proxy;
mod service;
mod snapshot;
pub mod snapstore;
mod ssh_key;
mod tenant;
mod ui;
mod volume;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::client::{ApiFailure, Client, Endpoint};

/// Run a parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    let endpoint = match &cli.host {
        Some(h) => Endpoint::Tcp {
            addr: h
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            key: cli.api_key.clone(),
        },
        None => Endpoint::Unix(cli.socket.clone()),
    };
    let client = Client::new(endpoint, cli.as_tenant.clone())?;
    match cli.command {
        Command::Serve(a) => serve::run(*a, cli.socket).await,
        Command::Create(a) => sandbox::create(&client, *a).await,
        Command::Ls(a) => sandbox::ls(&client, a).await,
        Command::Inspect(a) => sandbox::inspect(&client, a).await,
        Command::Stats(a) => sandbox::stats(&client, a).await,
        Command::Port(a) => ports::port(&client, a).await,
        Command::Expose(a) => ports::expose(&client, a).await,
        Command::Unexpose(a) => ports::unexpose(&client, a).await,
        Command::Diff(a) => sandbox::diff(&client, a).await,
        Command::Snapshot(c) => snapshot::run(&client, c).await,
        Command::Restore { sandbox, snapshot } => {
            snapshot::restore(&client, &sandbox, &snapshot).await
        }
        Command::Pause(a) => sandbox::lifecycle(&client, a, "pause").await,
        Command::Resume(a) => sandbox::lifecycle(&client, a, "resume").await,
        Command::Hibernate(a) => sandbox::lifecycle(&client, a, "hibernate").await,
        Command::Stop(a) => sandbox::lifecycle(&client, a, "stop").await,
        Command::Start(a) => sandbox::lifecycle(&client, a, "start").await,
        Command::Archive(a) => sandbox::lifecycle(&client, a, "archive").await,
        Command::Rm(a) => sandbox::rm(&client, a).await,
        Command::Keepalive(a) => sandbox::keepalive(&client, a).await,
        Command::Update(a) => sandbox::update(&client, a).await,
        Command::Logs(a) => exec::logs(&client, a).await,
        Command::Service(cmd) => service::run(&client, cmd).await,
        Command::Exec(a) => exec::exec(&client, a).await,
        Command::Shell(a) => exec::shell(&client, a).await,
        Command::Ps(a) => exec::ps(&client, a).await,
        Command::Kill(a) => exec::kill(&client, a).await,
        Command::Cp(a) => cp::run(&client, a).await,
        Command::Image(c) => image::run(&client, c).await,
        Command::Build(a) => build::run(&client, a).await,
        Command::Registry(c) => registry::run(&client, c).await,
        Command::Tenant(c) => tenant::run(&client, c).await,
        Command::SshKey(c) => ssh_key::run(&client, c).await,
        Command::Ui(a) => ui::run(&client, a).await,
        Command::Node(c) => node::run(&client, c).await,
        Command::Move(a) => node::move_sandbox(&client, a).await,
        Command::Network(c) => network::run(&client, c).await,
        Command::Volume(c) => volume::run(&client, c).await,
        Command::Usage(a) => tenant::usage(&client, a).await,
        Command::Audit(a) => tenant::audit(&client, a).await,
        Command::Doctor(a) => doctor::run(a),
        Command::NsBoot { .. } => unreachable!("handled before the async runtime starts"),
    }
}

/// Exit codes (sysexits): 64 for a request the daemon rejected as invalid,
/// 77 for a missing or wrong API key, 69 when the daemon cannot be reached,
/// 75 when the sandbox is paused or hibernated and does not wake on use
/// (resume it, or turn auto-resume on), 1 for everything else.
pub fn exit_code_for(e: &anyhow::Error) -> i32 {
    if let Some(f) = e.downcast_ref::<ApiFailure>() {
        if f.code == dwell_contract::error::code::SANDBOX_PAUSED {
            return EXIT_ASLEEP;
        }
        match f.status.as_u16() {
            400 => 64,
            401 | 403 => 77,
            _ => 1,
        }
    } else if e.to_string().starts_with("cannot reach the dwell daemon") {
        69
    } else {
        1
    }
}

/// Exit code of a request refused because the sandbox sleeps and does not
/// wake on use (EX_TEMPFAIL: it works once the sandbox is resumed).
pub const EXIT_ASLEEP: i32 = 75;

/// Split `KEY=VALUE` arguments.
pub fn key_values(
    items: &[String],
    what: &str,
) -> Result<std::collections::BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => anyhow::bail!("{what} {kv:?} is not KEY=VALUE; write it like --{what} NAME=value"),
        })
        .collect()
}
