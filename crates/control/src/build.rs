//! Builds from a Dockerfile: the request, the events streamed while it
//! runs and the result ([`crate::Controller::build`] runs it; the engine
//! without sandboxes is the `dwell-build` crate).
//!
//! A build reads its context from a directory the daemon owns (the API
//! unpacks the client's tar there with the safe extractor). RUN steps run
//! in ephemeral sandboxes of the building tenant (counted in its quota,
//! with the build's network and egress rules); what they change is read
//! host-side from their upper dir through `dwell-hostfs` and becomes a
//! layer. Everything else (COPY, ADD, metadata) is done host-side without
//! a sandbox. A step whose cache key is known reuses its layer.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::SizeArg;
use crate::Controller;
use dwell_runtime::NetworkMode;

/// What to build.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BuildRequest {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The build context: a directory on the daemon's host, owned by the
    /// daemon (the build only reads it, never following a symlink).
    pub context_dir: PathBuf,
    /// Names to store the result under (`mytool:1`); at least one.
    pub tags: Vec<String>,
    /// `--build-arg K=V`.
    pub build_args: BTreeMap<String, String>,
    /// Build up to this stage (default: the last).
    pub target: Option<String>,
    /// Isolation runtime of the RUN sandboxes (`namespace`, `gvisor`).
    pub isolation: Option<String>,
    /// Ignore the cache (results are still recorded in it).
    pub no_cache: bool,
    /// Network of the RUN sandboxes: none (the default) or NAT.
    pub network: Option<NetworkMode>,
    /// Egress allow list of a NAT build.
    pub allow_out: Option<Vec<String>>,
    /// Egress deny list of a NAT build.
    pub deny_out: Option<Vec<String>>,
    /// Disk size of the RUN sandboxes (also the most bytes one layer
    /// holds); the daemon's default when unset.
    pub disk: Option<SizeArg>,
    /// Memory of the RUN sandboxes.
    pub memory: Option<SizeArg>,
    /// Seconds the whole build may take (the daemon's default when unset,
    /// at most [`MAX_BUILD_TIMEOUT`]); past it the running step is killed
    /// and the build fails.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// The longest deadline a build may ask for.
pub const MAX_BUILD_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Limits on builds, set by the daemon (`serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildLimits {
    /// Builds one tenant may run at once (more are refused with a 409).
    pub per_tenant: usize,
    /// The deadline of a build that gives none.
    pub timeout: Duration,
}

impl Default for BuildLimits {
    fn default() -> Self {
        BuildLimits {
            per_tenant: 4,
            timeout: Duration::from_secs(3600),
        }
    }
}

/// Builds running per tenant, and the limits.
#[derive(Debug, Default)]
pub(crate) struct BuildSlots {
    pub(crate) limits: BuildLimits,
    pub(crate) running: HashMap<String, usize>,
}

/// One running build of a tenant: its slot is freed on drop (also when
/// the build task panics or is cancelled).
pub struct BuildPermit {
    ctl: Controller,
    tenant: String,
}

impl Drop for BuildPermit {
    fn drop(&mut self) {
        let mut b = self.ctl.build_slots();
        if let Some(n) = b.running.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                b.running.remove(&self.tenant);
            }
        }
    }
}

impl Controller {
    fn build_slots(&self) -> std::sync::MutexGuard<'_, BuildSlots> {
        self.inner.builds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The daemon's build limits.
    pub fn build_limits(&self) -> BuildLimits {
        self.build_slots().limits
    }

    /// Set the daemon's build limits (`serve --max-builds-per-tenant`,
    /// `--build-timeout`).
    pub fn set_build_limits(&self, limits: BuildLimits) {
        self.build_slots().limits = limits;
    }

    /// Take one of `tenant`'s build slots, or fail with a 409 when it runs
    /// as many builds as allowed.
    pub fn build_permit(&self, tenant: &str) -> Result<BuildPermit, Error> {
        let mut b = self.build_slots();
        let max = b.limits.per_tenant;
        let n = b.running.entry(tenant.to_string()).or_default();
        if *n >= max {
            return Err(Error::Conflict(format!(
                "tenant {tenant} already runs {max} builds, the most allowed at once; wait for \
                 one to finish (or cancel one) and retry"
            )));
        }
        *n += 1;
        Ok(BuildPermit {
            ctl: self.clone(),
            tenant: tenant.to_string(),
        })
    }
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Progress of a build, in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BuildEvent {
    /// Step `index` (1-based) of `count` starts.
    Step {
        index: usize,
        count: usize,
        text: String,
    },
    /// The step's result came from the cache (no sandbox started).
    Cached { index: usize },
    /// Output of a RUN step (lossy UTF-8).
    Output {
        index: usize,
        stream: Stream,
        text: String,
    },
    /// Something the user should know (entries left out of a layer...).
    Warning { index: usize, message: String },
    /// The step finished; `layer` is its blob digest when it made one.
    StepDone {
        index: usize,
        layer: Option<String>,
        duration_ms: u64,
    },
    /// The build failed (sent by the API when `build` returns an error).
    Error {
        code: String,
        message: String,
        step: Option<usize>,
        exit_code: Option<i32>,
    },
    /// The build finished (sent by the API after `build` returns).
    Done {
        digest: String,
        tags: Vec<String>,
        steps: usize,
        cached: usize,
    },
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The image as stored under the first tag.
    pub image: dwell_storage::Image,
    /// Its id, `sha256:` + the config's digest.
    pub digest: String,
    /// Steps run or reused.
    pub steps: usize,
    /// Steps whose result came from the cache.
    pub cached: usize,
}

/// Map an engine error of step `step` to a control error.
pub(crate) fn step_error(step: usize, e: dwell_build::BuildError) -> Error {
    use dwell_build::BuildError as B;
    let (status, message) = match &e {
        B::Parse(_) | B::Invalid(_) => (400, e.to_string()),
        B::Refused(_) => (422, e.to_string()),
        B::TooLarge(_) => (413, e.to_string()),
        B::Io { .. } | B::Internal(_) => {
            return Error::Internal(format!("build step {step}: {e}"));
        }
    };
    Error::BuildFailed {
        step,
        exit_code: None,
        message: format!("step {step}: {message}"),
        status,
    }
}
