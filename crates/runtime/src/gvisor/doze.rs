//! Doze: an idle gVisor sandbox frozen with its cgroup freezer, so that it
//! costs no CPU while nothing runs in it.
//!
//! runsc's default platform (systrap) keeps a goroutine in the sentry that
//! wakes every 400 µs for as long as the sandbox lives, busy or not: about
//! 27 ms of CPU per second per idle sandbox on a 2-core test machine, the
//! same for a plain `runsc run` of `sleep` as for a dwell sandbox (neither
//! the agent nor the daemon wakes it). That caps a node at a few dozen idle
//! sandboxes. The ptrace platform has no such timer but makes every system
//! call 10-20 times slower, and `runsc pause` stops the sandbox's tasks,
//! not that goroutine. Freezing the whole cgroup (sentry, gofer, stubs)
//! stops it: a frozen sandbox uses no CPU at all, and thawing it takes well
//! under a millisecond to a few ms.
//!
//! The control plane decides when a sandbox dozes (only its agent runs, no
//! call is open, and it has been quiet for a while) and wakes it before any
//! call reaches its agent. This module freezes and thaws; the runtime
//! thaws first in every operation that needs the sentry to run: `pause`,
//! `resume`, `hibernate`, runsc's `events`, and `stop` (under cgroup v1 a
//! frozen process does not die of SIGKILL until thawed), and connecting to
//! the agent. A paused sandbox (`runsc pause`) is frozen as well, so that it
//! costs nothing either; waking for a connection leaves a paused sandbox
//! frozen (its agent could not answer anyway): only `resume` thaws it.

use std::time::Duration;

use crate::host::cgroup::Cgroup;
use crate::ns::{pause, resume};
use crate::Result;

/// How long a freeze or a thaw may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Freeze the sandbox's cgroup and wait until the kernel says it is frozen
/// (thawed again when it does not freeze in time).
pub fn doze(cg: &dyn Cgroup) -> Result<()> {
    pause::freeze(cg, TIMEOUT)
}

/// Thaw the sandbox's cgroup if it is frozen; nothing when it has no
/// cgroup (not running), no freezer, or is not frozen, so a host without a
/// writable freezer runs gVisor sandboxes as before (they never doze).
pub fn wake(cg: &dyn Cgroup) -> Result<()> {
    if !frozen(cg) {
        return Ok(());
    }
    resume::thaw(cg, TIMEOUT).map_err(|e| {
        crate::Error::Other(format!(
            "{e}; the sandbox cannot run until it thaws: stop and start it \
             (`dwell stop` / `dwell start`)"
        ))
    })
}

/// Whether the sandbox's cgroup is frozen (false without a cgroup or a
/// freezer).
pub fn frozen(cg: &dyn Cgroup) -> bool {
    cg.exists() && cg.is_frozen().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Resources, Stats};
    use std::cell::RefCell;

    /// A cgroup that freezes when asked, and records what it was asked.
    #[derive(Default)]
    struct Double {
        exists: bool,
        frozen: RefCell<bool>,
        asked: RefCell<Vec<bool>>,
    }

    impl Cgroup for Double {
        fn create(&self, _: &Resources) -> Result<()> {
            Ok(())
        }
        fn add_process(&self, _: i32) -> Result<()> {
            Ok(())
        }
        fn procs(&self) -> Result<Vec<i32>> {
            Ok(Vec::new())
        }
        fn request_freeze(&self, frozen: bool) -> Result<()> {
            self.asked.borrow_mut().push(frozen);
            *self.frozen.borrow_mut() = frozen;
            Ok(())
        }
        fn is_frozen(&self) -> Result<bool> {
            Ok(*self.frozen.borrow())
        }
        fn kill_all(&self) -> Result<bool> {
            Ok(true)
        }
        fn stats(&self) -> Result<Stats> {
            Ok(Stats::default())
        }
        fn exists(&self) -> bool {
            self.exists
        }
        fn remove(&self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn doze_freezes_and_wake_thaws() {
        let cg = Double {
            exists: true,
            ..Default::default()
        };
        doze(&cg).unwrap();
        assert!(cg.is_frozen().unwrap());
        wake(&cg).unwrap();
        assert!(!cg.is_frozen().unwrap());
        assert_eq!(*cg.asked.borrow(), [true, false]);
    }

    #[test]
    fn waking_a_sandbox_without_a_cgroup_does_nothing_and_dozing_one_fails() {
        let cg = Double::default();
        wake(&cg).unwrap();
        assert!(cg.asked.borrow().is_empty());
        assert!(doze(&cg).is_err());
    }

    #[test]
    fn waking_a_sandbox_that_is_not_frozen_writes_nothing() {
        let cg = Double {
            exists: true,
            ..Default::default()
        };
        wake(&cg).unwrap();
        assert!(cg.asked.borrow().is_empty());
        assert!(!frozen(&cg));
    }
}
