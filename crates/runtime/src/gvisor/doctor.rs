//! `dwell doctor` for the gVisor runtime: whether runsc is installed and
//! runs, so users learn which isolation levels this host offers, and what
//! the running daemon's warm pool holds.

use std::path::Path;
use std::time::Duration;

use super::runsc::{Output, Runsc};
use crate::doctor::Check;

/// Check the runsc at `binary`: present and answering `--version`.
pub fn doctor(binary: &Path) -> Check {
    let runsc = Runsc {
        binary: binary.to_path_buf(),
        global: Vec::new(),
        hide_sysctl_net: false,
    };
    let (ok, detail) = match runsc.run(&["--version"], Output::Capture, Duration::from_secs(10)) {
        Ok(out) => (
            true,
            format!(
                "{} at {}: `dwell create --isolation gvisor` works, and so do hibernate and \
                 resume to disk",
                out.lines().next().unwrap_or("runsc").trim(),
                binary.display()
            ),
        ),
        Err(e) => (
            false,
            format!(
                "unavailable ({}); gVisor sandboxes and hibernation need runsc: \
                 `scripts/install-deps.sh --gvisor` from dwell's source tree, or \
                 `apt-get install -t bookworm-backports runsc` with bookworm-backports enabled",
                match e {
                    crate::Error::Unsupported { why, .. } => why,
                    other => other.to_string(),
                }
            ),
        ),
    };
    Check {
        name: "runtime gvisor".into(),
        ok,
        detail,
    }
}

/// The warm pool of the daemon whose runsc root is `<data_dir>/runsc`,
/// from the status file it keeps (see [`super::pool`]). Informational.
pub fn pool(data_dir: &Path) -> Check {
    let file = data_dir.join("runsc-pool").join(super::pool::STATUS_FILE);
    let status = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice::<super::pool::PoolStatus>(&b).ok());
    let cgroup2_only = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let detail = match status {
        Some(p) => format!(
            "size {} (--gvisor-pool), {} ready, {} MiB per pooled sandbox \
             (--gvisor-pool-memory: gVisor creates with that memory start warm; --net, private \
             networks and raw sockets start cold), {} warm creates, {} failed refills",
            p.size,
            p.ready,
            p.memory_bytes >> 20,
            p.claimed_total,
            p.refill_failures_total
        ),
        None if cgroup2_only => "off: this host has only cgroup2, and a claim renames the pool \
             sandbox's cgroup (cgroup v1 only); every gVisor create starts cold"
            .into(),
        None => format!(
            "no running daemon with a pool here ({} is missing): `dwell serve --gvisor-pool N` \
             (default 2; 0 is off)",
            file.display()
        ),
    };
    Check {
        name: "gvisor warm pool".into(),
        ok: true,
        detail,
    }
}
