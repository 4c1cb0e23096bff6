//! The runtime configuration of a sandbox: built from its record, image and
//! mounted volume at start, and kept in its state dir so every later
//! operation (and a restarted daemon) acts on exactly what was started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dwell_runtime::{IdMap, PrivateNet, Resources, RootfsSpec, SandboxConfig};
use dwell_storage::Image;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::SandboxSpec;

pub(crate) const CONFIG_FILE: &str = "sandbox.json";

/// The environment every sandbox starts with, before the image's and the
/// user's.
const BASE_ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("LANG", "C.UTF-8"),
    ("TERM", "xterm-256color"),
];

/// Build the config for a start.
pub(crate) fn build(
    inner: &Context,
    id: &str,
    name: &str,
    spec: &SandboxSpec,
    image: &Image,
    upper_root: PathBuf,
) -> Result<SandboxConfig> {
    let mut env: BTreeMap<String, String> = BASE_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for kv in &image.env {
        if let Some((k, v)) = kv.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
    env.extend(spec.env.clone());
    // The image's WORKDIR and USER: the agent's defaults for commands
    // that name none (it takes these out of its environment). The `host`
    // image's config describes an interactive shell; its sandboxes keep
    // the agent's own defaults (`/`, root).
    env.remove(dwell_proto::DEFAULT_WORKDIR_ENV);
    env.remove(dwell_proto::DEFAULT_USER_ENV);
    if image.name != dwell_storage::HOST_IMAGE {
        if let Some(w) = image.workdir.as_deref().map(str::trim) {
            if !w.is_empty() && w != "/" {
                env.insert(dwell_proto::DEFAULT_WORKDIR_ENV.into(), w.into());
            }
        }
        if let Some(u) = image.user.as_deref().map(str::trim) {
            // Root is what commands get anyway.
            if !matches!(u, "" | "root" | "0" | "0:0" | "root:root") {
                env.insert(dwell_proto::DEFAULT_USER_ENV.into(), u.into());
            }
        }
    }
    Ok(SandboxConfig {
        id: id.to_string(),
        hostname: name.to_string(),
        rootfs: RootfsSpec {
            layers: image.layers.clone(),
            host_dirs: image.host_dirs.clone(),
            upper_root,
        },
        resources: Resources {
            vcpus: spec.vcpus,
            memory_bytes: spec.memory_bytes,
            pids: spec.pids,
        },
        env,
        network: spec.network,
        state_dir: inner.state_dir(id),
        agent_binary: inner.agent_binary.clone(),
        agent_key: Some(new_agent_key()?),
        grants: spec.grants(),
        id_map: None,
        private_nets: private_nets(inner, id)?,
        egress: spec.egress.clone(),
        // Filled by the start (crate::volumes::attach), which mounts them.
        binds: Vec::new(),
    })
}

/// The networks a sandbox is on, for its runtime config (in the order of
/// its interfaces).
pub(crate) fn private_nets(inner: &Context, sandbox_id: &str) -> Result<Vec<PrivateNet>> {
    inner
        .store
        .networks_of(sandbox_id)?
        .into_iter()
        .map(|(n, m)| {
            let (_, len) = dwell_store::parse_subnet(&n.subnet)
                .ok_or_else(|| Error::Internal(format!("network {}: bad subnet", n.id)))?;
            let address = m
                .address
                .parse()
                .map_err(|_| Error::Internal(format!("network {}: bad address", n.id)))?;
            Ok(PrivateNet {
                name: n.name,
                bridge: n.bridge,
                address,
                prefix_len: len,
            })
        })
        .collect()
}

/// A fresh agent key (hex) for a sandbox's config: every start, and every
/// copy of a saved memory, gets its own.
pub(crate) fn new_agent_key() -> Result<String> {
    dwell_proto::AgentKey::generate()
        .map(|k| k.to_hex())
        .map_err(|e| Error::Internal(format!("no random bytes for an agent key: {e}")))
}

/// The host uid/gid range of a sandbox of the namespace runtime: its slot
/// is recorded in the store at the first start and kept until deletion.
/// (The runtime uses it unless `dwell serve --user-namespaces off`.)
pub(crate) fn id_range(inner: &Context, id: &str) -> Result<IdMap> {
    let slot = inner.store.reserve_id_range(id, IdMap::SLOTS)?;
    IdMap::of_slot(slot).map_err(|e| Error::Internal(e.to_string()))
}

/// Keep the config next to the sandbox's runtime state (and in memory:
/// every exec reads it for the sandbox's kernel counters).
pub(crate) fn save(inner: &Context, cfg: &SandboxConfig) -> Result<()> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| io(&cfg.state_dir, e))?;
    let path = cfg.state_dir.join(CONFIG_FILE);
    let tmp = cfg.state_dir.join(format!("{CONFIG_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(cfg).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&tmp, json).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    inner.configs().insert(cfg.id.clone(), cfg.clone());
    Ok(())
}

/// The config a sandbox was last started with.
pub(crate) fn config_of(inner: &Context, id: &str) -> Result<SandboxConfig> {
    if let Some(c) = inner.configs().get(id) {
        return Ok(c.clone());
    }
    let path = inner.state_dir(id).join(CONFIG_FILE);
    let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
    let cfg: SandboxConfig = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Internal(format!("corrupt {}: {e}", path.display())))?;
    inner.configs().insert(id.to_string(), cfg.clone());
    Ok(cfg)
}

/// Forget the cached config of a sandbox whose state dir is gone.
pub(crate) fn forget(inner: &Context, id: &str) {
    inner.configs().remove(id);
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("{}: {e}", path.display()))
}

/// A config naming only what `stop` needs (id and state dir), for sandboxes
/// whose own config is gone.
pub(crate) fn bare_config(inner: &Context, id: &str) -> SandboxConfig {
    SandboxConfig {
        id: id.to_string(),
        hostname: id.to_string(),
        rootfs: dwell_runtime::RootfsSpec {
            layers: Vec::new(),
            host_dirs: Vec::new(),
            upper_root: inner.data_dir.join("volumes").join(id),
        },
        resources: dwell_runtime::Resources {
            vcpus: 1.0,
            memory_bytes: 0,
            pids: 0,
        },
        env: Default::default(),
        network: dwell_runtime::NetworkMode::None,
        state_dir: inner.state_dir(id),
        agent_binary: inner.agent_binary.clone(),
        agent_key: None,
        grants: Default::default(),
        id_map: None,
        private_nets: Vec::new(),
        egress: Default::default(),
        binds: Vec::new(),
    }
}
