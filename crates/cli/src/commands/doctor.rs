//! `doctor`: what this host supports, and why not the rest: the namespace
//! runtime's kernel features, and whether gVisor (and so hibernation) is
//! available, and the fingerprint of the SSH gateway's host key.

use std::path::Path;

use anyhow::Result;

use crate::cli::JsonFlag;
use crate::output;

pub fn run(a: JsonFlag) -> Result<i32> {
    let mut checks = dwell_runtime::ns::doctor();
    let ns_ok = checks.iter().all(|c| c.ok);
    // What the namespace runtime cannot do without (NAT, cgroup.kill and
    // user namespaces are optional).
    let optional = ["nat networking", "cgroup.kill", "user namespaces"];
    let ns_missing: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok && !optional.contains(&c.name.as_str()))
        .map(|c| c.name.clone())
        .collect();
    let runsc = std::env::var_os("DWELL_RUNSC").unwrap_or_else(|| "/usr/bin/runsc".into());
    let gvisor = dwell_runtime::gvisor::doctor::doctor(Path::new(&runsc));
    checks.push(dwell_runtime::ns::Check {
        name: "runtime namespace".into(),
        ok: ns_missing.is_empty(),
        detail: if ns_missing.is_empty() {
            "available: `--isolation namespace` (pause keeps memory in RAM; hibernate to disk \
             needs gVisor, CRIU is not used)"
                .into()
        } else {
            format!("unavailable: missing {}", ns_missing.join(", "))
        },
    });
    checks.push(gvisor);
    let data = std::env::var_os("DWELL_DATA_DIR").unwrap_or_else(|| "/var/lib/dwell".into());
    checks.push(dwell_runtime::gvisor::doctor::pool(Path::new(&data)));
    checks.push(ssh_host_key());
    checks.push(volume_pool());
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
    // gVisor is optional: only the namespace runtime's needs decide.
    Ok(if ns_ok { 0 } else { 1 })
}

/// The pool of sandbox volumes `dwell serve` keeps made ahead
/// (`--volume-pool`, read from `DWELL_VOLUME_POOL` as serve does).
fn volume_pool() -> dwell_runtime::ns::Check {
    let n = std::env::var("DWELL_VOLUME_POOL").unwrap_or_else(|_| "2".into());
    let detail = match n.trim() {
        "0" => {
            "off (`dwell serve --volume-pool 0`): each create copies its volume's image".to_string()
        }
        n => format!(
            "{n} default-size volumes kept formatted ahead (`dwell serve --volume-pool N`); \
             each is used by one sandbox, never reused"
        ),
    };
    dwell_runtime::ns::Check {
        name: "volume pool".into(),
        ok: true,
        detail,
    }
}

/// The SSH gateway's host key fingerprint, for users to check their first
/// connection against (informational: never a missing feature).
fn ssh_host_key() -> dwell_runtime::ns::Check {
    let dir = std::env::var_os("DWELL_DATA_DIR").unwrap_or_else(|| "/var/lib/dwell".into());
    let dir = Path::new(&dir);
    let detail = match dwell_ssh::host_key::fingerprint_in(dir) {
        Some(fp) => format!(
            "{fp} ({})",
            dir.join(format!("{}.pub", dwell_ssh::host_key::FILE))
                .display()
        ),
        None => format!(
            "none in {} yet (the first `dwell serve --ssh-listen` makes it), or not readable \
             by this user",
            dir.display()
        ),
    };
    dwell_runtime::ns::Check {
        name: "ssh host key".into(),
        ok: true,
        detail,
    }
}
