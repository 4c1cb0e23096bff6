//! Helpers the host-boundary modules share: creating a sandbox on a given
//! runtime and reading the daemon's memory.

use crate::common::*;

/// Creates sandbox `name` on runtime `rt` with the harness's default sizes
/// (see `Daemon::create`); returns its id.
pub fn create_on(d: &Daemon, name: &str, rt: &str) -> String {
    d.create(name, &["--isolation", rt])
}

/// Creates sandbox `name` on runtime `rt` with only `extra` flags (no
/// default sizes: the daemon's own apply); returns its id.
pub fn create_bare_on(d: &Daemon, name: &str, rt: &str, extra: &[&str]) -> String {
    let mut args = vec!["create", "--name", name, "--isolation", rt, "--json"];
    args.extend_from_slice(extra);
    let v: serde_json::Value = serde_json::from_str(&d.ok(&args)).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
