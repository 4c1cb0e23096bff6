//! `dwell`: the command-line client and, as `dwell serve`, the daemon.
//!
//! - [`cli`]: flags and subcommands.
//! - [`client`]: HTTP and WebSocket to the daemon.
//! - [`commands`]: one file per group of subcommands; [`commands::serve`]
//!   wires the daemon together (store, runtime, storage, control, API).
//! - [`output`]: tables and times for people; `--json` for programs.
//! - [`progress`]: progress bars of long snapshot operations.

mod cli;
mod client;
mod commands;
mod hints;
mod output;
mod progress;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    if let Command::NsBoot { state_dir } = &cli.command {
        // Runs before any thread exists: it forks into new namespaces.
        std::process::exit(dwell_runtime::ns::boot_main(state_dir));
    }
    let serve = matches!(cli.command, Command::Serve(_));
    let mut rt = if serve {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dwell: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dwell: {e:#}");
            commands::exit_code_for(&e)
        }
    };
    // Do not wait for stray blocking reads of stdin.
    rt.shutdown_background();
    std::process::exit(code);
}
