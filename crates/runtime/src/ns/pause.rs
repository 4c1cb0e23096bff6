//! Pause: freeze every process of a sandbox and wait until the kernel says
//! the whole cgroup is frozen.

use std::time::{Duration, Instant};

use super::cgroup::Cgroup;
use crate::{Error, Result};

/// How long a freeze may take before it is reported as stuck.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// Freeze and wait (bounded) until frozen. A sandbox without cgroups is an
/// error: there is nothing to freeze.
pub fn freeze(cg: &dyn Cgroup, timeout: Duration) -> Result<()> {
    if !cg.exists() {
        return Err(Error::Other(
            "cannot pause: the sandbox is not running (its cgroup does not exist)".into(),
        ));
    }
    cg.request_freeze(true)?;
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(1);
    loop {
        if cg.is_frozen()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            // Do not leave a half-frozen sandbox behind.
            let _ = cg.request_freeze(false);
            return Err(Error::Other(format!(
                "the sandbox did not freeze within {timeout:?} (a process may be stuck in an \
                 uninterruptible sleep, e.g. on a hung NFS mount); it was thawed again"
            )));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(50));
    }
}
