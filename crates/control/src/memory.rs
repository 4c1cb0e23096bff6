//! Saved memory in the snapshot store: a hibernated gVisor sandbox's
//! checkpoint (the files of its `hibernate` dir) stored with its volume, so
//! an archive resumes warm and a snapshot can be started warm as a new
//! sandbox, on this daemon or on another one sharing the object store.
//!
//! The files go into the volume snapshot's manifest as *attachments*
//! (`dwell-snapshot` format version 2), one per file, named
//! `memory/<file>`: they are published, deleted and garbage-collected with
//! the volume in one piece, and cut, deduplicated, encrypted and verified
//! exactly like it. A third attachment, [`DESCRIPTION`], says what runs in
//! the image (runtime, image name, resources, network, environment) so that
//! a daemon that never saw the sandbox can rebuild its runtime config: the
//! image is resolved by name through that daemon's own image store, paths
//! are that daemon's, and nothing host-specific of the capturing machine
//! is stored or trusted. The agent binary the image runs is attached too
//! (`agent/dwell-agent-<hash>`, deduplicated to nothing after the first
//! snapshot): the saved memory holds that version's code mapped from its
//! file, so the restoring daemon installs exactly that version beside its
//! own and gives the sandbox that one. Sealed secrets stay behind: they are sealed with
//! the capturing daemon's key (the processes in the image still have them
//! in memory).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dwell_snapshot::{ChunkStore, Manifest, RestoreOptions};
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::reconcile::hibernate;
use crate::snapshots::Ctx;
use dwell_runtime::NetworkMode;

/// Attachment name prefix of the checkpoint's files.
const PREFIX: &str = "memory/";

/// Attachment name prefix of the agent binary the image runs.
const AGENT_PREFIX: &str = "agent/";

/// Attachment describing the sandbox the image belongs to.
pub(crate) const DESCRIPTION: &str = "sandbox.json";

/// Where the description is written for a capture (state dir; removed after).
const DESCRIPTION_TMP: &str = ".memory-description.json";

/// Where a restore assembles the checkpoint before it is moved into place.
const RESTORING_DIR: &str = "hibernate.restoring";

/// What a daemon needs to run a stored image again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Description {
    /// Always `gvisor` today: the checkpoint is the gVisor sentry's.
    pub runtime: String,
    /// The image's name, resolved by the restoring daemon's image store.
    pub image: String,
    pub vcpus: f64,
    pub memory_bytes: u64,
    pub pids: u64,
    #[serde(default)]
    pub network: NetworkMode,
    /// The user's environment (not the sealed secrets).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The opt-in privileges the saved processes were started with (their
    /// capabilities are part of the saved memory).
    #[serde(default)]
    pub allow_raw_sockets: bool,
    #[serde(default)]
    pub allow_core_dumps: bool,
}

impl Description {
    pub(crate) fn of(rec: &crate::model::Record) -> Result<Description> {
        let spec = rec.spec.clone();
        Ok(Description {
            runtime: rec.runtime.to_string(),
            image: rec.image.clone(),
            vcpus: spec.vcpus,
            memory_bytes: spec.memory_bytes,
            pids: spec.pids,
            network: spec.network,
            env: spec.env,
            allow_raw_sockets: spec.allow_raw_sockets,
            allow_core_dumps: spec.allow_core_dumps,
        })
    }
}

/// Make the spec of a sandbox created from a snapshot with memory match
/// what the memory was taken of: its environment, and its resources unless
/// the request sets them. The image, runtime and network are fixed by the
/// memory: a request for others is refused.
pub(crate) fn apply(
    d: &Description,
    req: &crate::model::CreateRequest,
    spec: &mut crate::model::SandboxSpec,
) -> Result<()> {
    if req.image.as_ref().is_some_and(|i| *i != d.image) {
        return Err(Error::invalid(
            "image",
            format!("the saved memory runs image {}; leave --image out", d.image),
        ));
    }
    if req.runtime.as_deref().is_some_and(|r| {
        crate::runtimes::canonical(r).ok() != crate::runtimes::canonical(&d.runtime).ok()
    }) {
        let saver =
            crate::runtimes::canonical(&d.runtime).map_or(d.runtime.as_str(), |k| k.title());
        return Err(Error::invalid(
            "isolation",
            format!("the saved memory is a {saver} sandbox's: its copies run under {saver} too"),
        ));
    }
    if req.network.is_some_and(|n| n != d.network) {
        return Err(Error::invalid(
            "network",
            format!(
                "the saved memory has network {}; a copy keeps it: ask for that network or none",
                serde_json::to_string(&d.network).expect("serialises")
            ),
        ));
    }
    for (field, asked, saved) in [
        (
            "allow_raw_sockets",
            req.allow_raw_sockets,
            d.allow_raw_sockets,
        ),
        ("allow_core_dumps", req.allow_core_dumps, d.allow_core_dumps),
    ] {
        if asked.is_some_and(|a| a != saved) {
            return Err(Error::invalid(
                field,
                format!(
                    "the saved memory's processes run with {field} = {saved} (it is part of \
                     their saved state); leave the flag out"
                ),
            ));
        }
    }
    spec.network = d.network;
    spec.allow_raw_sockets = d.allow_raw_sockets;
    spec.allow_core_dumps = d.allow_core_dumps;
    if req.memory.is_none() {
        spec.memory_bytes = d.memory_bytes;
    }
    if req.vcpus.is_none() {
        spec.vcpus = d.vcpus;
    }
    if req.pids.is_none() {
        spec.pids = d.pids;
    }
    let mut env = d.env.clone();
    env.extend(std::mem::take(&mut spec.env));
    spec.env = env;
    Ok(())
}

/// Whether snapshot `m` holds a complete saved memory image (of any
/// runtime that hibernates).
pub(crate) fn has_memory(m: &Manifest) -> bool {
    dwell_runtime::Kind::ALL
        .iter()
        .filter_map(|k| k.capabilities().hibernate)
        .any(|f| {
            m.attachment(&format!("{PREFIX}{}", f.complete_file))
                .is_some()
        })
}

/// Stored bytes of the memory image's files (their apparent size), if any.
pub fn memory_bytes(m: &Manifest) -> Option<u64> {
    has_memory(m).then(|| {
        m.attachments
            .iter()
            .filter(|a| a.name.starts_with(PREFIX))
            .map(|a| a.size)
            .sum()
    })
}

/// The attachments capturing sandbox `rec`'s saved state (its checkpoint's
/// files and the description), for [`Ctx::attachments`]. Blocking.
pub(crate) fn attachments(
    inner: &Context,
    rec: &crate::model::Record,
) -> Result<Vec<(String, PathBuf)>> {
    let dir = hibernate::image_dir(inner, &rec.id);
    let io = |p: &Path, e: std::io::Error| Error::Internal(format!("{}: {e}", p.display()));
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
        let e = e.map_err(|e| io(&dir, e))?;
        if !e.file_type().map_err(|er| io(&e.path(), er))?.is_file() {
            continue;
        }
        let name = e.file_name().into_string().map_err(|n| {
            Error::Internal(format!(
                "{}: a file name that is not UTF-8: {n:?}",
                dir.display()
            ))
        })?;
        out.push((format!("{PREFIX}{name}"), e.path()));
    }
    out.sort();
    let agent = crate::reconcile::config::config_of(inner, &rec.id)?.agent_binary;
    let agent_name = agent
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| crate::agents::is_file_name(n))
        .ok_or_else(|| {
            Error::Internal(format!(
                "the agent binary {} has no versioned name",
                agent.display()
            ))
        })?;
    out.push((format!("{AGENT_PREFIX}{agent_name}"), agent.clone()));
    let desc = inner.state_dir(&rec.id).join(DESCRIPTION_TMP);
    let json = serde_json::to_vec_pretty(&Description::of(rec)?).expect("serialises");
    std::fs::write(&desc, json).map_err(|e| io(&desc, e))?;
    out.push((DESCRIPTION.to_string(), desc));
    Ok(out)
}

/// Remove what [`attachments`] wrote for the capture.
pub(crate) fn capture_done(inner: &Context, id: &str) {
    let _ = std::fs::remove_file(inner.state_dir(id).join(DESCRIPTION_TMP));
}

fn restore_opts<'a>(ctx: &'a Ctx, m: &Manifest) -> RestoreOptions<'a> {
    RestoreOptions {
        key: ctx.read_key(m),
        ..Default::default()
    }
}

/// Read the description stored with `m` (verified like every chunk),
/// through a temporary file in the directory `scratch`.
pub(crate) fn description(
    store: &dyn ChunkStore,
    m: &Manifest,
    scratch: &Path,
    ctx: &Ctx,
) -> Result<Description> {
    if m.attachment(DESCRIPTION).is_none() {
        return Err(Error::Conflict(format!(
            "snapshot {} holds saved memory but no {DESCRIPTION}: it was not made by dwell",
            m.id
        )));
    }
    std::fs::create_dir_all(scratch)
        .map_err(|e| Error::Internal(format!("{}: {e}", scratch.display())))?;
    let path = scratch.join(format!(".memory-description.{}.json", crate::ids::new_id()));
    dwell_snapshot::restore_attachment(m, DESCRIPTION, store, &path, &restore_opts(ctx, m))?;
    let bytes = std::fs::read(&path);
    let _ = std::fs::remove_file(&path);
    let bytes = bytes.map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
    let d: Description = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Conflict(format!(
            "snapshot {}: its {DESCRIPTION} is unreadable: {e}",
            m.id
        ))
    })?;
    if crate::runtimes::capabilities(&d.runtime)
        .hibernate
        .is_none()
    {
        return Err(Error::Conflict(format!(
            "snapshot {} holds memory of a {} sandbox, a runtime that cannot restore memory",
            m.id, d.runtime
        )));
    }
    Ok(d)
}

/// Install the agent version the memory of `m` runs into this daemon's
/// bin dir (unless it is there) and return its path; None for a snapshot
/// made before agents were attached. The content is verified like every
/// chunk and must match the version its name tags. Blocking.
pub(crate) fn install_agent(
    inner: &Context,
    store: &dyn ChunkStore,
    m: &Manifest,
    ctx: &Ctx,
) -> Result<Option<PathBuf>> {
    let Some(a) = m
        .attachments
        .iter()
        .find(|a| a.name.starts_with(AGENT_PREFIX))
    else {
        return Ok(None);
    };
    let name = &a.name[AGENT_PREFIX.len()..];
    if !crate::agents::is_file_name(name) {
        return Err(Error::Conflict(format!(
            "snapshot {}: unexpected agent attachment {:?}",
            m.id, a.name
        )));
    }
    let bin = inner.agent_binary.parent().ok_or_else(|| {
        Error::Internal(format!(
            "the agent {} has no directory",
            inner.agent_binary.display()
        ))
    })?;
    let dst = bin.join(name);
    if dst.is_file() {
        return Ok(Some(dst));
    }
    let io = |p: &Path, e: std::io::Error| Error::Internal(format!("{}: {e}", p.display()));
    let tmp = bin.join(format!(".{name}.{}.tmp", crate::ids::new_id()));
    let r = (|| -> Result<()> {
        dwell_snapshot::restore_attachment(m, &a.name, store, &tmp, &restore_opts(ctx, m))?;
        let bytes = std::fs::read(&tmp).map_err(|e| io(&tmp, e))?;
        if crate::agents::file_name(&bytes) != name {
            return Err(Error::Conflict(format!(
                "snapshot {}: its agent attachment {:?} does not hold that agent version",
                m.id, a.name
            )));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &dst).map_err(|e| io(&dst, e))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map(|()| Some(dst))
}

/// Restore the memory image of `m` as the saved state of sandbox `id`
/// (every chunk verified), and install the agent version it runs (see
/// [`install_agent`]; its path is returned). The files are assembled beside
/// it and moved into place only when all are good, so [`hibernate::saved`]
/// never sees half of an image; an older saved state is replaced. When `id`
/// has a runtime config, it is pointed at that agent. Blocking.
pub(crate) fn restore(
    inner: &Context,
    store: &dyn ChunkStore,
    m: &Manifest,
    id: &str,
    ctx: &Ctx,
) -> Result<Option<PathBuf>> {
    let agent = install_agent(inner, store, m, ctx)?;
    let state = inner.state_dir(id);
    let tmp = state.join(RESTORING_DIR);
    let io = |p: &Path, e: std::io::Error| Error::Internal(format!("{}: {e}", p.display()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let r = (|| -> Result<()> {
        for a in m.attachments.iter().filter(|a| a.name.starts_with(PREFIX)) {
            let file = &a.name[PREFIX.len()..];
            if file.contains('/') {
                return Err(Error::Conflict(format!(
                    "snapshot {}: unexpected memory attachment {:?}",
                    m.id, a.name
                )));
            }
            dwell_snapshot::restore_attachment(
                m,
                &a.name,
                store,
                &tmp.join(file),
                &restore_opts(ctx, m),
            )?;
        }
        let dst = hibernate::image_dir(inner, id);
        hibernate::discard(inner, id)?;
        std::fs::rename(&tmp, &dst).map_err(|e| io(&dst, e))?;
        std::fs::File::open(&state)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&state, e))
    })();
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    r?;
    if let Some(path) = &agent {
        if let Ok(mut cfg) = crate::reconcile::config::config_of(inner, id) {
            if &cfg.agent_binary != path {
                cfg.agent_binary = path.clone();
                crate::reconcile::config::save(inner, &cfg)?;
            }
        }
    }
    Ok(agent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CreateRequest, SandboxSpec, SizeArg};

    /// The name of a runtime that saves memory.
    fn hibernating() -> &'static str {
        dwell_runtime::Kind::ALL
            .into_iter()
            .find(|k| k.capabilities().hibernate.is_some())
            .expect("a runtime hibernates")
            .name()
    }

    fn desc() -> Description {
        Description {
            runtime: hibernating().into(),
            image: "debian".into(),
            vcpus: 2.0,
            memory_bytes: 512 << 20,
            pids: 300,
            network: NetworkMode::default(),
            env: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "2".into())]),
            allow_raw_sockets: false,
            allow_core_dumps: false,
        }
    }

    fn spec(req: &CreateRequest) -> SandboxSpec {
        req.to_spec(&crate::model::HostLimits {
            cpus: 4.0,
            memory_bytes: 8 << 30,
        })
        .unwrap()
    }

    #[test]
    fn a_warm_copy_takes_the_stored_resources_and_env_unless_asked_otherwise() {
        let req = CreateRequest {
            memory: Some(SizeArg::Text("1G".into())),
            env: BTreeMap::from([("B".into(), "mine".into())]),
            ..Default::default()
        };
        let mut s = spec(&req);
        apply(&desc(), &req, &mut s).unwrap();
        assert_eq!(s.memory_bytes, 1 << 30, "asked for");
        assert_eq!((s.vcpus, s.pids), (2.0, 300), "stored");
        assert_eq!(s.env["A"], "1");
        assert_eq!(s.env["B"], "mine", "the request's env wins");
    }

    #[test]
    fn a_warm_copy_refuses_another_image_runtime_or_network() {
        for req in [
            CreateRequest {
                image: Some("alpine".into()),
                ..Default::default()
            },
            CreateRequest {
                runtime: Some("namespace".into()),
                ..Default::default()
            },
            CreateRequest {
                network: Some(NetworkMode::Nat),
                ..Default::default()
            },
            CreateRequest {
                allow_raw_sockets: Some(true),
                ..Default::default()
            },
        ] {
            let mut s = spec(&req);
            assert!(apply(&desc(), &req, &mut s).is_err(), "{req:?}");
        }
        let same = CreateRequest {
            image: Some("debian".into()),
            runtime: Some(hibernating().into()),
            ..Default::default()
        };
        let mut s = spec(&same);
        apply(&desc(), &same, &mut s).unwrap();
    }

    #[test]
    fn the_description_round_trips_without_host_paths() {
        let j = serde_json::to_string(&desc()).unwrap();
        assert!(!j.contains('/'), "{j}");
        assert_eq!(serde_json::from_str::<Description>(&j).unwrap(), desc());
    }
}
