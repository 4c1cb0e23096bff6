//! Starting a sandbox in a pool sandbox ([`super::pool`]), and what the
//! rest of the runtime does differently for a sandbox started that way.
//!
//! A claim thaws the pool sandbox, mounts the sandbox's run dir and root as
//! a cold start does, and runs the sandbox's own container in it (`runsc
//! run` with the annotations `io.kubernetes.cri.container-type: container`
//! and `io.kubernetes.cri.sandbox-id: <pool sandbox>`): the same spec as a
//! cold start's (agent as init, overlay root, volumes, `/run/dwell`, caps,
//! rlimits), under the same runsc flags. Then the pool sandbox's cgroup is
//! renamed to the sandbox's (`<parent>/gvpool.<hex>` becomes
//! `<parent>/<id>` in every hierarchy: the processes, their memory charges
//! and the limits move with it), the sandbox's pids and CPU limits are
//! written, and the daemon waits for the agent. From then on everything
//! keyed on the cgroup (stats, the agent channel's peer check, the CPU
//! limit, the freezer) finds the sandbox where a cold start puts it.
//! (Renaming a cgroup works on cgroup v1 only: on a cgroup2-only host the
//! pool is off.)
//!
//! runsc's own records stay under the runsc ids: the sandbox's container
//! is `<id>`, the pool sandbox's placeholder `gvpool.<hex>`. [`pool_root`]
//! finds the one from the other through runsc's state file names;
//! `state`, `pause`, `resume`, `checkpoint` address the container `<id>`
//! and act on the whole runsc sandbox; stop deletes the placeholder (which
//! ends the runsc sandbox) and then the container's record.
//!
//! Hibernation checkpoints the whole runsc sandbox; the image dir gets a
//! [`POOLED_MARKER`], and a restore brings back both containers (a new
//! placeholder from `state_dir/pool-root`, in the sandbox's own cgroup,
//! then the sandbox's container into it).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::pool::{self, PoolCtx, POOL_PREFIX};
use super::runsc::Output;
use super::{bundle, cpu, hibernate, rootfs, run_dir, GvisorRuntime, BUNDLE_DIR};
use crate::error::Context;
use crate::host::layout;
use crate::{Error, Result, SandboxConfig, Started};

/// In an image dir: the checkpoint holds a pooled sandbox (placeholder
/// plus the sandbox's container). Holds the placeholder's old name.
pub const POOLED_MARKER: &str = "pooled";
/// In the state dir: the placeholder's bundle for a restore.
pub const POOL_ROOT_DIR: &str = "pool-root";
/// In [`POOL_ROOT_DIR`]: the name of the placeholder being restored.
const RESTORED_ROOT_FILE: &str = "name";

/// The runsc sandbox (placeholder) container `id` runs in when it was
/// started from the pool, from runsc's state file names in `root`.
pub fn pool_root(root: &Path, id: &str) -> Option<String> {
    let prefix = format!("{id}_sandbox:{POOL_PREFIX}");
    let rd = std::fs::read_dir(root).ok()?;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        if let Some(rest) = n
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".state"))
        {
            return Some(format!("{POOL_PREFIX}{rest}"));
        }
    }
    None
}

/// The spec of the sandbox's container inside runsc sandbox `sandbox`:
/// the cold spec, annotated as a container of that sandbox, without a
/// cgroup of its own (runsc keeps every process of a sandbox in the
/// sandbox's cgroup).
pub fn container_spec(config: &SandboxConfig, rootfs: &Path, sandbox: &str) -> serde_json::Value {
    let mut spec = bundle::spec(config, rootfs, "");
    if let Some(linux) = spec["linux"].as_object_mut() {
        linux.remove("cgroupsPath");
    }
    spec["annotations"] = serde_json::json!({
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": sandbox,
    });
    spec
}

/// Rename cgroup `<parent>/<from>` to `<parent>/<to>` in every hierarchy
/// that has it (an empty `<to>` left by an earlier run is removed first).
pub fn rename_cgroups(parent: &str, from: &str, to: &str) -> Result<()> {
    for (src, dst) in pool::hierarchy_dirs(parent, from)
        .into_iter()
        .zip(pool::hierarchy_dirs(parent, to))
    {
        if !src.exists() {
            continue;
        }
        let _ = std::fs::remove_dir(&dst);
        std::fs::rename(&src, &dst).map_err(|e| Error::Io {
            context: format!(
                "moving the pool sandbox's cgroup {} to {} (cgroup v1 renames cgroups; \
                 cgroup2 does not, and the gVisor pool needs --gvisor-pool 0 there)",
                src.display(),
                dst.display()
            ),
            source: e,
        })?;
    }
    Ok(())
}

/// Write the sandbox's pids limit into its (renamed) cgroup.
fn write_pids(parent: &str, config: &SandboxConfig) -> Result<()> {
    for dir in pool::hierarchy_dirs(parent, &config.id) {
        let f = dir.join("pids.max");
        if f.exists() {
            std::fs::write(&f, config.resources.pids.to_string())
                .context(|| format!("setting the sandbox's pids limit in {}", f.display()))?;
        }
    }
    Ok(())
}

impl GvisorRuntime {
    /// The pool's context (runsc, root, cgroup parent, options).
    pub(super) fn pool_ctx(&self) -> PoolCtx {
        PoolCtx {
            runsc: self.runsc.clone(),
            root: self.options.root.clone(),
            cgroup_parent: self.options.cgroup_parent.clone(),
            timeout: self.options.runsc_timeout,
            options: self.options.pool.clone(),
        }
    }

    /// Whether `config` may start in a pool sandbox: everything runsc fixes
    /// when a sandbox boots must be what the pool booted with (no network
    /// namespace of its own, no raw sockets, the pool's memory limit).
    pub fn poolable(&self, config: &SandboxConfig) -> bool {
        !super::network::needs_netns(config)
            && !config.grants.raw_sockets
            && config.resources.memory_bytes == self.options.pool.memory_bytes
    }

    /// Start `config` from the pool when it can, else None (start cold).
    pub(super) fn boot_warm(&self, config: &SandboxConfig) -> Option<Result<Started>> {
        let pool = self.pool.as_ref()?;
        if !self.poolable(config) {
            return None;
        }
        let name = pool.take()?;
        let t0 = Instant::now();
        let r = self.claim(config, &name);
        match &r {
            Ok(_) => {
                pool.done(true);
                tracing::info!(id = %config.id, pool = %name, "gvisor sandbox started warm from the pool in {:?}", t0.elapsed());
            }
            Err(e) => {
                tracing::warn!(id = %config.id, error = %e, "starting from the gVisor pool failed");
                self.unclaim(config, &name);
                pool.done(false);
            }
        }
        Some(r)
    }

    /// Add `config`'s container to pool sandbox `name` and make the runsc
    /// sandbox the sandbox's.
    fn claim(&self, config: &SandboxConfig, name: &str) -> Result<Started> {
        let ctx = self.pool_ctx();
        let t0 = Instant::now();
        pool::freeze(&ctx, name, false)?;
        let t_thaw = t0.elapsed();
        pool::set_hostname(&ctx, name, &config.hostname)?;
        let t_hostname = t0.elapsed();
        run_dir::mount(&*self.host, config)?;
        let sock = run_dir::agent_socket(config);
        let root = rootfs::mount(&*self.host, config)?;
        write_spec(config, &container_spec(config, &root, name))?;
        let t_mount = t0.elapsed();
        let bundle = layout::state_file(config, BUNDLE_DIR).display().to_string();
        let pid_file = layout::state_file(config, hibernate::PID_FILE);
        let _ = std::fs::remove_file(&pid_file);
        let pid_arg = format!("--pid-file={}", pid_file.display());
        self.runsc.run(
            &["run", "--detach", &pid_arg, "--bundle", &bundle, &config.id],
            Output::Console(&layout::console_path(config)),
            self.options.runsc_timeout,
        )?;
        let t_run = t0.elapsed();
        self.finish_claim(config, name)?;
        let t_cgroup = t0.elapsed();
        self.wait_for_agent(config, &sock)?;
        tracing::debug!(
            id = %config.id,
            "claimed {name}: thaw {:?}, hostname {:?}, mounts and bundle {:?}, runsc run {:?}, \
             cgroup {:?}, agent {:?}",
            t_thaw,
            t_hostname - t_thaw,
            t_mount - t_hostname,
            t_run - t_mount,
            t_cgroup - t_run,
            t0.elapsed() - t_cgroup
        );
        Ok(Started {
            pid: hibernate::read_pid(&pid_file),
            agent_socket: sock,
        })
    }

    /// The cgroup half of a claim: the pool sandbox's cgroup becomes the
    /// sandbox's, with its pids and CPU limits. Also run by `observe` for a
    /// claim a dead daemon left halfway.
    pub(super) fn finish_claim(&self, config: &SandboxConfig, name: &str) -> Result<()> {
        let parent = &self.options.cgroup_parent;
        rename_cgroups(parent, name, &config.id)?;
        write_pids(parent, config)?;
        cpu::apply(config, &self.cgroups_path(&config.id))
    }

    /// Undo a failed claim: the pool sandbox goes (with whatever of the
    /// sandbox's container it holds) and so do the cgroups under either name.
    fn unclaim(&self, config: &SandboxConfig, name: &str) {
        let _ = self.call(&["delete", "--force", &config.id]);
        pool::discard(&self.pool_ctx(), name);
        pool::remove_cgroups(&self.options.cgroup_parent, &config.id);
    }

    /// Stop a sandbox that runs in pool sandbox `root`: deleting the
    /// placeholder ends the runsc sandbox; then the container's record, the
    /// cgroup (runsc removes only the one under the name it made) and the
    /// placeholder's directory go.
    pub(super) fn stop_pooled(&self, config: &SandboxConfig, root: &str) -> Result<()> {
        let parent = &self.options.cgroup_parent;
        // A frozen process cannot die.
        for dir in pool::hierarchy_dirs(parent, &config.id) {
            let f = dir.join("freezer.state");
            if f.exists() {
                let _ = std::fs::write(&f, "THAWED");
            }
        }
        let deleted = self.call(&["delete", "--force", root]).map(drop);
        if deleted.is_err() {
            // The container's record below is the only link to the runsc
            // sandbox: end its processes (all in the sandbox's cgroup)
            // before it goes, so nothing runs on unseen.
            pool::kill_cgroup_processes(parent, &config.id);
            pool::kill_cgroup_processes(parent, root);
        }
        let _ = self.call(&["delete", "--force", &config.id]);
        pool::remove_cgroups(parent, &config.id);
        pool::remove_cgroups(parent, root);
        let _ = std::fs::remove_dir_all(self.options.pool.dir.join(root));
        deleted
    }

    /// Before the checkpoint of a pooled sandbox: mark the image as holding
    /// two containers.
    pub(super) fn mark_pooled_image(&self, image_dir: &Path, root: &str) -> Result<()> {
        let f = image_dir.join(POOLED_MARKER);
        std::fs::write(&f, root).context(|| format!("writing {}", f.display()))
    }

    /// For a restore from a pooled sandbox's image: bring back a
    /// placeholder (a new name, the sandbox's own cgroup) and return its
    /// name, for the sandbox's container to be restored into. None for a
    /// cold sandbox's image.
    pub(super) fn restore_pool_root(
        &self,
        config: &SandboxConfig,
        image_dir: &Path,
    ) -> Result<Option<String>> {
        if !image_dir.join(POOLED_MARKER).is_file() {
            return Ok(None);
        }
        let agent = &config.agent_binary;
        let dir: PathBuf = layout::state_file(config, POOL_ROOT_DIR);
        let cg = self.cgroups_path(&config.id);
        let mem = config.resources.memory_bytes;
        let pids = config.resources.pids;
        // The same mounts as at the checkpoint (runsc matches them); the
        // process and the hostname come back from the image.
        pool::write_root_bundle(&dir, agent, |r, ctl| {
            pool::root_spec(r, Some(ctl), &cg, mem, pids)
        })?;
        let name = format!(
            "{POOL_PREFIX}{:016x}",
            crate::host::sys::random_u64().context(|| "reading random bytes".to_string())?
        );
        let image = format!("--image-path={}", image_dir.display());
        let bundle = dir.display().to_string();
        // Named for `discard_restored_pool_root` before runsc knows it.
        let name_file = dir.join(RESTORED_ROOT_FILE);
        std::fs::write(&name_file, &name).context(|| format!("writing {}", name_file.display()))?;
        self.runsc.run(
            &["restore", "--detach", &image, "--bundle", &bundle, &name],
            Output::Console(&layout::console_path(config)),
            self.options.runsc_timeout,
        )?;
        Ok(Some(name))
    }

    /// After a failed restore: delete the placeholder `restore_pool_root`
    /// brought back, which the sandbox's container may not have joined (then
    /// nothing else finds it).
    pub(super) fn discard_restored_pool_root(&self, config: &SandboxConfig) {
        let f = layout::state_file(config, POOL_ROOT_DIR).join(RESTORED_ROOT_FILE);
        let Ok(name) = std::fs::read_to_string(&f) else {
            return;
        };
        if name.starts_with(POOL_PREFIX) && layout::validate_id(&name).is_err() {
            let _ = self.call(&["delete", "--force", name.trim()]);
        }
        let _ = std::fs::remove_file(&f);
    }
}

/// Write `spec` as the sandbox's bundle.
pub(super) fn write_spec(config: &SandboxConfig, spec: &serde_json::Value) -> Result<()> {
    let bundle = layout::state_file(config, BUNDLE_DIR);
    std::fs::create_dir_all(&bundle).context(|| format!("creating {}", bundle.display()))?;
    let path = bundle.join("config.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(spec).expect("the spec serialises"),
    )
    .context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::recording::config;

    #[test]
    fn the_container_spec_is_the_cold_one_inside_the_pool_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let cold = bundle::spec(&config, Path::new("/r"), "/p/sb1");
        let warm = container_spec(&config, Path::new("/r"), "gvpool.00ff");
        assert_eq!(
            warm["annotations"]["io.kubernetes.cri.sandbox-id"],
            "gvpool.00ff"
        );
        assert_eq!(
            warm["annotations"]["io.kubernetes.cri.container-type"],
            "container"
        );
        assert!(warm["linux"].get("cgroupsPath").is_none());
        // Everything else is the cold spec: same process, caps, mounts, limits.
        for k in ["process", "root", "mounts", "hostname"] {
            assert_eq!(warm[k], cold[k], "{k}");
        }
        assert_eq!(warm["linux"]["resources"], cold["linux"]["resources"]);
        assert_eq!(warm["linux"]["namespaces"], cold["linux"]["namespaces"]);
    }

    #[test]
    fn the_pool_root_of_a_container_comes_from_runsc_file_names() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "gvpool.0a_sandbox:gvpool.0a.state",
            "sb1_sandbox:gvpool.0a.state",
            "sb10_sandbox:sb10.state",
        ] {
            std::fs::write(dir.path().join(f), b"{}").unwrap();
        }
        assert_eq!(pool_root(dir.path(), "sb1").as_deref(), Some("gvpool.0a"));
        assert_eq!(pool_root(dir.path(), "sb10"), None);
        assert_eq!(pool_root(dir.path(), "sb2"), None);
    }
}
