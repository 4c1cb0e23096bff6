//! Reading memory use from /proc and the cgroup v1 memory controller.

use std::path::{Path, PathBuf};

/// One `Key:   123 kB` field of a /proc file, in bytes.
fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// Resident and proportional set size of a process, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcMem {
    pub rss: u64,
    pub pss: u64,
}

impl std::ops::AddAssign for ProcMem {
    fn add_assign(&mut self, o: ProcMem) {
        self.rss += o.rss;
        self.pss += o.pss;
    }
}

/// `VmRSS` from /proc/<pid>/status and `Pss` from smaps_rollup (`None`
/// when the process is gone).
pub fn proc_mem(pid: u32) -> Option<ProcMem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    Some(ProcMem {
        rss: kb_field(&status, "VmRSS").unwrap_or(0),
        pss: kb_field(&rollup, "Pss").unwrap_or(0),
    })
}

/// The command name of a process.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The pid in a dwell pid file (`<pid> <start time>`).
pub fn pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `MemTotal - MemAvailable` of the host, in bytes.
pub fn host_used() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    kb_field(&m, "MemTotal").unwrap_or(0) - kb_field(&m, "MemAvailable").unwrap_or(0)
}

/// The cgroup v1 memory cgroup of a sandbox.
pub struct MemCgroup {
    pub dir: PathBuf,
}

impl MemCgroup {
    pub fn new(parent: &str, id: &str) -> MemCgroup {
        MemCgroup {
            dir: Path::new("/sys/fs/cgroup/memory").join(parent).join(id),
        }
    }

    fn read(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(file)).ok()
    }

    pub fn procs(&self) -> Vec<u32> {
        self.read("cgroup.procs")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    pub fn usage(&self) -> Option<u64> {
        self.read("memory.usage_in_bytes")?.trim().parse().ok()
    }

    /// Kernel memory charged to the cgroup (slab, page tables, ...).
    pub fn kmem(&self) -> Option<u64> {
        self.read("memory.kmem.usage_in_bytes")?.trim().parse().ok()
    }

    /// One counter of memory.stat (e.g. `rss`, `cache`, `mapped_file`).
    pub fn stat(&self, key: &str) -> Option<u64> {
        self.read("memory.stat")?.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok())?
        })
    }
}

/// Find the cgroup parent (`dwell` or `dwell-<hash>`) that holds `id`.
pub fn find_parent(id: &str) -> Option<String> {
    let rd = std::fs::read_dir("/sys/fs/cgroup/memory").ok()?;
    rd.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n == "dwell" || n.starts_with("dwell-"))
        .find(|n| Path::new("/sys/fs/cgroup/memory").join(n).join(id).is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kb_fields() {
        let t = "Name:\tx\nVmRSS:\t    1234 kB\nPss:  10 kB\n";
        assert_eq!(kb_field(t, "VmRSS"), Some(1234 * 1024));
        assert_eq!(kb_field(t, "Pss"), Some(10 * 1024));
        assert_eq!(kb_field(t, "VmHWM"), None);
    }

    #[test]
    fn reads_own_process() {
        let m = proc_mem(std::process::id()).unwrap();
        assert!(m.rss > 0);
        assert!(host_used() > 0);
    }
}
