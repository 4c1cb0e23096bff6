//! The HTTP contract of dwell's REST API: every request and response body,
//! the error body and its codes, with their OpenAPI schemas.
//!
//! The daemon (`dwell-api`) maps the control plane's types into these at
//! its edge and the CLI decodes these, so neither side depends on the
//! other's internals and the OpenAPI document is generated from the very
//! types on the wire. The JSON shapes are stable: field names and enum
//! spellings here are what external clients rely on.

pub mod builds;
pub mod console;
pub mod error;
pub mod exec;
pub mod files;
pub mod images;
pub mod networks;
pub mod nodes;
pub mod ports;
pub mod query;
pub mod sandbox;
pub mod service;
pub mod snapshots;
pub mod ssh_keys;
pub mod tenants;
pub mod volumes;

pub use error::{ErrorBody, ErrorDetail};
pub use exec::{ExecCall, ExecRequest, ExecResult, ExitReport, ProcessInfo};
pub use files::{FileInfo, FileKind};
pub use images::Image;
pub use networks::{CreateNetwork, Network, NetworkAttachment, NetworkMember};
pub use ports::{PortExpose, PortExposure};
pub use sandbox::{CreateRequest, Mode, Sandbox, SandboxSpec, State};
pub use snapshots::Snapshot;
pub use volumes::{CreateVolume, NamedVolume, ResizeVolume, VolumeMount};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/info`: who answers and for whom.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Info {
    pub version: String,
    /// The daemon's default isolation runtime (`ns` or `gvisor`).
    pub runtime: String,
    /// The tenant the request acts for.
    pub tenant: String,
}

/// The header with which an admin acts for another tenant: the request runs
/// as that tenant's own (non-admin) key would.
pub const ACT_FOR_HEADER: &str = "x-dwell-tenant";

/// Whether `Accept-Encoding` values (every header line) accept gzip: named,
/// or `*`, and not with `q=0`. The daemon gzips the web console's files
/// and large JSON answers for such clients.
pub fn accepts_gzip<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    values.into_iter().flat_map(|v| v.split(',')).any(|enc| {
        let mut parts = enc.split(';');
        let name = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn gzip_is_accepted_only_when_named_without_q_zero() {
        use super::accepts_gzip;
        assert!(!accepts_gzip([]));
        assert!(accepts_gzip(["br, gzip;q=0.8"]));
        assert!(accepts_gzip(["deflate", "GZIP"]));
        assert!(accepts_gzip(["*"]));
        assert!(!accepts_gzip(["gzip;q=0, br"]));
        assert!(!accepts_gzip(["gzip; q=0.000"]));
        assert!(!accepts_gzip(["identity"]));
    }
}
