//! Where a runtime keeps things for one sandbox on the host (files in its
//! state directory, its console log on the volume, host interface names),
//! the paths both runtimes give it inside, and the checks a config must
//! pass before anything is created. Each runtime adds files of its own
//! (`ns::layout`, `gvisor::run_dir`).

use std::path::{Component, Path, PathBuf};

use crate::{Error, Result, SandboxConfig};

/// Mount point of the root overlay: in the sandbox's own mount namespace
/// (namespace runtime) or on the host (gVisor, see `gvisor::rootfs`).
pub const ROOTFS_DIR: &str = "rootfs";
/// Stdout and stderr of PID 1 (and runsc's), relative to the volume's
/// mount point (`rootfs.upper_root`), beside but outside what the sandbox
/// sees as its root: the sandbox can grow it (through `/proc/1/fd/2`), so
/// it lives on its own volume, bounded by `--disk`, not on the data disk.
pub const CONSOLE_LOG: &str = "console.log";
/// A console log bigger than this at start is emptied first.
pub const CONSOLE_KEEP: u64 = 1 << 20;
/// How much of the console's end error messages read.
pub const CONSOLE_TAIL: u64 = 64 << 10;
/// The network set up for a NAT sandbox (for cleanup, for the daemon, and
/// for a restore that asks for the same address again).
pub const NETWORK_FILE: &str = "network.json";

/// Paths inside the sandbox.
pub const SANDBOX_RUN_DIR: &str = "/run/dwell";
pub const SANDBOX_AGENT_DIR: &str = "/.dwell";
pub const SANDBOX_AGENT: &str = "/.dwell/agent";
pub const SANDBOX_AGENT_SOCKET: &str = "/run/dwell/agent.sock";

pub fn state_file(config: &SandboxConfig, name: &str) -> PathBuf {
    config.state_dir.join(name)
}

/// Where the sandbox's console log is (see [`CONSOLE_LOG`]).
pub fn console_path(config: &SandboxConfig) -> PathBuf {
    config.rootfs.upper_root.join(CONSOLE_LOG)
}

/// Open the console log for appending (created 0600, never through a
/// symlink); emptied first when an earlier run left more than
/// [`CONSOLE_KEEP`].
pub fn open_console(config: &SandboxConfig) -> std::io::Result<std::fs::File> {
    // The overlays create their dirs in it anyway; a runtime started on a
    // fresh directory volume finds none yet.
    std::fs::create_dir_all(&config.rootfs.upper_root)?;
    open_log(&console_path(config))
}

/// [`open_console`] for a console log at `path`.
pub fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        // O_NONBLOCK: a fifo there must not hang the open (it is refused
        // below; on a regular file the flag changes nothing).
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the console log is not a regular file",
        ));
    }
    if md.len() > CONSOLE_KEEP {
        f.set_len(0)?;
    }
    Ok(f)
}

/// The last `lines` lines of the console log, reading at most
/// [`CONSOLE_TAIL`] bytes of its end (never through a symlink).
pub fn console_tail(config: &SandboxConfig, lines: usize) -> String {
    tail_lines(&console_path(config), lines)
}

/// The last `lines` lines among the last [`CONSOLE_TAIL`] bytes of the
/// regular file `path` (not followed if a symlink); empty when unreadable.
pub fn tail_lines(path: &Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let read = || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        let md = f.metadata()?;
        if !md.is_file() {
            return Ok(Vec::new());
        }
        f.seek(SeekFrom::Start(md.len().saturating_sub(CONSOLE_TAIL)))?;
        let mut buf = Vec::new();
        f.take(CONSOLE_TAIL).read_to_end(&mut buf)?;
        Ok(buf)
    };
    let buf = read().unwrap_or_default();
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Reject configs that would produce ambiguous mount options, escape the
/// state directory or collide on host names.
pub fn validate(config: &SandboxConfig) -> Result<()> {
    validate_id(&config.id)?;
    if config.hostname.is_empty()
        || config.hostname.len() > 64
        || !config
            .hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(Error::Other(format!(
            "invalid hostname {:?}: use 1-64 characters of [A-Za-z0-9.-]",
            config.hostname
        )));
    }
    if config.rootfs.layers.is_empty() {
        return Err(Error::Other(
            "the rootfs has no layers: an overlay needs at least one lower directory; \
             pass the image's unpacked layer directories"
                .into(),
        ));
    }
    let mut paths: Vec<(&str, &Path)> = config
        .rootfs
        .layers
        .iter()
        .map(|p| ("layer", p.as_path()))
        .collect();
    paths.extend(
        config
            .rootfs
            .host_dirs
            .iter()
            .map(|p| ("host dir", p.as_path())),
    );
    paths.push(("upper root", &config.rootfs.upper_root));
    paths.push(("state dir", &config.state_dir));
    paths.push(("agent binary", &config.agent_binary));
    if let Some(k) = &config.agent_key {
        if k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Other(
                "invalid agent key: it must be 64 hex digits (the control plane generates it; \
                 remove agent_key from the config to start without one)"
                    .into(),
            ));
        }
    }
    for (what, p) in paths {
        check_path(what, p)?;
    }
    for dir in &config.rootfs.host_dirs {
        if dir == Path::new("/") {
            return Err(Error::Other(
                "host dir \"/\" cannot be overlaid: name directories such as /usr".into(),
            ));
        }
        if !dir.is_dir() {
            return Err(Error::Other(format!(
                "host dir {} does not exist on this host",
                dir.display()
            )));
        }
    }
    for layer in &config.rootfs.layers {
        if !layer.is_dir() {
            return Err(Error::Other(format!(
                "rootfs layer {} is not a directory; unpack the image first",
                layer.display()
            )));
        }
    }
    if !config.agent_binary.is_file() {
        return Err(Error::Other(format!(
            "agent binary {} does not exist; build dwell-agent or point agent_binary at it",
            config.agent_binary.display()
        )));
    }
    for key in config.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(Error::Other(format!(
                "invalid environment variable name {key:?}"
            )));
        }
    }
    let r = &config.resources;
    if !(r.vcpus.is_finite() && r.vcpus > 0.0) || r.memory_bytes < 4 << 20 || r.pids < 2 {
        return Err(Error::Other(format!(
            "invalid resources {r:?}: vcpus must be > 0, memory at least 4 MiB, pids at least 2"
        )));
    }
    Ok(())
}

/// Sandbox ids name cgroups and interfaces: `[a-z0-9_-]`, 1-64 bytes.
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(Error::Other(format!(
            "invalid sandbox id {id:?}: use 1-64 characters of [a-z0-9_-]"
        )));
    }
    Ok(())
}

/// Paths must be absolute, normalised and free of the characters overlayfs
/// uses as separators in its mount options.
fn check_path(what: &str, p: &Path) -> Result<()> {
    let s = p.to_string_lossy();
    let bad = !p.is_absolute()
        || p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || s.contains([',', ':', '\\', '\0', '\n']);
    if bad {
        return Err(Error::Other(format!(
            "{what} path {s:?} is not usable: it must be absolute, without '..', and \
             without ',', ':' or '\\' (overlayfs option separators)"
        )));
    }
    Ok(())
}

/// 64-bit FNV-1a, used to derive short, stable names from ids.
pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Host side name of a sandbox's veth (at most 15 bytes, the kernel limit).
pub fn host_veth(id: &str) -> String {
    format!("dw{:013x}", fnv1a(id) & 0x000f_ffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let v = host_veth("abc");
        assert_eq!(v.len(), 15);
        assert_ne!(v, host_veth("abd"));
        assert!(validate_id("ab-c_9").is_ok());
        assert!(validate_id("../x").is_err());
        assert!(validate_id("").is_err());
        assert!(check_path("x", Path::new("/a,b")).is_err());
        assert!(check_path("x", Path::new("/a/../b")).is_err());
        assert!(check_path("x", Path::new("rel")).is_err());
        assert!(check_path("x", Path::new("/ok/path")).is_ok());
    }
}
