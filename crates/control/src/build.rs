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

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::SizeArg;
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
