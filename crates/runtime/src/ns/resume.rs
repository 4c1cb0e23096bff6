//! Resume: thaw the sandbox's cgroup and wait until it is no longer frozen.

use std::time::{Duration, Instant};

use super::pause::FIRST_NAP;
use crate::host::cgroup::Cgroup;
use crate::host::wait::Backoff;
use crate::{Error, Result};

/// Thaw and wait (bounded) until the kernel reports it thawed.
pub fn thaw(cg: &dyn Cgroup, timeout: Duration) -> Result<()> {
    if !cg.exists() {
        return Err(Error::Other(
            "cannot resume: the sandbox is not running (its cgroup does not exist)".into(),
        ));
    }
    cg.request_freeze(false)?;
    let deadline = Instant::now() + timeout;
    let mut backoff = Backoff::new(FIRST_NAP, Duration::from_millis(20));
    while cg.is_frozen()? {
        if Instant::now() >= deadline {
            return Err(Error::Other(format!(
                "the sandbox is still frozen {timeout:?} after asking the kernel to thaw it"
            )));
        }
        backoff.sleep_until(deadline);
    }
    Ok(())
}
