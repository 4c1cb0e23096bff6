//! Memory headroom for a checkpoint. The sandbox's cgroup limit covers the
//! sentry too, and `runsc checkpoint` needs working memory on top of what
//! the application holds: a sandbox near its limit is OOM-killed in the
//! middle of the checkpoint (and lost). The application is stopped while
//! the sentry saves it, so raising the cgroup's limit for the checkpoint
//! gives it nothing; the limit is put back if the sandbox lives on.

use std::path::PathBuf;

/// The memory limits of one cgroup (v1 `memory` controller or cgroup2),
/// as found before they were raised.
pub struct Raised {
    /// (file, old value), in the order they must be restored.
    files: Vec<(PathBuf, String)>,
}

/// Files that hold the limit of `cgroup` (`/<parent>/<id>`), raise-order
/// first: swap+memory before memory on v1 (memsw must stay >= limit).
fn limit_files(cgroup: &str) -> Vec<PathBuf> {
    let rel = cgroup.trim_start_matches('/');
    let v1 = PathBuf::from("/sys/fs/cgroup/memory").join(rel);
    let v2 = PathBuf::from("/sys/fs/cgroup").join(rel);
    [
        v1.join("memory.memsw.limit_in_bytes"),
        v1.join("memory.limit_in_bytes"),
        v2.join("memory.max"),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect()
}

/// The extra memory a checkpoint of a sandbox limited to `limit` bytes gets:
/// as much again, at least 256 MiB.
pub fn for_checkpoint(limit: u64) -> u64 {
    limit.max(256 << 20)
}

/// Raise every memory limit of `cgroup` by `extra` bytes (a limit of
/// "max" stays). Best effort: a limit that cannot be raised stays.
pub fn raise(cgroup: &str, extra: u64) -> Raised {
    let mut files = Vec::new();
    for f in limit_files(cgroup) {
        let Ok(old) = std::fs::read_to_string(&f) else {
            continue;
        };
        let Ok(n) = old.trim().parse::<u64>() else {
            continue;
        };
        // v1 reports "no limit" as a huge number.
        if n >= 1 << 62 {
            continue;
        }
        if std::fs::write(&f, n.saturating_add(extra).to_string()).is_ok() {
            files.push((f, old.trim().to_string()));
        }
    }
    Raised { files }
}

impl Raised {
    /// Put the old limits back (limit before memsw on v1).
    pub fn restore(self) {
        for (f, old) in self.files.into_iter().rev() {
            let _ = std::fs::write(&f, old);
        }
    }
}
