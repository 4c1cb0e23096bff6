//! `doctor`: what this host supports, and why not the rest.

use anyhow::Result;

use crate::cli::JsonFlag;
use crate::output;

pub fn run(a: JsonFlag) -> Result<i32> {
    let checks = dwell_runtime::ns::doctor();
    if a.json {
        output::json(&checks)?;
    } else {
        for c in &checks {
            println!(
                "{} {:<22} {}",
                if c.ok { "ok  " } else { "MISS" },
                c.name,
                c.detail
            );
        }
    }
    Ok(if checks.iter().all(|c| c.ok) { 0 } else { 1 })
}
