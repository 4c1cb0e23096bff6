//! A [`Host`] for unit tests: it records every call as one line of text
//! (`mount overlay on /s/rootfs`, `unmount /s/run`, ...), keeps the mount
//! table and the veths the calls made so that cleanups see what a real
//! host would show them, and fails the calls it was told to fail.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::kernel::{Host, Mount};
use super::network::{NetInfo, Netns};
use crate::{Error, Result};

/// The recording double.
#[derive(Debug, Default)]
pub struct Recording {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<String>,
    /// Call prefixes to fail, each once: the first call whose line
    /// starts with one fails with EIO, and the prefix is used up.
    fail: Vec<String>,
    mounts: Vec<PathBuf>,
    veths: Vec<String>,
    /// State dirs of sandboxes put on private networks.
    private: Vec<PathBuf>,
}

impl Recording {
    pub fn new() -> Recording {
        Recording::default()
    }

    /// Make the next call whose line starts with `prefix` fail.
    pub fn fail_on(&self, prefix: &str) {
        self.lock().fail.push(prefix.to_string());
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Forget the calls so far (the mount table stays).
    pub fn clear(&self) {
        self.lock().calls.clear();
    }

    /// What is mounted now, in mount order.
    pub fn mounted(&self) -> Vec<PathBuf> {
        self.lock().mounts.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `line` for a double of another seam (a cgroup, say) that
    /// logs into this one; Err when it was to fail.
    pub fn note(&self, line: String) -> io::Result<()> {
        self.call(line)
    }

    /// Record `line`; Err when it was to fail.
    fn call(&self, line: String) -> io::Result<()> {
        let mut s = self.lock();
        let fails = s.fail.iter().position(|p| line.starts_with(p.as_str()));
        s.calls.push(line.clone());
        match fails {
            Some(i) => {
                s.fail.remove(i);
                Err(io::Error::other(format!("injected failure of `{line}`")))
            }
            None => Ok(()),
        }
    }
}

impl Host for Recording {
    fn mount(&self, m: &Mount<'_>) -> io::Result<()> {
        let what = match m.fstype {
            Some(fs) => fs.to_string(),
            None => format!(
                "bind {}",
                m.source.map_or("none".into(), |p| p.display().to_string())
            ),
        };
        self.call(format!("mount {what} on {}", m.target.display()))?;
        self.lock().mounts.push(m.target.to_path_buf());
        Ok(())
    }

    fn unmount(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
        self.call(format!("unmount {}", target.display()))?;
        let mut s = self.lock();
        match s.mounts.iter().rposition(|m| m == target) {
            Some(i) => {
                s.mounts.remove(i);
                // A lazy unmount takes every mount below with it.
                if flags & libc::MNT_DETACH != 0 {
                    s.mounts.retain(|m| m == target || !m.starts_with(target));
                }
                Ok(())
            }
            // What the kernel says of a path nothing is mounted on.
            None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    fn mounts_below(&self, dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .lock()
            .mounts
            .iter()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        v
    }

    fn kill(&self, pid: i32, signal: libc::c_int) -> io::Result<()> {
        self.call(format!("kill {pid} {signal}"))
    }

    fn pin_netns(&self, path: &Path) -> io::Result<()> {
        self.call(format!("pin netns {}", path.display()))?;
        self.lock().mounts.push(path.to_path_buf());
        Ok(())
    }

    fn net_setup(
        &self,
        id: &str,
        netns: Netns<'_>,
        _pool: &str,
        _deny: &[String],
        _state_dir: &Path,
    ) -> Result<NetInfo> {
        let into = match netns {
            Netns::Pid(pid) => format!("pid {pid}"),
            Netns::Path(p) => p.display().to_string(),
        };
        self.call(format!("net setup {id} in {into}"))
            .map_err(|e| Error::Other(e.to_string()))?;
        self.lock().veths.push(id.to_string());
        Ok(NetInfo {
            host_if: super::layout::host_veth(id),
            table: format!("dwell_{}", super::layout::host_veth(id)),
            sandbox_ip: Ipv4Addr::new(10, 200, 0, 2),
            gateway_ip: Ipv4Addr::new(10, 200, 0, 1),
            prefix_len: 30,
        })
    }

    fn net_teardown(&self, id: &str) {
        let _ = self.call(format!("net teardown {id}"));
        self.lock().veths.retain(|v| v != id);
    }

    fn has_veth(&self, id: &str) -> bool {
        self.lock().veths.iter().any(|v| v == id)
    }

    fn private_setup(
        &self,
        id: &str,
        _netns: Netns<'_>,
        nets: &[crate::PrivateNet],
        state_dir: &Path,
    ) -> Result<()> {
        self.call(format!("private setup {id} on {}", nets.len()))
            .map_err(|e| Error::Other(e.to_string()))?;
        self.lock().private.push(state_dir.to_path_buf());
        Ok(())
    }

    fn private_teardown(&self, state_dir: &Path) {
        // Like the kernel's: nothing (no call) when nothing was set up.
        let mut s = self.lock();
        if s.private.iter().any(|p| p == state_dir) {
            s.private.retain(|p| p != state_dir);
            drop(s);
            let _ = self.call(format!("private teardown {}", state_dir.display()));
        }
    }
}

/// A config of sandbox `sb1` whose state dir is `state_dir`, with one
/// image layer and `/usr` as a host dir, all below `state_dir` except
/// `/usr` (the directories exist).
pub fn config(state_dir: &Path) -> crate::SandboxConfig {
    let layer = state_dir.join("layer");
    let upper_root = state_dir.join("volume");
    for d in [&layer, &upper_root] {
        std::fs::create_dir_all(d).expect("creating a test dir");
    }
    crate::SandboxConfig {
        id: "sb1".into(),
        hostname: "sb1".into(),
        rootfs: crate::RootfsSpec {
            layers: vec![layer],
            host_dirs: vec!["/usr".into()],
            upper_root,
        },
        resources: crate::Resources {
            vcpus: 1.0,
            memory_bytes: 64 << 20,
            pids: 64,
        },
        env: Default::default(),
        network: crate::NetworkMode::None,
        state_dir: state_dir.to_path_buf(),
        agent_binary: "/bin/true".into(),
        agent_key: None,
        grants: Default::default(),
        id_map: None,
        private_nets: Vec::new(),
        egress: Default::default(),
        binds: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_calls_keeps_the_mount_table_and_fails_once_on_request() {
        let h = Recording::new();
        let m = |t: &'static str| Mount {
            source: None,
            target: Path::new(t),
            fstype: Some("tmpfs"),
            flags: 0,
            data: None,
        };
        h.mount(&m("/a")).unwrap();
        h.mount(&m("/a/b")).unwrap();
        assert_eq!(
            h.mounts_below(Path::new("/a")),
            [PathBuf::from("/a/b"), PathBuf::from("/a")]
        );
        h.fail_on("unmount /a/b");
        assert!(h.unmount(Path::new("/a/b"), 0).is_err());
        h.unmount(Path::new("/a/b"), 0).unwrap();
        assert!(h.unmount(Path::new("/a/b"), 0).is_err(), "not mounted");
        assert_eq!(
            h.calls(),
            [
                "mount tmpfs on /a",
                "mount tmpfs on /a/b",
                "unmount /a/b",
                "unmount /a/b",
                "unmount /a/b"
            ]
        );
        assert_eq!(h.mounted(), [PathBuf::from("/a")]);
    }
}
