//! Which isolation runtimes `dwell serve` offers: the namespace runtime
//! always, gVisor when runsc runs on this host (otherwise the reason is
//! logged and creating a gVisor sandbox fails with it).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use dwell_runtime::gvisor::pool::PoolOptions;
use dwell_runtime::gvisor::{GvisorOptions, GvisorRuntime};
use dwell_runtime::Kind;

/// The cgroup parent of this daemon's gVisor sandboxes.
pub fn gvisor_cgroup_parent(cgroup_parent: &str) -> String {
    format!("{cgroup_parent}-gvisor")
}

/// The gVisor runtime of this daemon (runsc state under the data dir,
/// cgroups under `<cgroup_parent>-gvisor`, its warm pool as `pool` says
/// with `runsc-pool` under the data dir), or why it is unavailable.
pub fn gvisor(
    data_dir: &Path,
    cgroup_parent: &str,
    runsc: &Path,
    platform: dwell_runtime::gvisor::platform::Platform,
    deny_net: &[String],
    pool: PoolOptions,
) -> std::result::Result<Arc<GvisorRuntime>, String> {
    if platform == dwell_runtime::gvisor::platform::Platform::Kvm && !Path::new("/dev/kvm").exists()
    {
        let why = "--gvisor-platform kvm needs /dev/kvm, which this host lacks: use \
                   --gvisor-platform systrap (the default) or ptrace"
            .to_string();
        tracing::info!("gVisor runtime unavailable: {why}");
        return Err(why);
    }
    let opts = GvisorOptions {
        runsc: runsc.to_path_buf(),
        platform,
        deny_net: deny_net.to_vec(),
        cgroup_parent: gvisor_cgroup_parent(cgroup_parent),
        pool: PoolOptions {
            dir: data_dir.join("runsc-pool"),
            ..pool
        },
        ..GvisorOptions::new(data_dir.join("runsc"))
    };
    match GvisorRuntime::new(opts) {
        Ok(rt) => {
            tracing::info!(
                "gVisor runtime available ({}, platform {platform})",
                runsc.display()
            );
            if let Some(p) = rt.pool_status() {
                tracing::info!(
                    "gVisor warm pool: {} sandboxes of {} MiB (creates with that memory start warm)",
                    p.size,
                    p.memory_bytes >> 20
                );
            }
            Ok(Arc::new(rt))
        }
        Err(e) => {
            // Only the reason: the fix is added where it is reported.
            let why = match e {
                dwell_runtime::Error::Unsupported { why, .. } => why,
                other => other.to_string(),
            };
            tracing::info!("gVisor runtime unavailable: {why}");
            Err(why)
        }
    }
}

/// Check `--default-isolation` against what this host offers.
pub fn default_isolation(
    given: &str,
    gvisor: &std::result::Result<Arc<GvisorRuntime>, String>,
) -> Result<Kind> {
    let kind = dwell_control::runtimes::canonical(given).map_err(|e| anyhow::anyhow!("{e}"))?;
    if kind == Kind::Gvisor {
        if let Err(why) = gvisor {
            bail!(
                "--default-isolation gvisor, but gVisor is unavailable: {why}; install runsc \
                 (`scripts/install-deps.sh --gvisor`) or use --default-isolation namespace"
            );
        }
    }
    Ok(kind)
}
