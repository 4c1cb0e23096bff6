//! Where the namespace runtime keeps things for one sandbox (files in the
//! state directory, host interface names) and the checks a config must pass
//! before anything is created.

use std::path::{Component, Path, PathBuf};

use crate::{Error, Result, SandboxConfig};

/// The config the boot process reads.
pub const CONFIG_FILE: &str = "config.json";
/// `<pid> <start time in clock ticks>` of the sandbox's PID 1.
pub const PID_FILE: &str = "pid";
/// Mount point of the root overlay (only mounted inside the sandbox).
pub const ROOTFS_DIR: &str = "rootfs";
/// Directory bind-mounted at /run/dwell inside the sandbox.
pub const RUN_DIR: &str = "run";
/// The agent's socket, relative to the state dir.
pub const AGENT_SOCKET: &str = "run/agent.sock";
/// Stdout and stderr of PID 1.
pub const CONSOLE_LOG: &str = "console.log";
/// The network the boot process set up (for cleanup and for the daemon).
pub const NETWORK_FILE: &str = "network.json";

/// Paths inside the sandbox.
pub const SANDBOX_RUN_DIR: &str = "/run/dwell";
pub const SANDBOX_AGENT_DIR: &str = "/.dwell";
pub const SANDBOX_AGENT: &str = "/.dwell/agent";
pub const SANDBOX_AGENT_SOCKET: &str = "/run/dwell/agent.sock";

pub fn state_file(config: &SandboxConfig, name: &str) -> PathBuf {
    config.state_dir.join(name)
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

/// Name of a host dir's writable layer: `/usr/local` -> `usr_local`.
pub fn host_dir_name(dir: &Path) -> String {
    dir.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("_")
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
        assert_eq!(host_dir_name(Path::new("/usr/local")), "usr_local");
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
