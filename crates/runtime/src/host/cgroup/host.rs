//! Which cgroup hierarchies this host has, read from /proc/self/mountinfo
//! and the filesystem magic of /sys/fs/cgroup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::Context;
use crate::host::sys;
use crate::{Error, Result};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The v1 controllers the runtime uses.
pub const V1_CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only v1 controller hierarchies.
    V1,
    /// v1 controllers plus a cgroup2 mount (usually /sys/fs/cgroup/unified).
    Hybrid,
    /// The unified hierarchy only (/sys/fs/cgroup is cgroup2).
    V2,
}

/// The cgroup mounts of this host.
#[derive(Debug, Clone)]
pub struct HostCgroups {
    pub mode: CgroupMode,
    /// v1 controller name -> mount point.
    pub v1: BTreeMap<String, PathBuf>,
    /// Mount point of the cgroup2 hierarchy, if any.
    pub v2: Option<PathBuf>,
}

impl HostCgroups {
    /// Detect the host's cgroup layout.
    pub fn detect() -> Result<HostCgroups> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .context(|| "reading /proc/self/mountinfo".into())?;
        let mut host = Self::from_mountinfo(&info);
        if sys::fs_magic(Path::new("/sys/fs/cgroup")).ok() == Some(CGROUP2_SUPER_MAGIC) {
            host.mode = CgroupMode::V2;
            host.v2 = Some(PathBuf::from("/sys/fs/cgroup"));
            host.v1.clear();
        }
        match host.mode {
            CgroupMode::V2 => Ok(host),
            _ => {
                let missing: Vec<_> = V1_CONTROLLERS
                    .iter()
                    .filter(|c| !host.v1.contains_key(**c))
                    .collect();
                if missing.is_empty() {
                    Ok(host)
                } else {
                    Err(Error::Unsupported {
                        what: "cgroup v1 controllers".into(),
                        why: format!("{missing:?} are not mounted"),
                        fix: "mount the missing controllers under /sys/fs/cgroup or boot \
                              with the unified hierarchy (systemd.unified_cgroup_hierarchy=1)"
                            .into(),
                    })
                }
            }
        }
    }

    /// Parse mountinfo lines (fields: see proc(5)).
    pub fn from_mountinfo(info: &str) -> HostCgroups {
        let mut v1 = BTreeMap::new();
        let mut v2 = None;
        for line in info.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = pre.split(' ').nth(4) else {
                continue;
            };
            let mut post = post.split(' ');
            let fstype = post.next().unwrap_or("");
            let super_opts = post.nth(1).unwrap_or("");
            match fstype {
                "cgroup2" if v2.is_none() => v2 = Some(PathBuf::from(mount_point)),
                "cgroup" => {
                    for opt in super_opts.split(',') {
                        if V1_CONTROLLERS.contains(&opt) {
                            v1.entry(opt.to_string())
                                .or_insert_with(|| PathBuf::from(mount_point));
                        }
                    }
                }
                _ => {}
            }
        }
        let mode = match (v1.is_empty(), v2.is_some()) {
            (false, true) => CgroupMode::Hybrid,
            (false, false) => CgroupMode::V1,
            _ => CgroupMode::V2,
        };
        HostCgroups { mode, v1, v2 }
    }

    /// Directories that hold the sandboxes' cgroups (one per hierarchy).
    pub fn parent_dirs(&self, parent: &str) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.v1.values().map(|m| m.join(parent)).collect();
        if let Some(v2) = &self.v2 {
            dirs.push(v2.join(parent));
        }
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Move `pid` to the root cgroup of every hierarchy (best effort): the
    /// boot process leaves a sandbox's cgroups before it kills them.
    pub fn move_to_root(&self, pid: i32) {
        let mut roots: Vec<&PathBuf> = self.v1.values().collect();
        roots.extend(self.v2.iter());
        for root in roots {
            let _ = std::fs::write(root.join("cgroup.procs"), pid.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_mountinfo() {
        let info = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
35 25 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
36 25 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
37 25 0:33 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
38 25 0:34 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
39 25 0:35 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
";
        let h = HostCgroups::from_mountinfo(info);
        assert_eq!(h.mode, CgroupMode::Hybrid);
        assert_eq!(h.v1["cpu"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(h.v1["cpuacct"], h.v1["cpu"]);
        assert_eq!(h.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(h.parent_dirs("dwell").len(), 5);
    }

    #[test]
    fn pure_v2_mountinfo() {
        let info = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        let h = HostCgroups::from_mountinfo(info);
        assert_eq!(h.mode, CgroupMode::V2);
        assert!(h.v1.is_empty());
    }
}
