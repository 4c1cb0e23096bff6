//! Pause: freeze every process of a sandbox and wait (short, doubling
//! sleeps from 20 µs) until the kernel says the whole cgroup is frozen.

use std::time::{Duration, Instant};

use crate::host::cgroup::Cgroup;
use crate::host::wait::Backoff;
use crate::{Error, Result};

/// How long a freeze may take before it is reported as stuck.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// First sleep of the freeze and thaw waits. The kernel usually completes
/// a freeze in tens of microseconds; the wait doubles from here, so it
/// answers within about twice the kernel's time. (Neither the v1
/// `freezer.state` nor every kernel's `cgroup.events` notifies reliably
/// enough to block on, and both hierarchies must work.)
pub const FIRST_NAP: Duration = Duration::from_micros(20);

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
    let mut backoff = Backoff::new(FIRST_NAP, Duration::from_millis(50));
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
        backoff.sleep_until(deadline);
    }
}
