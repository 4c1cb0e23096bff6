//! What the density case reads from the host: the CPU time of a sandbox's
//! cgroup and of a process, memory cgroup usage, and what a deleted
//! sandbox may have left behind (cgroups, mounts, loop devices).

use std::path::{Path, PathBuf};

use crate::memory::MemCgroup;

/// Where cgroups are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The v1 hierarchies that count CPU time, as hosts name them.
const CPUACCT_V1: [&str; 3] = ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"];

/// The cgroup parent (a directory directly below a hierarchy's root) that
/// holds sandbox `id`, looked for in the v1 memory and cpuacct hierarchies
/// and on a pure v2 host at the root; `dwell` or `dwell-...` only.
pub fn find_parent(id: &str) -> Option<String> {
    let roots = ["memory", "cpuacct", "cpu,cpuacct", ""];
    roots.iter().find_map(|r| {
        let root = Path::new(CGROUP_ROOT).join(r);
        std::fs::read_dir(&root)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n == "dwell" || n.starts_with("dwell-"))
            .find(|n| root.join(n).join(id).is_dir())
    })
}

/// CPU time used so far by the processes of cgroup `<parent>/<id>`, in
/// nanoseconds: v1 `cpuacct.usage`, else v2 `cpu.stat`'s `usage_usec`.
/// `None` when the host has neither for it.
pub fn cgroup_cpu_ns(parent: &str, id: &str) -> Option<u64> {
    let rel = Path::new(parent).join(id);
    for h in CPUACCT_V1 {
        let f = Path::new(CGROUP_ROOT)
            .join(h)
            .join(&rel)
            .join("cpuacct.usage");
        if let Ok(s) = std::fs::read_to_string(&f) {
            return s.trim().parse().ok();
        }
    }
    let stat = std::fs::read_to_string(Path::new(CGROUP_ROOT).join(&rel).join("cpu.stat")).ok()?;
    usage_usec(&stat).map(|us| us * 1000)
}

/// Whether cgroup `<parent>/<id>` is frozen (a paused or dozing sandbox):
/// v1 `freezer.state` FROZEN, or `cgroup.freeze` 1 in the unified
/// hierarchy (hybrid hosts) or at the root (pure v2).
pub fn is_frozen(parent: &str, id: &str) -> bool {
    let rel = Path::new(parent).join(id);
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let root = Path::new(CGROUP_ROOT);
    read(root.join("freezer").join(&rel).join("freezer.state")).trim() == "FROZEN"
        || read(root.join("unified").join(&rel).join("cgroup.freeze")).trim() == "1"
        || read(root.join(&rel).join("cgroup.freeze")).trim() == "1"
}

/// `usage_usec` of a v2 `cpu.stat`.
pub fn usage_usec(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == "usage_usec").then(|| v.trim().parse().ok())?
    })
}

/// Memory charged to cgroup `<parent>/<id>` in bytes (v1
/// `memory.usage_in_bytes`, else v2 `memory.current`) and its anonymous
/// part (v1 `memory.stat` rss, v2 `anon`).
pub fn cgroup_memory(parent: &str, id: &str) -> (u64, u64) {
    let v1 = MemCgroup::new(parent, id);
    if let Some(usage) = v1.usage() {
        return (usage, v1.stat("rss").unwrap_or(0));
    }
    let dir = Path::new(CGROUP_ROOT).join(parent).join(id);
    let current = std::fs::read_to_string(dir.join("memory.current"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let anon = std::fs::read_to_string(dir.join("memory.stat"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == "anon").then(|| v.trim().parse().ok())?
            })
        })
        .unwrap_or(0);
    (current, anon)
}

/// User + system CPU time of process `pid` (all its threads, also those
/// that ended), in nanoseconds; `None` when it is gone.
pub fn proc_cpu_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf with a valid name has no side effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    stat_ticks(&stat).map(|t| t * 1_000_000_000 / hz)
}

/// utime + stime (clock ticks) of a `/proc/<pid>/stat` line. The command
/// name may hold spaces and parentheses: fields are counted after the last
/// `)`, where field 3 (state) comes first, so utime (14) and stime (15)
/// are the 12th and 13th.
pub fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// What deleted sandboxes left on the host.
#[derive(Debug, Clone, Default)]
pub struct Leftovers {
    /// Cgroup directories named after a sandbox.
    pub cgroups: Vec<String>,
    /// Mount points naming a sandbox.
    pub mounts: Vec<String>,
    /// Loop devices whose backing file names a sandbox.
    pub loops: Vec<String>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.cgroups.is_empty() && self.mounts.is_empty() && self.loops.is_empty()
    }

    /// `3 cgroups, 0 mounts, 1 loop devices`.
    pub fn counts(&self) -> String {
        format!(
            "{} cgroups, {} mounts, {} loop devices",
            self.cgroups.len(),
            self.mounts.len(),
            self.loops.len()
        )
    }

    /// [`Leftovers::counts`] and the first few of each.
    pub fn describe(&self) -> String {
        let part = |n: &str, v: &[String]| {
            let mut s = format!("{} {n}", v.len());
            if !v.is_empty() {
                let first: Vec<&str> = v.iter().take(3).map(String::as_str).collect();
                s.push_str(&format!(" (e.g. {})", first.join(", ")));
            }
            s
        };
        format!(
            "{}, {}, {}",
            part("cgroups", &self.cgroups),
            part("mounts", &self.mounts),
            part("loop devices", &self.loops)
        )
    }
}

/// Look for what the sandboxes `ids` may have left: cgroup directories
/// named after one in any hierarchy (two levels below a hierarchy's root:
/// `<parent>/<id>`), mounts whose point names one, loop devices whose
/// backing file names one.
pub fn leftovers(ids: &[String]) -> Leftovers {
    let mut l = Leftovers::default();
    if ids.is_empty() {
        return l;
    }
    let ids: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut roots = vec![PathBuf::from(CGROUP_ROOT)];
    roots.extend(subdirs(Path::new(CGROUP_ROOT)));
    for root in roots {
        for parent in subdirs(&root) {
            for dir in subdirs(&parent) {
                let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
                if name.is_some_and(|n| ids.contains(n.as_str())) {
                    l.cgroups.push(dir.display().to_string());
                }
            }
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    l.mounts = naming(mountinfo.lines().filter_map(|m| m.split(' ').nth(4)), &ids);
    let mut backing = Vec::new();
    for dev in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = dev.file_name().to_string_lossy().into_owned();
        if let Ok(b) = std::fs::read_to_string(dev.path().join("loop/backing_file")) {
            backing.push(format!("/dev/{name} -> {}", b.trim()));
        }
    }
    l.loops = naming(backing.iter().map(String::as_str), &ids);
    l
}

/// The entries of `lines` that contain one of `ids` as a path component
/// (or a component's `-`/`.`-separated part).
pub fn naming<'a>(
    lines: impl Iterator<Item = &'a str>,
    ids: &std::collections::HashSet<&str>,
) -> Vec<String> {
    lines
        .filter(|l| {
            l.split(['/', ' ', '-', '.', '_'])
                .any(|part| ids.contains(part))
        })
        .map(str::to_string)
        .collect()
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_counts_after_the_command_name() {
        // pid (comm with ") x" in it) state ppid ... utime=7 stime=5
        let stat = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 9 1 1";
        assert_eq!(stat_ticks(stat), Some(12));
        assert_eq!(stat_ticks("42 (x) S 1"), None);
        assert_eq!(stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(proc_cpu_ns(std::process::id()).is_some());
        assert!(proc_cpu_ns(u32::MAX).is_none());
    }

    #[test]
    fn tells_a_frozen_cgroup() {
        use crate::baseline::{Freezer, FreezerKind};
        // SAFETY: geteuid has no side effects.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: making cgroups needs root");
            return;
        }
        let name = format!("dwell-bench-{}", std::process::id());
        let mut tried = 0;
        for kind in [FreezerKind::V1, FreezerKind::V2] {
            if Freezer::root(kind).is_none() {
                continue;
            }
            tried += 1;
            let f = Freezer::new(kind).unwrap();
            assert!(!is_frozen("", &name), "{kind:?}");
            f.set(true).unwrap();
            assert!(is_frozen("", &name), "{kind:?}");
            f.set(false).unwrap();
            assert!(!is_frozen("", &name), "{kind:?}");
        }
        assert!(tried > 0, "no freezer hierarchy on this host");
    }

    #[test]
    fn reads_cpu_stat_usage() {
        let s = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
        assert_eq!(usage_usec(s), Some(1500));
        assert_eq!(usage_usec("user_usec 1\n"), None);
    }

    #[test]
    fn naming_matches_whole_ids_only() {
        let ids: std::collections::HashSet<&str> = ["abc123", "ffee00"].into_iter().collect();
        let lines = [
            "/tmp/d/volumes/abc123/volume.img",
            "/tmp/d/volumes/abc1234/volume.img",
            "/dev/loop3 -> /tmp/d/volumes/ffee00.img",
            "/run/other",
        ];
        let hits = naming(lines.iter().copied(), &ids);
        assert_eq!(
            hits,
            vec![
                "/tmp/d/volumes/abc123/volume.img".to_string(),
                "/dev/loop3 -> /tmp/d/volumes/ffee00.img".to_string()
            ]
        );
    }

    #[test]
    fn describes_leftovers() {
        let mut l = Leftovers::default();
        assert!(l.is_empty());
        assert_eq!(l.describe(), "0 cgroups, 0 mounts, 0 loop devices");
        l.loops.push("/dev/loop1 -> x".into());
        assert!(!l.is_empty());
        assert!(l
            .describe()
            .contains("1 loop devices (e.g. /dev/loop1 -> x)"));
    }
}
