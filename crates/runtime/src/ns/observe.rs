//! Observe: what of a sandbox runs on the host right now (pid file checked
//! against the process start time, plus the freezer state), its usage
//! counters, and which sandboxes have cgroups under the parent.

use super::layout;
use super::pidfile;
use crate::host::cgroup::Cgroup;
use crate::{Observed, Result, SandboxConfig};

/// Running / Paused / Stopped from the pid file and the cgroup.
pub fn observe(config: &SandboxConfig, cg: &dyn Cgroup) -> Result<Observed> {
    let pid = pidfile::live_pid(&layout::state_file(config, layout::PID_FILE))?;
    let alive = pid.is_some() || (cg.exists() && !cg.procs()?.is_empty());
    if !alive {
        return Ok(Observed::Stopped);
    }
    if cg.exists() && cg.is_frozen()? {
        Ok(Observed::Paused)
    } else {
        Ok(Observed::Running)
    }
}

/// Names of the directories under each parent dir (sandbox ids).
pub fn list_ids(parent_dirs: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for dir in parent_dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if let Some(name) = e.file_name().to_str() {
                    if layout::validate_id(name).is_ok() {
                        ids.push(name.to_string());
                    }
                }
            }
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}
