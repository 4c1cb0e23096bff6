//! The E2B-compatible listeners of `dwell serve`: `--e2b-listen` serves the
//! control plane (`dwell-e2b`, the SDKs' `E2B_API_URL`) and
//! `--e2b-sandbox-listen` the envd data plane of every sandbox
//! (`dwell-envd`, the SDKs' `E2B_SANDBOX_URL`). Both are plain HTTP/1.1.
//!
//! Both are served like the REST listener, under the daemon's connection
//! cap and header timeout (`listener.rs`). The same routers (one state
//! each) are also served by the port proxy (`serve_proxy.rs`) for
//! `api.DOMAIN`, `sandbox.DOMAIN` and `49983-ID.DOMAIN`, over TLS when it
//! has a certificate.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use dwell_control::Controller;
use tokio::task::JoinSet;

use crate::cli::ServeArgs;
use crate::commands::listener::{bind, serve_http, Limits};
use crate::commands::serve::ensure_admin_key;

/// The E2B routers of the daemon, for the port proxy too.
#[derive(Default)]
pub struct E2bRouters {
    /// The control plane, with `--e2b-listen`.
    pub api: Option<axum::Router>,
    /// The envd data plane, with `--e2b-sandbox-listen`, or `--e2b-listen`
    /// and `--proxy-listen`.
    pub envd: Option<axum::Router>,
    /// In a cluster, what the node listener serves other nodes for the
    /// control plane and envd (`serve_planes.rs`).
    pub node_api: Option<axum::Router>,
    pub node_envd: Option<axum::Router>,
}

/// Bind what the flags ask for and serve it on `tasks`; the routers
/// made are returned for the port proxy.
pub async fn spawn(
    a: &ServeArgs,
    ctl: &Controller,
    data_dir: &Path,
    limits: Limits,
    forward: &Option<dwell_api::forward::ForwardFn>,
    tasks: &mut JoinSet<std::io::Result<()>>,
) -> Result<E2bRouters> {
    let mut routers = E2bRouters::default();
    // envd for its listener, or for the proxy when E2B clients use it.
    if a.e2b_sandbox_listen.is_some() || (a.e2b_listen.is_some() && a.proxy_listen.is_some()) {
        let opts = dwell_envd::Options {
            signed_url_lifetime: signed_url_lifetime(&a.signed_url_lifetime)?,
        };
        let ctl = Arc::new(ctl.clone());
        match forward {
            None => routers.envd = Some(dwell_envd::router_with(ctl, opts)),
            Some(f) => {
                let (public, node) = dwell_envd::routers(ctl, opts, f.clone());
                routers.envd = Some(public);
                routers.node_envd = Some(node);
            }
        }
    }
    if let Some(addr) = &a.e2b_listen {
        // E2B clients need a key: make the admin key if there is none yet.
        ensure_admin_key(ctl, data_dir)?;
        let tcp = bind(addr, "--e2b-listen").await?;
        tracing::info!("E2B API on http://{addr} (E2B_API_URL; E2B_API_KEY is a dwell API key)");
        let made = dwell_e2b::routers(
            ctl.clone(),
            dwell_e2b::Options {
                domain: a.e2b_domain.clone(),
            },
            forward.clone(),
        );
        let app = made.public;
        routers.api = Some(app.clone());
        routers.node_api = forward.as_ref().map(|_| made.node);
        tasks.spawn(serve_http(tcp, app, "--e2b-listen", limits));
    }
    if let (Some(addr), Some(app)) = (&a.e2b_sandbox_listen, &routers.envd) {
        let tcp = bind(addr, "--e2b-sandbox-listen").await?;
        tracing::info!("E2B sandbox API (envd) on http://{addr} (E2B_SANDBOX_URL)");
        tasks.spawn(serve_http(tcp, app.clone(), "--e2b-sandbox-listen", limits));
    }
    Ok(routers)
}

/// `--signed-url-lifetime`, checked.
fn signed_url_lifetime(v: &str) -> Result<std::time::Duration> {
    let d = humantime::parse_duration(v).with_context(|| {
        format!("--signed-url-lifetime {v:?} is not a duration; write it like 1h or 15m")
    })?;
    if d.is_zero() {
        anyhow::bail!("--signed-url-lifetime 0s would refuse every signed URL without an expiration; give a duration like 1h");
    }
    Ok(d)
}
