//! The OCI bundle runsc starts: `config.json` built from a
//! [`SandboxConfig`]. The root is the overlay already mounted on the host
//! (see [`super::rootfs`]); the agent binary and the socket directory come
//! in as bind mounts; limits become `linux.resources`, except the CPU
//! quota, which the runtime applies once runsc has started the sandbox
//! (see [`super::cpu`]).

use std::path::Path;

use serde_json::{json, Value};

use super::run_dir;
use crate::host::layout;
use crate::{Grants, SandboxConfig};

/// Capabilities of the agent (and so of everything it starts) inside the
/// gVisor kernel: the usual container set minus CAP_NET_RAW (added back by
/// [`caps`] when the sandbox was granted raw sockets), nothing that
/// administers the (virtual) machine.
const CAPS: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// PATH of the agent unless the config sets one.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities of a sandbox with `grants`.
fn caps(grants: &Grants) -> Vec<&'static str> {
    let mut caps = CAPS.to_vec();
    if grants.raw_sockets {
        caps.push("CAP_NET_RAW");
    }
    caps
}

/// The rlimits of the agent: many files, and no core dumps unless granted
/// (see [`crate::core_pattern`]). RLIMIT_CORE is 1 as on the ns runtime
/// (there 1 also stops a piped core_pattern; gVisor's sentry writes no
/// host core dumps anyway), so `ulimit -c` reads the same on both.
fn rlimits(grants: &Grants) -> Value {
    let mut limits =
        vec![json!({"type": "RLIMIT_NOFILE", "hard": 1_048_576u64, "soft": 1_048_576u64})];
    if !grants.core_dumps {
        limits.push(json!({"type": "RLIMIT_CORE", "hard": 1u64, "soft": 1u64}));
    }
    Value::Array(limits)
}

/// The OCI runtime spec for `config`, with `rootfs` as the root.
pub fn spec(config: &SandboxConfig, rootfs: &Path, cgroups_path: &str) -> Value {
    let mut env: Vec<String> = Vec::new();
    if !config.env.contains_key("PATH") {
        env.push(DEFAULT_PATH.into());
    }
    env.extend(
        config
            .env
            .iter()
            .filter(|(k, _)| *k != crate::AGENT_KEY_ENV)
            .map(|(k, v)| format!("{k}={v}")),
    );
    // The agent removes it from its environment before it starts anything.
    if let Some(key) = &config.agent_key {
        env.push(format!("{}={key}", crate::AGENT_KEY_ENV));
    }
    let r = &config.resources;
    let run_dir = layout::state_file(config, run_dir::RUN_DIR);
    let caps = caps(&config.grants);
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": [layout::SANDBOX_AGENT, "--listen", layout::SANDBOX_AGENT_SOCKET],
            "env": env,
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": rlimits(&config.grants),
            // gVisor (as of 20240729) always sets no_new_privs, whatever the
            // spec says ("PR_SET_NO_NEW_PRIVS is assumed to always be set"):
            // set-user-id binaries give nothing there.
            "noNewPrivileges": true,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": config.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": layout::SANDBOX_AGENT, "type": "bind",
             "source": config.agent_binary, "options": ["bind", "ro", "nosuid", "nodev"]},
            {"destination": layout::SANDBOX_RUN_DIR, "type": "bind",
             "source": run_dir, "options": ["bind", "rw", "nosuid", "nodev", "noexec"]},
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {
                "memory": {"limit": r.memory_bytes, "swap": r.memory_bytes},
                "pids": {"limit": r.pids},
            },
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "network"},
            ],
            "maskedPaths": crate::host::mounts::MASKED_PATHS,
            "readonlyPaths": crate::host::mounts::READONLY_PATHS,
        },
    });
    // Named volumes: bind mounts the gofer serves (the sentry resolves
    // the destination inside the sandbox; no host path is followed).
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for b in &config.binds {
            let mode = if b.read_only { "ro" } else { "rw" };
            mounts.push(json!({"destination": b.target, "type": "bind",
                "source": b.source, "options": ["bind", mode, "nosuid", "nodev"]}));
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NetworkMode, Resources, RootfsSpec};
    use std::collections::BTreeMap;

    #[test]
    fn spec_carries_limits_env_and_agent() {
        let config = SandboxConfig {
            id: "abc".into(),
            hostname: "h1".into(),
            rootfs: RootfsSpec {
                layers: vec!["/l".into()],
                host_dirs: vec![],
                upper_root: "/v".into(),
            },
            resources: Resources {
                vcpus: 1.5,
                memory_bytes: 512 << 20,
                pids: 100,
            },
            env: BTreeMap::from([("A".into(), "b".into())]),
            network: NetworkMode::None,
            state_dir: "/s".into(),
            agent_binary: "/bin/agent".into(),
            agent_key: None,
            grants: Default::default(),
            id_map: None,
            private_nets: Vec::new(),
            egress: Default::default(),
            binds: Vec::new(),
        };
        let s = spec(&config, Path::new("/s/rootfs"), "/dwell-gvisor/abc");
        assert_eq!(s["root"]["path"], "/s/rootfs");
        assert_eq!(s["hostname"], "h1");
        assert_eq!(s["process"]["args"][0], "/.dwell/agent");
        // Applied after start (super::cpu), not by runsc.
        assert!(s["linux"]["resources"].get("cpu").is_none());
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 512u64 << 20);
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 100);
        let env = s["process"]["env"].as_array().unwrap();
        assert!(env.iter().any(|e| e == "A=b"));
        let mounts = s["mounts"].as_array().unwrap();
        assert!(!mounts.iter().any(|m| m["destination"] == "/data"));
        let mut with_volume = config.clone();
        with_volume.binds.push(crate::Bind {
            source: "/v/mnt".into(),
            target: "/data".into(),
            read_only: true,
        });
        let sv = spec(&with_volume, Path::new("/r"), "/c");
        let m = sv["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert_eq!(m["source"], "/v/mnt");
        assert!(m["options"].as_array().unwrap().iter().any(|o| o == "ro"));
        assert!(mounts
            .iter()
            .any(|m| m["destination"] == "/run/dwell" && m["source"] == "/s/run"));
    }

    #[test]
    fn net_raw_and_core_dumps_only_when_granted() {
        let has_raw = |g: &Grants| caps(g).contains(&"CAP_NET_RAW");
        let core = |g: &Grants| {
            rlimits(g)
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["type"] == "RLIMIT_CORE")
                .cloned()
        };
        let default = Grants::default();
        assert!(!has_raw(&default));
        assert_eq!(
            core(&default).unwrap(),
            json!({"type": "RLIMIT_CORE", "hard": 1, "soft": 1})
        );
        let granted = Grants {
            raw_sockets: true,
            core_dumps: true,
            ..Default::default()
        };
        assert!(has_raw(&granted));
        assert!(core(&granted).is_none());
    }
}
