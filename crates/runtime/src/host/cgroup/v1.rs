//! A sandbox's cgroups in the v1 hierarchies: one directory per controller
//! (memory, cpu, cpuacct, pids, freezer), limits written as v1 files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{keyed, parse_u64, read_opt, read_procs, rmdir, write};
use crate::error::Context;
use crate::{Resources, Result, Stats};

/// CFS period used for the CPU quota, in microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct V1Group {
    /// controller -> this sandbox's directory in it.
    dirs: BTreeMap<String, PathBuf>,
}

impl V1Group {
    pub fn new(mounts: &BTreeMap<String, PathBuf>, rel: &Path) -> V1Group {
        V1Group {
            dirs: mounts
                .iter()
                .map(|(c, m)| (c.clone(), m.join(rel)))
                .collect(),
        }
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.get(controller).map(PathBuf::as_path)
    }

    /// Distinct directories (co-mounted controllers share one).
    fn unique_dirs(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self.dirs.values().map(PathBuf::as_path).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Create the directories without writing limits.
    pub fn create_dirs(&self) -> Result<()> {
        for d in self.unique_dirs() {
            std::fs::create_dir_all(d).context(|| format!("creating cgroup {}", d.display()))?;
        }
        Ok(())
    }

    /// Take over the directories of `pool` (a warm-pool cgroup that holds
    /// `pid`) under this group's names: rename(2) within the same parent
    /// keeps the processes inside and costs no migration. A hierarchy
    /// where the rename fails (the name is held by a busy cgroup, or the
    /// kernel refuses) gets a fresh directory and `pid` is moved into it.
    /// A stale, empty cgroup of the same name is removed first.
    pub fn adopt(&self, pool: &V1Group, pid: i32) -> Result<()> {
        let mut done: Vec<&Path> = Vec::new();
        for (controller, to) in &self.dirs {
            if done.contains(&to.as_path()) {
                continue;
            }
            done.push(to);
            let Some(from) = pool.dir(controller) else {
                continue;
            };
            if to.exists() {
                let _ = std::fs::remove_dir(to);
            }
            if std::fs::rename(from, to).is_err() {
                std::fs::create_dir_all(to)
                    .context(|| format!("creating cgroup {}", to.display()))?;
                write(&to.join("cgroup.procs"), &pid.to_string())?;
            }
        }
        Ok(())
    }

    /// This group's directory in every hierarchy (co-mounted ones once).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.unique_dirs()
            .into_iter()
            .map(Path::to_path_buf)
            .collect()
    }

    pub fn create(&self, r: &Resources) -> Result<()> {
        self.create_dirs()?;
        if let Some(mem) = self.dir("memory") {
            let limit = r.memory_bytes.to_string();
            write(&mem.join("memory.limit_in_bytes"), &limit)?;
            let memsw = mem.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &limit)?;
            }
            let swappiness = mem.join("memory.swappiness");
            if swappiness.exists() {
                // Best effort: the file refuses writes under some parents.
                let _ = std::fs::write(swappiness, "0");
            }
        }
        if let Some(cpu) = self.dir("cpu") {
            let quota = ((r.vcpus * CFS_PERIOD_US as f64) as u64).max(1000);
            write(&cpu.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
            write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        if let Some(pids) = self.dir("pids") {
            write(&pids.join("pids.max"), &r.pids.to_string())?;
        }
        Ok(())
    }

    pub fn add_process(&self, pid: i32) -> Result<()> {
        for d in self.unique_dirs() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    pub fn procs(&self) -> Result<Vec<i32>> {
        let mut all = Vec::new();
        for d in self.unique_dirs() {
            all.extend(read_procs(&d.join("cgroup.procs"))?);
        }
        Ok(all)
    }

    fn freezer_state(&self) -> Result<Option<String>> {
        match self.dir("freezer") {
            Some(d) => Ok(read_opt(&d.join("freezer.state"))?.map(|s| s.trim().to_string())),
            None => Ok(None),
        }
    }

    pub fn request_freeze(&self, frozen: bool) -> Result<()> {
        let d = self
            .dir("freezer")
            .ok_or_else(|| crate::Error::Unsupported {
                what: "the v1 freezer controller".into(),
                why: "it is not mounted".into(),
                fix: "mount it at /sys/fs/cgroup/freezer".into(),
            })?;
        write(
            &d.join("freezer.state"),
            if frozen { "FROZEN" } else { "THAWED" },
        )
    }

    pub fn is_frozen(&self) -> Result<bool> {
        Ok(self.freezer_state()?.as_deref() == Some("FROZEN"))
    }

    /// The memory cgroup's OOM kill count alone (one file read).
    pub fn oom_kills(&self) -> Option<u64> {
        let mem = self.dir("memory")?;
        read_opt(&mem.join("memory.oom_control"))
            .ok()
            .flatten()
            .and_then(|c| keyed(&c, "oom_kill"))
    }

    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        if let Some(mem) = self.dir("memory") {
            let get = |f: &str| -> Result<u64> {
                Ok(read_opt(&mem.join(f))?.map(|v| parse_u64(&v)).unwrap_or(0))
            };
            s.memory_bytes = get("memory.usage_in_bytes")?;
            s.memory_limit_bytes = get("memory.limit_in_bytes")?;
            s.oom_kills = read_opt(&mem.join("memory.oom_control"))?
                .and_then(|c| keyed(&c, "oom_kill"))
                .unwrap_or(0);
        }
        if let Some(acct) = self.dir("cpuacct") {
            s.cpu_usage_ns = read_opt(&acct.join("cpuacct.usage"))?
                .map(|v| parse_u64(&v))
                .unwrap_or(0);
        }
        if let Some(pids) = self.dir("pids") {
            s.pids = read_opt(&pids.join("pids.current"))?
                .map(|v| parse_u64(&v))
                .unwrap_or(0);
        }
        Ok(s)
    }

    pub fn exists(&self) -> bool {
        self.unique_dirs().iter().any(|d| d.exists())
    }

    pub fn remove(&self) -> Result<()> {
        for d in self.unique_dirs() {
            rmdir(d)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_stats_on_a_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        let mounts: BTreeMap<String, PathBuf> = ["memory", "cpu", "cpuacct", "pids", "freezer"]
            .iter()
            .map(|c| (c.to_string(), root.path().join(c)))
            .collect();
        let g = V1Group::new(&mounts, Path::new("dwell/sb1"));
        let dir = |c: &str| root.path().join(c).join("dwell/sb1");
        std::fs::create_dir_all(dir("memory")).unwrap();
        std::fs::write(dir("memory").join("memory.memsw.limit_in_bytes"), "").unwrap();
        g.create(&Resources {
            vcpus: 0.5,
            memory_bytes: 128 << 20,
            pids: 32,
        })
        .unwrap();
        let read = |c: &str, f: &str| std::fs::read_to_string(dir(c).join(f)).unwrap();
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (128u64 << 20).to_string()
        );
        assert_eq!(
            read("memory", "memory.memsw.limit_in_bytes"),
            (128u64 << 20).to_string()
        );
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("pids", "pids.max"), "32");

        std::fs::write(dir("memory").join("memory.usage_in_bytes"), "100\n").unwrap();
        std::fs::write(
            dir("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n",
        )
        .unwrap();
        std::fs::write(dir("cpuacct").join("cpuacct.usage"), "777\n").unwrap();
        std::fs::write(dir("pids").join("pids.current"), "4\n").unwrap();
        let s = g.stats().unwrap();
        assert_eq!(
            (s.memory_bytes, s.cpu_usage_ns, s.pids, s.oom_kills),
            (100, 777, 4, 5)
        );
        g.request_freeze(true).unwrap();
        assert!(g.is_frozen().unwrap());
        g.request_freeze(false).unwrap();
        assert!(!g.is_frozen().unwrap());
    }
}
