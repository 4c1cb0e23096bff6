//! Density: how many idle sandboxes a node holds and what each costs.
//! Per runtime, N idle sandboxes (1,000 namespace, up to 100 gVisor or as
//! many as fit): host memory, idle CPU, create time as the node fills,
//! exec with all of them running against the empty node, and teardown,
//! with a check that nothing is left ([`fill`]); plus gVisor create to
//! first exec cold and warm beside plain `runsc run` ([`start`]). The
//! report section and its bars are in [`render`].

pub mod fill;
pub mod host;
pub mod render;
pub mod start;

use std::time::Duration;

use hyper::Method;

use crate::api::Api;
use crate::error::Result;

/// The density case's settings (`--density-*`).
#[derive(Debug, Clone)]
pub struct DensityOpts {
    /// Namespace sandboxes to fill the node with (0 skips).
    pub ns: usize,
    /// gVisor sandboxes to aim for (0 skips); fewer when they do not fit.
    pub gvisor: usize,
    /// `--memory` and `--disk` of each sandbox.
    pub memory: String,
    pub disk: String,
    /// Execs per exec measurement.
    pub exec: usize,
    /// Idle time before the CPU window and after the warm-up sandbox: long
    /// enough for the daemon to put idle sandboxes to sleep (gVisor dozes
    /// after 2 s without calls by default).
    pub settle: Duration,
    /// The window over which idle CPU is read.
    pub window: Duration,
    /// Rounds of gVisor create to first exec, cold / warm / runsc (0 skips).
    pub starts: usize,
    /// The daemon's `--listen` address, where the web console is measured
    /// while the namespace sandboxes exist (`None`: that is skipped).
    pub console: Option<std::net::SocketAddr>,
}

impl Default for DensityOpts {
    fn default() -> DensityOpts {
        DensityOpts {
            ns: 1000,
            gvisor: 100,
            memory: "64M".into(),
            disk: "1G".into(),
            exec: 100,
            settle: Duration::from_secs(5),
            window: Duration::from_secs(10),
            starts: 20,
            console: None,
        }
    }
}

pub struct DensityResults {
    pub ns: Option<fill::Fill>,
    pub gvisor: Option<fill::Fill>,
    /// Why the gVisor parts did not run.
    pub gvisor_skipped: Option<String>,
    pub starts: Option<start::Starts>,
    /// The web console measured with the namespace sandboxes in place
    /// (`None`: no namespace fill ran).
    pub console: Option<crate::console::Console>,
}

/// The whole case on the daemon behind `api`; `cold` is a second daemon
/// without a warm gVisor pool, for the cold column of the start case.
/// Sandboxes of `cold` are deleted here, also on failure; those of `api`
/// stay tracked by it until deleted.
pub async fn run(
    api: &mut Api,
    mut cold: Option<&mut Api>,
    o: &DensityOpts,
    daemon_pid: u32,
    warmup: usize,
) -> Result<DensityResults> {
    let mut r = DensityResults {
        ns: None,
        gvisor: None,
        gvisor_skipped: None,
        starts: None,
        console: None,
    };
    if o.ns > 0 {
        let mut f = fill::run(api, fill::Runtime::Namespace, o.ns, o, daemon_pid).await?;
        r.console = f.console.take();
        r.ns = Some(f);
    }
    let gvisor = (o.gvisor > 0 || o.starts > 0) && crate::gvisor::available(api).await;
    if !gvisor {
        r.gvisor_skipped = Some(if o.gvisor == 0 && o.starts == 0 {
            "skipped (--density-gvisor 0 --density-starts 0)".into()
        } else {
            "skipped: runsc is missing or the daemon cannot run gVisor (see the log)".into()
        });
        return Ok(r);
    }
    if o.gvisor > 0 {
        r.gvisor = Some(fill::run(api, fill::Runtime::Gvisor, o.gvisor, o, daemon_pid).await?);
    }
    if o.starts > 0 {
        crate::step("density: gVisor create to first exec, cold / warm / plain runsc");
        let started = start::run(api, cold.as_deref_mut(), warmup, o.starts).await;
        if let Some(c) = cold {
            for e in c.delete_all().await {
                eprintln!("dwell-bench: cleanup of the pool-less daemon: {e}");
            }
        }
        r.starts = Some(started?);
    }
    Ok(r)
}

/// The value of metric `name` in Prometheus text (summed over its label
/// sets); `None` when it is absent.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v: Option<f64> = rest.rsplit(' ').next().and_then(|v| v.parse().ok());
        if let Some(v) = v {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

async fn metrics(api: &mut Api) -> Option<String> {
    let b = api.call_raw(Method::GET, "/metrics", None).await.ok()?;
    Some(String::from_utf8_lossy(&b).into_owned())
}

/// Creates served from the daemon's warm gVisor pool so far (`None`: the
/// daemon has no pool).
pub async fn pool_claims(api: &mut Api) -> Option<u64> {
    metric(&metrics(api).await?, "dwell_gvisor_pool_claims_total").map(|v| v as u64)
}

/// The memory limit of the pool's sandboxes, in bytes: only creates with
/// exactly this `--memory` are served warm.
pub async fn pool_memory(api: &mut Api) -> Option<u64> {
    metric(&metrics(api).await?, "dwell_gvisor_pool_memory_bytes").map(|v| v as u64)
}

/// Ready sandboxes in the daemon's warm gVisor pool.
pub async fn pool_ready(api: &mut Api) -> Option<f64> {
    metric(&metrics(api).await?, "dwell_gvisor_pool_ready")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_metrics() {
        let t = "# HELP dwell_gvisor_pool_ready Ready.\n# TYPE dwell_gvisor_pool_ready gauge\n\
                 dwell_gvisor_pool_ready 2\n\
                 dwell_gvisor_pool_ready_total 9\n\
                 dwell_sandboxes{tenant=\"a\",state=\"running\"} 3\n\
                 dwell_sandboxes{tenant=\"b\",state=\"running\"} 4\n";
        assert_eq!(metric(t, "dwell_gvisor_pool_ready"), Some(2.0));
        assert_eq!(metric(t, "dwell_sandboxes"), Some(7.0));
        assert_eq!(metric(t, "dwell_gvisor_pool_claims_total"), None);
    }
}
