//! `dwell doctor` for the gVisor runtime: whether runsc is installed and
//! runs, so users learn which isolation levels this host offers.

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
