//! `POST /v1/builds`: build an image from a Dockerfile. The request body is
//! the build context as a tar (optionally gzip-compressed); the answer is a
//! stream of [`BuildEvent`]s, one JSON object per line (NDJSON), ending
//! with `done` or `error`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The query of `POST /v1/builds`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BuildQuery {
    /// Tags, comma-separated (`mytool:1,mytool:latest`); at least one.
    pub t: String,
    /// The Dockerfile's path inside the context (default `Dockerfile`).
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// Build arguments as a JSON object (`{"VERSION":"1.2"}`).
    #[serde(default)]
    pub build_args: Option<String>,
    /// Build up to this stage.
    #[serde(default)]
    pub target: Option<String>,
    /// Isolation runtime of the RUN steps (`namespace` or `gvisor`).
    #[serde(default)]
    pub isolation: Option<String>,
    /// Ignore the step cache.
    #[serde(default)]
    pub no_cache: bool,
    /// Give RUN steps outbound network (NAT); none without it.
    #[serde(default)]
    pub net: bool,
    /// Egress allow list of the RUN steps, comma-separated (implies `net`).
    #[serde(default)]
    pub allow_out: Option<String>,
    /// Egress deny list of a networked build, comma-separated.
    #[serde(default)]
    pub deny_out: Option<String>,
    /// Disk size of the RUN sandboxes (`2G`); also the most one layer holds.
    #[serde(default)]
    pub disk: Option<String>,
    /// Memory of the RUN sandboxes (`1G`).
    #[serde(default)]
    pub memory: Option<String>,
    /// Seconds the whole build may take (the daemon's default, 1 h unless
    /// set by `serve --build-timeout`, when unset; at most 24 h). Past it
    /// the running step is killed and the build fails.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// One line of a build's progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BuildEvent {
    /// Step `index` (1-based) of `count` starts.
    Step {
        index: usize,
        count: usize,
        text: String,
    },
    /// The step's result came from the cache (no sandbox started).
    Cached {
        index: usize,
    },
    /// Output of a RUN step.
    Output {
        index: usize,
        stream: OutputStream,
        text: String,
    },
    Warning {
        index: usize,
        message: String,
    },
    /// The step finished; `layer` is the digest of the layer it made.
    StepDone {
        index: usize,
        layer: Option<String>,
        duration_ms: u64,
    },
    /// The build failed; `code` and the facts as in error bodies.
    Error {
        code: String,
        message: String,
        step: Option<usize>,
        exit_code: Option<i32>,
    },
    /// The image was stored under `tags`.
    Done {
        digest: String,
        tags: Vec<String>,
        steps: usize,
        cached: usize,
    },
}

/// Parse the `build_args` JSON of a [`BuildQuery`].
pub fn parse_build_args(s: &str) -> Result<BTreeMap<String, String>, String> {
    serde_json::from_str(s).map_err(|e| {
        format!("build_args must be a JSON object of strings, e.g. {{\"V\":\"1\"}}: {e}")
    })
}
