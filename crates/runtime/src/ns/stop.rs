//! Stop: kill every process of a sandbox, wait until its cgroup is empty
//! and remove what the runtime created on the host. Idempotent.

use std::time::{Duration, Instant};

use super::{layout, pidfile};
use crate::host::cgroup::Cgroup;
use crate::host::Host;
use crate::{Error, Result, SandboxConfig};

/// How long the processes of a killed sandbox may take to exit.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Kill all processes in `cg` and wait until it is empty, then remove it.
///
/// With `cgroup.kill` the kernel kills atomically. Without it, the cgroup
/// is frozen first so that nothing can fork between reading the pid list
/// and signalling it, every pid gets SIGKILL, and the cgroup is thawed so
/// the signals are delivered.
pub fn kill_and_remove(host: &dyn Host, cg: &dyn Cgroup, timeout: Duration) -> Result<()> {
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
                host.kill(pid, libc::SIGKILL).map_err(|e| Error::Io {
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

/// Stop sandbox `config` whose cgroup is `cg`: SIGKILL its PID 1 (in case
/// it left its cgroup), kill and remove the cgroup, reap PID 1, then
/// remove its network, the mounts left below its rootfs and its pid,
/// network and socket files. When the cgroup cannot be removed the rest
/// stays for the next stop (the reconciler retries).
pub fn release(host: &dyn Host, cg: &dyn Cgroup, config: &SandboxConfig) -> Result<()> {
    let pid_file = layout::state_file(config, layout::PID_FILE);
    let recorded = pidfile::recorded_pid(&pid_file);
    if let Some(pid) = pidfile::live_pid(&pid_file)? {
        let _ = host.kill(pid, libc::SIGKILL);
    }
    kill_and_remove(host, cg, KILL_TIMEOUT)?;
    if let Some(pid) = recorded {
        pidfile::reap(pid);
    }
    host.net_teardown(&config.id);
    // Also the private networks' ports and tables.
    super::release_leftovers(host, config);
    for f in [
        layout::PID_FILE,
        layout::NETWORK_FILE,
        layout::HOST_AGENT_SOCKET,
    ] {
        let _ = std::fs::remove_file(layout::state_file(config, f));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::recording::Recording;
    use crate::host::Mount;
    use crate::{Resources, Stats};
    use std::cell::RefCell;
    use std::path::Path;

    /// A cgroup whose processes die when signalled while thawed; its
    /// calls go into the host's log, so one log shows the whole sequence.
    struct Double<'a> {
        host: &'a Recording,
        procs: RefCell<Vec<i32>>,
        frozen: RefCell<bool>,
        has_kill: bool,
        removed: RefCell<bool>,
    }

    impl<'a> Double<'a> {
        fn new(host: &'a Recording, has_kill: bool) -> Double<'a> {
            Double {
                host,
                procs: RefCell::default(),
                frozen: RefCell::default(),
                has_kill,
                removed: RefCell::default(),
            }
        }

        fn note(&self, line: &str) -> Result<()> {
            self.host
                .note(format!("cgroup {line}"))
                .map_err(|e| Error::Other(e.to_string()))
        }
    }

    impl Cgroup for Double<'_> {
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
            self.note(if f { "freeze" } else { "thaw" })?;
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
            self.note("kill")?;
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
            self.note("remove")?;
            *self.removed.borrow_mut() = true;
            Ok(())
        }
    }

    #[test]
    fn uses_cgroup_kill_when_present() {
        let host = Recording::new();
        let d = Double::new(&host, true);
        d.add_process(7).unwrap();
        kill_and_remove(&host, &d, Duration::from_secs(1)).unwrap();
        assert!(*d.removed.borrow());
        assert_eq!(
            host.calls(),
            ["cgroup kill", "cgroup thaw", "cgroup remove"]
        );
        // Idempotent.
        kill_and_remove(&host, &d, Duration::from_secs(1)).unwrap();
        assert_eq!(host.calls().len(), 3);
    }

    #[test]
    fn freezes_signals_and_thaws_without_cgroup_kill() {
        let host = Recording::new();
        let d = Double::new(&host, false);
        d.procs.borrow_mut().extend([41, 42]);
        kill_and_remove(&host, &d, Duration::from_secs(1)).unwrap();
        assert!(*d.removed.borrow());
        assert_eq!(
            host.calls(),
            [
                "cgroup kill",
                "cgroup freeze",
                "kill 41 9",
                "kill 42 9",
                "cgroup thaw",
                "cgroup remove"
            ]
        );
    }

    #[test]
    fn reports_survivors() {
        let host = Recording::new();
        let d = Double::new(&host, false);
        d.procs.borrow_mut().push(i32::MAX);
        let err = kill_and_remove(&host, &d, Duration::from_millis(50)).unwrap_err();
        assert!(err.to_string().contains("survived"), "{err}");
        assert!(!*d.removed.borrow());
        assert_eq!(
            &host.calls()[..4],
            [
                "cgroup kill",
                "cgroup freeze",
                "kill 2147483647 9",
                "cgroup thaw"
            ]
        );
    }

    /// A stopped sandbox's state dir: a pid file naming this (live) test
    /// process, its network and socket files, and two mounts below its
    /// rootfs.
    fn sandbox(host: &Recording) -> (tempfile::TempDir, SandboxConfig) {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::host::recording::config(dir.path());
        std::fs::create_dir_all(dir.path().join(layout::HOST_AGENT_DIR)).unwrap();
        for f in [layout::NETWORK_FILE, layout::HOST_AGENT_SOCKET] {
            std::fs::write(layout::state_file(&config, f), b"").unwrap();
        }
        pidfile::write(
            &layout::state_file(&config, layout::PID_FILE),
            std::process::id() as i32,
        )
        .unwrap();
        let rootfs = layout::state_file(&config, layout::ROOTFS_DIR);
        for target in [rootfs.clone(), rootfs.join("proc")] {
            host.mount(&Mount {
                source: None,
                target: &target,
                fstype: Some("overlay"),
                flags: 0,
                data: None,
            })
            .unwrap();
        }
        host.clear();
        (dir, config)
    }

    #[test]
    fn stop_kills_pid_1_then_the_cgroup_then_removes_network_mounts_and_files() {
        let host = Recording::new();
        let (dir, config) = sandbox(&host);
        let cg = Double::new(&host, true);
        // The sandbox's processes besides PID 1.
        cg.add_process(4242).unwrap();
        release(&host, &cg, &config).unwrap();
        let s = dir.path().display();
        assert_eq!(
            host.calls(),
            [
                format!("kill {} 9", std::process::id()),
                "cgroup kill".into(),
                "cgroup thaw".into(),
                "cgroup remove".into(),
                "net teardown sb1".into(),
                format!("unmount {s}/rootfs"),
                format!("unmount {s}/rootfs"),
            ]
        );
        assert!(host.mounted().is_empty());
        for f in [
            layout::PID_FILE,
            layout::NETWORK_FILE,
            layout::HOST_AGENT_SOCKET,
        ] {
            assert!(!Path::new(&layout::state_file(&config, f)).exists(), "{f}");
        }
        // Idempotent: nothing left to kill or remove; one unmount that
        // finds nothing mounted.
        host.clear();
        release(&host, &cg, &config).unwrap();
        assert_eq!(
            host.calls(),
            [
                "net teardown sb1".to_string(),
                format!("unmount {s}/rootfs")
            ]
        );
    }

    #[test]
    fn a_cgroup_that_cannot_be_removed_fails_the_stop_and_leaves_the_rest_for_the_retry() {
        let host = Recording::new();
        let (_dir, config) = sandbox(&host);
        let cg = Double::new(&host, true);
        host.fail_on("cgroup remove");
        assert!(release(&host, &cg, &config).is_err());
        assert_eq!(host.mounted().len(), 2, "nothing unmounted yet");
        assert!(!host.calls().iter().any(|c| c.starts_with("net teardown")));
        // The retry finishes the job.
        release(&host, &cg, &config).unwrap();
        assert!(host.mounted().is_empty());
    }
}
