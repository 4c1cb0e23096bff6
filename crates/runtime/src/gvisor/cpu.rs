//! The CPU limit of a gVisor sandbox, applied once runsc has started it.
//!
//! `runsc run` and `runsc restore` do their own work inside the sandbox's
//! cgroup. A restore loads the saved kernel state and the memory file on
//! two threads at once (about 200 ms of CPU for an idle sandbox), so a
//! 1-vCPU quota throttled it: `cpu.stat` counted 20-70 ms of throttling per
//! restore on this 2-core host, against none without the quota. The
//! bundle therefore carries no CPU quota ([`super::bundle::spec`]) and the
//! runtime writes the sandbox's quota into its cgroup right after runsc
//! returns, before the daemon talks to the agent; if it cannot, the
//! sandbox is stopped. `observe` writes it again when it finds it missing,
//! so a daemon killed between the two leaves no unlimited sandbox behind.

use std::path::PathBuf;

use crate::{Error, Result, SandboxConfig};

/// CFS period of the quota, in microseconds.
pub const PERIOD_US: u64 = 100_000;

/// The quota of `config` in microseconds per [`PERIOD_US`] (at least 1 ms).
pub fn quota_us(config: &SandboxConfig) -> u64 {
    (config.resources.vcpus * PERIOD_US as f64)
        .round()
        .max(1000.0) as u64
}

/// Where the quota of cgroup `path` (`/<parent>/<id>`) lives on this host.
enum Files {
    /// cgroup v1 `cpu` controller: `cpu.cfs_period_us`, `cpu.cfs_quota_us`.
    V1(PathBuf),
    /// cgroup2: `cpu.max`.
    V2(PathBuf),
}

fn files(path: &str) -> Option<Files> {
    let rel = path.trim_start_matches('/');
    let v1 = PathBuf::from("/sys/fs/cgroup/cpu").join(rel);
    if v1.join("cpu.cfs_quota_us").exists() {
        return Some(Files::V1(v1));
    }
    let v2 = PathBuf::from("/sys/fs/cgroup").join(rel);
    v2.join("cpu.max").exists().then_some(Files::V2(v2))
}

/// Write `config`'s quota into the cgroup `path` runsc made for it.
pub fn apply(config: &SandboxConfig, path: &str) -> Result<()> {
    let quota = quota_us(config);
    let write = |file: PathBuf, value: String| {
        std::fs::write(&file, &value).map_err(|e| Error::Io {
            context: format!(
                "setting the sandbox's CPU limit: writing {value} to {}",
                file.display()
            ),
            source: e,
        })
    };
    match files(path) {
        Some(Files::V1(dir)) => {
            write(dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
            write(dir.join("cpu.cfs_quota_us"), quota.to_string())
        }
        Some(Files::V2(dir)) => write(dir.join("cpu.max"), format!("{quota} {PERIOD_US}")),
        None => Err(Error::Start(format!(
            "the sandbox's cgroup {path} has no CPU controller (neither \
             /sys/fs/cgroup/cpu{path} nor cpu.max under /sys/fs/cgroup{path}); \
             enable the cpu controller for the runsc cgroup parent"
        ))),
    }
}

/// Whether the cgroup `path` has a CPU quota at all (false: unlimited, or
/// no such cgroup).
pub fn limited(path: &str) -> bool {
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    match files(path) {
        Some(Files::V1(dir)) => read(dir.join("cpu.cfs_quota_us")).trim() != "-1",
        Some(Files::V2(dir)) => !read(dir.join("cpu.max")).starts_with("max"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NetworkMode, Resources, RootfsSpec};

    fn config(vcpus: f64) -> SandboxConfig {
        SandboxConfig {
            id: "abc".into(),
            hostname: "h".into(),
            rootfs: RootfsSpec {
                layers: vec![],
                host_dirs: vec![],
                upper_root: "/v".into(),
            },
            resources: Resources {
                vcpus,
                memory_bytes: 256 << 20,
                pids: 100,
            },
            env: Default::default(),
            network: NetworkMode::None,
            state_dir: "/s".into(),
            agent_binary: "/bin/agent".into(),
            agent_key: None,
            grants: Default::default(),
            id_map: None,
            private_nets: Vec::new(),
            egress: Default::default(),
            binds: Vec::new(),
        }
    }

    #[test]
    fn quota_follows_vcpus_with_a_floor() {
        assert_eq!(quota_us(&config(1.5)), 150_000);
        assert_eq!(quota_us(&config(0.001)), 1000);
    }

    #[test]
    fn a_missing_cgroup_is_an_error_and_unlimited() {
        let path = "/dwell-test-no-such-parent/none";
        let err = apply(&config(1.0), path).unwrap_err().to_string();
        assert!(err.contains("no CPU controller"), "{err}");
        assert!(!limited(path));
    }
}
