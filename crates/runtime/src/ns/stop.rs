//! Stop: kill every process of a sandbox, wait until its cgroup is empty
//! and remove what the runtime created on the host. Idempotent.

use std::time::{Duration, Instant};

use crate::host::cgroup::Cgroup;
use crate::host::sys;
use crate::{Error, Result};

/// How long the processes of a killed sandbox may take to exit.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Kill all processes in `cg` and wait until it is empty, then remove it.
///
/// With `cgroup.kill` the kernel kills atomically. Without it, the cgroup
/// is frozen first so that nothing can fork between reading the pid list
/// and signalling it, every pid gets SIGKILL, and the cgroup is thawed so
/// the signals are delivered.
pub fn kill_and_remove(cg: &dyn Cgroup, timeout: Duration) -> Result<()> {
    if !cg.exists() {
        return Ok(());
    }
    let deadline = Instant::now() + timeout;
    loop {
        let procs = cg.procs()?;
        if procs.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Error::Other(format!(
                "processes {procs:?} of the sandbox survived SIGKILL for {timeout:?} \
                 (stuck in the kernel?); retry stop later"
            )));
        }
        if !cg.kill_all()? {
            let frozen = cg.request_freeze(true).is_ok();
            for pid in cg.procs()? {
                sys::kill(pid, libc::SIGKILL).map_err(|e| Error::Io {
                    context: format!("sending SIGKILL to {pid}"),
                    source: e,
                })?;
            }
            if frozen {
                cg.request_freeze(false)?;
            }
        } else {
            // A frozen cgroup still dies on cgroup.kill, but thaw anyway in
            // case a v1 freezer also holds it.
            let _ = cg.request_freeze(false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cg.remove()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::cgroup::Cgroup;
    use crate::{Resources, Stats};
    use std::cell::RefCell;

    /// A cgroup whose processes die when signalled while thawed.
    #[derive(Default)]
    struct Double {
        procs: RefCell<Vec<i32>>,
        frozen: RefCell<bool>,
        has_kill: bool,
        log: RefCell<Vec<String>>,
        removed: RefCell<bool>,
    }

    impl Cgroup for Double {
        fn create(&self, _: &Resources) -> Result<()> {
            Ok(())
        }
        fn add_process(&self, pid: i32) -> Result<()> {
            self.procs.borrow_mut().push(pid);
            Ok(())
        }
        fn procs(&self) -> Result<Vec<i32>> {
            Ok(self.procs.borrow().clone())
        }
        fn request_freeze(&self, f: bool) -> Result<()> {
            self.log.borrow_mut().push(format!("freeze={f}"));
            *self.frozen.borrow_mut() = f;
            if !f {
                // Pending SIGKILLs are delivered on thaw; i32::MAX stands
                // for a process that never dies.
                self.procs.borrow_mut().retain(|p| *p == i32::MAX);
            }
            Ok(())
        }
        fn is_frozen(&self) -> Result<bool> {
            Ok(*self.frozen.borrow())
        }
        fn kill_all(&self) -> Result<bool> {
            self.log.borrow_mut().push("kill".into());
            if self.has_kill {
                self.procs.borrow_mut().clear();
            }
            Ok(self.has_kill)
        }
        fn stats(&self) -> Result<Stats> {
            Ok(Stats::default())
        }
        fn exists(&self) -> bool {
            !*self.removed.borrow()
        }
        fn remove(&self) -> Result<()> {
            *self.removed.borrow_mut() = true;
            Ok(())
        }
    }

    #[test]
    fn uses_cgroup_kill_when_present() {
        let d = Double {
            has_kill: true,
            ..Default::default()
        };
        d.add_process(7).unwrap();
        kill_and_remove(&d, Duration::from_secs(1)).unwrap();
        assert!(*d.removed.borrow());
        assert_eq!(d.log.borrow()[0], "kill");
        // Idempotent.
        kill_and_remove(&d, Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn freezes_signals_and_thaws_without_cgroup_kill() {
        let d = Double::default();
        // Pids beyond pid_max: the real kill(2) returns ESRCH (success).
        d.procs.borrow_mut().extend([i32::MAX - 1, i32::MAX - 2]);
        kill_and_remove(&d, Duration::from_secs(1)).unwrap();
        assert!(*d.removed.borrow());
        assert_eq!(
            &d.log.borrow()[..3],
            ["kill", "freeze=true", "freeze=false"]
        );
    }

    #[test]
    fn reports_survivors() {
        let d = Double {
            has_kill: false,
            ..Default::default()
        };
        // A pid that never dies in the double and does not exist on the
        // host (beyond pid_max), so the real kill(2) is harmless.
        d.procs.borrow_mut().push(i32::MAX);
        let err = kill_and_remove(&d, Duration::from_millis(50)).unwrap_err();
        assert!(err.to_string().contains("survived"), "{err}");
        assert!(!*d.removed.borrow());
        let log = d.log.borrow();
        assert_eq!(&log[..3], ["kill", "freeze=true", "freeze=false"]);
    }
}
