//! Cgroups of a sandbox: the [`Cgroup`] trait the lifecycle code is written
//! against, host detection (pure v1, hybrid, pure v2) and the composite that
//! a sandbox actually gets.
//!
//! On a hybrid host the limits live in the v1 controllers and the sandbox is
//! also placed in a cgroup of the unified (v2) hierarchy, whose
//! `cgroup.freeze` and `cgroup.kill` are used for pause and stop.

pub mod host;
pub mod v1;
pub mod v2;

use std::io;
use std::path::Path;

use crate::error::Context;
use crate::{Resources, Result, Stats};

pub use host::{CgroupMode, HostCgroups};

/// What the lifecycle code needs from a sandbox's cgroup(s). Implemented by
/// [`SandboxCgroup`] for real and by test doubles.
pub trait Cgroup {
    /// Create the cgroup directories and write the limits.
    fn create(&self, resources: &Resources) -> Result<()>;
    /// Move a process (and so its future children) into the cgroup(s).
    fn add_process(&self, pid: i32) -> Result<()>;
    /// Pids of every process in the cgroup(s) (empty when absent).
    fn procs(&self) -> Result<Vec<i32>>;
    /// Ask the kernel to freeze (true) or thaw (false).
    fn request_freeze(&self, frozen: bool) -> Result<()>;
    /// Whether the freeze has completed (false when absent).
    fn is_frozen(&self) -> Result<bool>;
    /// Kill every process with `cgroup.kill` if the host has it; returns
    /// false when it does not and the caller must signal pids itself.
    fn kill_all(&self) -> Result<bool>;
    /// Usage counters.
    fn stats(&self) -> Result<Stats>;
    /// Whether any of the directories exists.
    fn exists(&self) -> bool;
    /// Remove the directories (must be empty of processes). Idempotent.
    fn remove(&self) -> Result<()>;
}

/// The cgroups of one sandbox on this host.
#[derive(Debug, Clone)]
pub struct SandboxCgroup {
    pub v1: Option<v1::V1Group>,
    pub v2: Option<v2::V2Group>,
}

impl SandboxCgroup {
    /// The cgroups of sandbox `id` under `parent` (which may hold slashes).
    pub fn new(host: &HostCgroups, parent: &str, id: &str) -> SandboxCgroup {
        let rel = Path::new(parent).join(id);
        SandboxCgroup {
            v1: (!host.v1.is_empty()).then(|| v1::V1Group::new(&host.v1, &rel)),
            v2: host
                .v2
                .as_ref()
                .map(|root| v2::V2Group::new(root.join(&rel), host.mode == CgroupMode::V2)),
        }
    }

    /// The OOM kill count, as [`Cgroup::stats`] reports it, from one file
    /// read; `None` when it cannot be read (no such cgroup).
    pub fn oom_kills(&self) -> Option<u64> {
        match (&self.v1, &self.v2) {
            (Some(v1), _) => v1.oom_kills(),
            (None, Some(v2)) => v2.oom_kills(),
            _ => None,
        }
    }

    fn freezer_is_v2(&self) -> bool {
        self.v2.as_ref().is_some_and(|g| g.can_freeze())
    }
}

impl Cgroup for SandboxCgroup {
    fn create(&self, resources: &Resources) -> Result<()> {
        if let Some(v1) = &self.v1 {
            v1.create(resources)?;
        }
        if let Some(v2) = &self.v2 {
            v2.create(resources)?;
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        if let Some(v1) = &self.v1 {
            v1.add_process(pid)?;
        }
        if let Some(v2) = &self.v2 {
            v2.add_process(pid)?;
        }
        Ok(())
    }

    fn procs(&self) -> Result<Vec<i32>> {
        let mut all = Vec::new();
        if let Some(v1) = &self.v1 {
            all.extend(v1.procs()?);
        }
        if let Some(v2) = &self.v2 {
            all.extend(v2.procs()?);
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    fn request_freeze(&self, frozen: bool) -> Result<()> {
        match (&self.v1, &self.v2) {
            (_, Some(v2)) if self.freezer_is_v2() => v2.request_freeze(frozen),
            (Some(v1), _) => v1.request_freeze(frozen),
            _ => Err(no_freezer()),
        }
    }

    fn is_frozen(&self) -> Result<bool> {
        match (&self.v1, &self.v2) {
            (_, Some(v2)) if self.freezer_is_v2() => v2.is_frozen(),
            (Some(v1), _) => v1.is_frozen(),
            _ => Err(no_freezer()),
        }
    }

    fn kill_all(&self) -> Result<bool> {
        match &self.v2 {
            Some(v2) => v2.kill_all(),
            None => Ok(false),
        }
    }

    fn stats(&self) -> Result<Stats> {
        match (&self.v1, &self.v2) {
            (Some(v1), _) => v1.stats(),
            (None, Some(v2)) => v2.stats(),
            _ => Ok(Stats::default()),
        }
    }

    fn exists(&self) -> bool {
        self.v1.as_ref().is_some_and(|g| g.exists()) || self.v2.as_ref().is_some_and(|g| g.exists())
    }

    fn remove(&self) -> Result<()> {
        if let Some(v1) = &self.v1 {
            v1.remove()?;
        }
        if let Some(v2) = &self.v2 {
            v2.remove()?;
        }
        Ok(())
    }
}

fn no_freezer() -> crate::Error {
    crate::Error::Unsupported {
        what: "the cgroup freezer".into(),
        why: "neither a v1 freezer controller nor cgroup.freeze (cgroup v2) is mounted".into(),
        fix: "mount the freezer controller or use a kernel with cgroup v2 (5.2+)".into(),
    }
}

/// Read a cgroup file; `None` if it does not exist.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e).context(|| format!("reading {}", path.display())),
    }
}

/// Write a cgroup file, naming the file and value on failure.
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).context(|| format!("writing {value:?} to {}", path.display()))
}

/// Parse a number, where `max` means unlimited.
pub(crate) fn parse_u64(s: &str) -> u64 {
    let s = s.trim();
    if s == "max" {
        u64::MAX
    } else {
        s.parse().unwrap_or(0)
    }
}

/// The value of `key` in a flat-keyed file (`key value` per line).
pub(crate) fn keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next().map(parse_u64))
            .flatten()
    })
}

/// Pids in a `cgroup.procs` file.
pub(crate) fn read_procs(path: &Path) -> Result<Vec<i32>> {
    Ok(read_opt(path)?
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// rmdir that tolerates a missing directory and retries while the kernel
/// still reports the cgroup busy (exiting tasks are released lazily).
pub(crate) fn rmdir(path: &Path) -> Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                return Err(e).context(|| {
                    format!(
                        "removing cgroup {} (processes still inside?)",
                        path.display()
                    )
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(parse_u64("max\n"), u64::MAX);
        assert_eq!(parse_u64("42\n"), 42);
        let c = "oom 0\noom_kill 3\n";
        assert_eq!(keyed(c, "oom_kill"), Some(3));
        assert_eq!(keyed(c, "missing"), None);
    }
}
