//! A sandbox's cgroup in the unified (v2) hierarchy. On a pure v2 host it
//! carries the limits (memory.max, cpu.max, pids.max); on a hybrid host it
//! has no controllers and serves for `cgroup.freeze` and `cgroup.kill`.

use std::path::{Path, PathBuf};

use super::{keyed, parse_u64, read_opt, read_procs, rmdir, write};
use crate::error::Context;
use crate::{Resources, Result, Stats};

/// Period used for cpu.max, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

#[derive(Debug, Clone)]
pub struct V2Group {
    dir: PathBuf,
    /// Whether limits are set here (pure v2) or only freeze/kill (hybrid).
    limits: bool,
}

impl V2Group {
    pub fn new(dir: PathBuf, limits: bool) -> V2Group {
        V2Group { dir, limits }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn can_freeze(&self) -> bool {
        // The parent has cgroup.freeze as soon as the kernel supports it
        // (every non-root cgroup has the file).
        self.dir.join("cgroup.freeze").exists()
            || self
                .dir
                .parent()
                .is_some_and(|p| p.join("cgroup.freeze").exists())
    }

    /// Enable the controllers on every ancestor from the mount root down to
    /// the parent, so the sandbox's directory gets memory/cpu/pids files.
    fn enable_controllers(&self) -> Result<()> {
        let Some(parent) = self.dir.parent() else {
            return Ok(());
        };
        let mut chain: Vec<&Path> = parent.ancestors().collect();
        chain.reverse();
        for dir in chain {
            let control = dir.join("cgroup.subtree_control");
            let Some(enabled) = read_opt(&control)? else {
                continue;
            };
            let available = read_opt(&dir.join("cgroup.controllers"))?.unwrap_or_default();
            for c in CONTROLLERS {
                let has = |s: &str| s.split_whitespace().any(|w| w == c);
                if has(available.as_str()) && !has(enabled.as_str()) {
                    write(&control, &format!("+{c}"))?;
                }
            }
        }
        Ok(())
    }

    pub fn create(&self, r: &Resources) -> Result<()> {
        if let Some(parent) = self.dir.parent() {
            std::fs::create_dir_all(parent)
                .context(|| format!("creating cgroup {}", parent.display()))?;
        }
        if self.limits {
            self.enable_controllers()?;
        }
        std::fs::create_dir_all(&self.dir)
            .context(|| format!("creating cgroup {}", self.dir.display()))?;
        if !self.limits {
            return Ok(());
        }
        let need = |f: &str| -> Result<PathBuf> {
            let p = self.dir.join(f);
            if p.exists() {
                Ok(p)
            } else {
                Err(crate::Error::Unsupported {
                    what: format!("cgroup v2 file {f}"),
                    why: format!("{} lacks it (controller not enabled)", self.dir.display()),
                    fix: "enable the cpu, memory and pids controllers in the parent's \
                          cgroup.subtree_control (delegate them to dwell's cgroup)"
                        .into(),
                })
            }
        };
        write(&need("memory.max")?, &r.memory_bytes.to_string())?;
        let swap = self.dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, "0")?;
        }
        let quota = ((r.vcpus * CPU_PERIOD_US as f64) as u64).max(1000);
        write(&need("cpu.max")?, &format!("{quota} {CPU_PERIOD_US}"))?;
        write(&need("pids.max")?, &r.pids.to_string())?;
        Ok(())
    }

    pub fn add_process(&self, pid: i32) -> Result<()> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    pub fn procs(&self) -> Result<Vec<i32>> {
        read_procs(&self.dir.join("cgroup.procs"))
    }

    pub fn request_freeze(&self, frozen: bool) -> Result<()> {
        write(
            &self.dir.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        )
    }

    pub fn is_frozen(&self) -> Result<bool> {
        Ok(read_opt(&self.dir.join("cgroup.events"))?.and_then(|c| keyed(&c, "frozen")) == Some(1))
    }

    pub fn kill_all(&self) -> Result<bool> {
        let kill = self.dir.join("cgroup.kill");
        if !self.dir.exists() {
            return Ok(true);
        }
        if !kill.exists() {
            return Ok(false);
        }
        write(&kill, "1")?;
        Ok(true)
    }

    /// The OOM kill count alone (one file read).
    pub fn oom_kills(&self) -> Option<u64> {
        read_opt(&self.dir.join("memory.events"))
            .ok()
            .flatten()
            .and_then(|c| keyed(&c, "oom_kill"))
    }

    pub fn stats(&self) -> Result<Stats> {
        let get = |f: &str| -> Result<Option<String>> { read_opt(&self.dir.join(f)) };
        Ok(Stats {
            memory_bytes: get("memory.current")?.map(|v| parse_u64(&v)).unwrap_or(0),
            memory_limit_bytes: get("memory.max")?.map(|v| parse_u64(&v)).unwrap_or(0),
            cpu_usage_ns: get("cpu.stat")?
                .and_then(|c| keyed(&c, "usage_usec"))
                .unwrap_or(0)
                .saturating_mul(1000),
            pids: get("pids.current")?.map(|v| parse_u64(&v)).unwrap_or(0),
            oom_kills: get("memory.events")?
                .and_then(|c| keyed(&c, "oom_kill"))
                .unwrap_or(0),
        })
    }

    pub fn exists(&self) -> bool {
        self.dir.exists()
    }

    pub fn remove(&self) -> Result<()> {
        rmdir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake pure-v2 tree in a temporary directory: the files a kernel
    /// would provide are created by hand.
    #[test]
    fn limits_and_stats_on_a_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join("dwell");
        let dir = parent.join("sb1");
        std::fs::create_dir_all(&dir).unwrap();
        for d in [root.path(), parent.as_path()] {
            std::fs::write(d.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
            std::fs::write(d.join("cgroup.subtree_control"), "").unwrap();
        }
        for f in ["memory.max", "memory.swap.max", "cpu.max", "pids.max"] {
            std::fs::write(dir.join(f), "max\n").unwrap();
        }
        let g = V2Group::new(dir.clone(), true);
        let r = Resources {
            vcpus: 1.5,
            memory_bytes: 512 << 20,
            pids: 64,
        };
        g.create(&r).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), (512u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(read("pids.max"), "64");
        // The last controller written to the parent's subtree_control.
        assert_eq!(
            std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap(),
            "+pids"
        );

        std::fs::write(dir.join("memory.current"), "4096\n").unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 250\nuser_usec 200\n").unwrap();
        std::fs::write(dir.join("pids.current"), "3\n").unwrap();
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n",
        )
        .unwrap();
        let s = g.stats().unwrap();
        assert_eq!(s.memory_bytes, 4096);
        assert_eq!(s.memory_limit_bytes, 512 << 20);
        assert_eq!(s.cpu_usage_ns, 250_000);
        assert_eq!(s.pids, 3);
        assert_eq!(s.oom_kills, 2);

        std::fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        assert!(g.is_frozen().unwrap());
        std::fs::write(dir.join("cgroup.procs"), "12\n13\n").unwrap();
        assert_eq!(g.procs().unwrap(), vec![12, 13]);
    }

    #[test]
    fn missing_controller_is_explained() {
        let root = tempfile::tempdir().unwrap();
        let g = V2Group::new(root.path().join("dwell/sb2"), true);
        let err = g
            .create(&Resources {
                vcpus: 1.0,
                memory_bytes: 64 << 20,
                pids: 10,
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("memory.max") && err.contains("subtree_control"),
            "{err}"
        );
    }
}
