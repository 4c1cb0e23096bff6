//! The host directory behind `/run/dwell` in a gVisor sandbox: a small
//! tmpfs of its own at `state_dir/run` (mode 0700, nosuid, nodev, noexec),
//! mounted before runsc starts or restores the sandbox and unmounted when
//! the host side is released. The agent's socket is created there (runsc
//! `--host-uds=create`), so the sandbox can write this directory: the
//! tmpfs keeps what it writes small, off the data disk, and inert (no
//! device node or set-id file made there works on the host).

use std::path::PathBuf;

use crate::host::{layout, Host, Mount};
use crate::{Error, Result, SandboxConfig};

/// The run dir, relative to the state dir: bind-mounted at `/run/dwell`
/// inside the sandbox (the agent creates its socket there).
pub const RUN_DIR: &str = "run";
/// The agent's socket, relative to the state dir.
pub const AGENT_SOCKET: &str = "run/agent.sock";

/// Mount options of the tmpfs.
pub const TMPFS_OPTIONS: &str = "size=1m,nr_inodes=64,mode=700";

/// The agent's socket on the host.
pub fn agent_socket(config: &SandboxConfig) -> PathBuf {
    layout::state_file(config, AGENT_SOCKET)
}

/// The run dir on the host.
pub fn path(config: &SandboxConfig) -> PathBuf {
    layout::state_file(config, RUN_DIR)
}

/// Mount a fresh tmpfs at the run dir (an old one is replaced: nothing of
/// an earlier run is kept).
pub fn mount(host: &dyn Host, config: &SandboxConfig) -> Result<PathBuf> {
    let dir = path(config);
    unmount(host, config);
    match std::fs::symlink_metadata(&dir) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => std::fs::remove_file(&dir).map_err(|e| io(&dir, "removing", e))?,
        Err(_) => std::fs::create_dir_all(&dir).map_err(|e| io(&dir, "creating", e))?,
    }
    host.mount(&Mount {
        source: Some(std::path::Path::new("tmpfs")),
        target: &dir,
        fstype: Some("tmpfs"),
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: Some(TMPFS_OPTIONS),
    })
    .map_err(|e| io(&dir, "mounting a tmpfs on", e))?;
    Ok(dir)
}

/// Unmount the run dir's tmpfs (lazily; best effort, idempotent). Only
/// tmpfs mounts sit there (nothing mounts below them), so unmounting the
/// path until nothing is mounted on it is enough; no mount table is read.
pub fn unmount(host: &dyn Host, config: &SandboxConfig) {
    crate::host::mounts::unmount_tree(host, &path(config));
}

fn io(dir: &std::path::Path, what: &str, e: std::io::Error) -> Error {
    Error::Io {
        context: format!("{what} {}", dir.display()),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::recording::{config, Recording};

    #[test]
    fn a_fresh_tmpfs_replaces_the_old_one_and_unmount_removes_every_layer() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let host = Recording::new();
        let run = mount(&host, &config).unwrap();
        assert!(run.is_dir());
        mount(&host, &config).unwrap();
        let r = run.display();
        assert_eq!(
            host.calls(),
            [
                format!("unmount {r}"),
                format!("mount tmpfs on {r}"),
                // The second mount: the first tmpfs goes, then nothing is left.
                format!("unmount {r}"),
                format!("unmount {r}"),
                format!("mount tmpfs on {r}"),
            ]
        );
        unmount(&host, &config);
        assert!(host.mounted().is_empty());
    }

    #[test]
    fn a_failed_mount_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let host = Recording::new();
        host.fail_on("mount tmpfs");
        let e = mount(&host, &config).unwrap_err().to_string();
        assert!(
            e.contains("mounting a tmpfs on") && e.contains("/run"),
            "{e}"
        );
        assert!(host.mounted().is_empty());
    }
}
