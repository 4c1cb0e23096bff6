//! `/v1/images`: root filesystem images, shared by all tenants.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A root filesystem image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Image {
    /// The image's familiar reference (`python:3.12`, `host`).
    pub name: String,
    /// The normalized reference it is stored under
    /// (`docker.io/library/python:3.12`); null for `host` and images stored
    /// before references.
    #[serde(default)]
    pub reference: Option<String>,
    /// Digest of its manifest (`sha256:...`), as a registry names it.
    #[serde(default)]
    pub digest: Option<String>,
    /// Content digest, `sha256:<hex>` (the config digest for imports).
    pub id: String,
    /// Overlay lower directories on the daemon's host, topmost first.
    pub layers: Vec<String>,
    /// Host directories overlaid individually at the same path inside
    /// (e.g. `/usr`); empty for imported images.
    pub host_dirs: Vec<String>,
    /// When the image was built or imported, seconds since the Unix epoch.
    pub created_at: u64,
    /// Disk space of the layers (host directories not counted).
    pub size_bytes: u64,
    /// Where it came from, e.g. `oci-layout:/path`.
    pub source: String,
    /// Environment from the image config (`KEY=value`).
    pub env: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// Labels from the image config.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Exposed ports from the image config (`8080/tcp`).
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    /// Health check from the image config.
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
    /// Signal that stops the start command (`SIGTERM` when unset).
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// A health check: `["CMD", arg...]` or `["CMD-SHELL", "command"]`, with
/// its timing in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Healthcheck {
    pub test: Vec<String>,
    #[serde(default)]
    pub interval_ms: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub start_period_ms: Option<u64>,
    #[serde(default)]
    pub retries: Option<u32>,
}

/// `POST /v1/images`: import an OCI layout dir or `docker save` tarball
/// that is on the daemon's host (admin).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ImportBody {
    pub name: String,
    /// A path on the daemon's host.
    pub path: String,
}

/// `DELETE /v1/images?ref=`: the image to act on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImageRef {
    /// Image reference (`python:3.12`, `registry.local:5000/team/app:1`,
    /// `app@sha256:...`).
    pub r#ref: String,
}

/// `GET /v1/images/export`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Image reference.
    pub r#ref: String,
    /// `oci` (an OCI image layout, the default) or `docker` (the same plus
    /// `docker save`'s `manifest.json`).
    #[serde(default)]
    pub format: Option<String>,
}

/// `POST /v1/images/pull`: pull an image from its registry. The answer is
/// a stream of [`PullEvent`]s, one JSON object a line
/// (`application/x-ndjson`), ending with `done` or `error`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct PullBody {
    /// Image reference (`python:3.12`, `registry.local:5000/team/app:1`,
    /// `app@sha256:...`).
    pub reference: String,
    /// Only pull when no image this tenant may use is stored under the
    /// reference (what `create` does).
    #[serde(default)]
    pub if_missing: bool,
}

/// One layer of a pull.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct PullLayer {
    pub digest: String,
    pub size: u64,
    /// Already in the store: not downloaded.
    pub present: bool,
}

/// A step of a pull.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// The manifest was fetched: what will be downloaded.
    Resolved {
        /// Where it comes from (`registry.local:5000/team/app`, a mirror's
        /// host when a mirror served it).
        source: String,
        /// The manifest's digest.
        digest: String,
        layers: Vec<PullLayer>,
    },
    /// Bytes of a layer downloaded so far (including bytes a resumed pull
    /// had already).
    Progress {
        digest: String,
        done: u64,
        total: u64,
    },
    /// A layer is downloaded and verified.
    Downloaded { digest: String },
    /// Layers are being extracted.
    Extracting,
    /// The image is stored.
    Done {
        image: Box<Image>,
        /// Bytes fetched from the registry by this pull (layers resumed
        /// from an earlier, interrupted pull count only their rest).
        fetched_bytes: u64,
        /// Layers that were already in the store.
        reused_layers: usize,
        /// Layers taken from the object store, shared by another daemon.
        #[serde(default)]
        shared_layers: usize,
    },
    /// The pull failed.
    Error {
        code: String,
        message: String,
        /// HTTP status the same failure has as a plain answer.
        status: u16,
    },
}

/// `POST /v1/registries/login`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LoginBody {
    /// Registry host (`registry.local:5000`, `docker.io`).
    pub registry: String,
    pub username: String,
    /// Password or token; stored sealed, never shown.
    pub password: String,
}

/// A tenant's stored registry login (the password is never shown).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct RegistryLogin {
    pub registry: String,
    pub username: String,
    /// Unix ms.
    pub created_at: i64,
}

/// `DELETE /v1/registries/login?registry=`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RegistryQuery {
    /// Registry host.
    pub registry: String,
}
