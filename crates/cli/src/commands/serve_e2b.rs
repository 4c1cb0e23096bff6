//! The E2B-compatible listeners of `dwell serve`: `--e2b-listen` serves the
//! control plane (`dwell-e2b`, the SDKs' `E2B_API_URL`) and
//! `--e2b-sandbox-listen` the envd data plane of every sandbox
//! (`dwell-envd`, the SDKs' `E2B_SANDBOX_URL`). Both are plain HTTP/1.1.
//!
//! Both are served like the REST listener, under the daemon's connection
//! cap and header timeout (`listener.rs`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use dwell_control::Controller;
use tokio::task::JoinSet;

use crate::cli::ServeArgs;
use crate::commands::listener::{bind, serve_http, Limits};
use crate::commands::serve::ensure_admin_key;

/// Bind what the flags ask for and serve it on `tasks`.
pub async fn spawn(
    a: &ServeArgs,
    ctl: &Controller,
    data_dir: &Path,
    limits: Limits,
    tasks: &mut JoinSet<std::io::Result<()>>,
) -> Result<()> {
    if let Some(addr) = &a.e2b_listen {
        // E2B clients need a key: make the admin key if there is none yet.
        ensure_admin_key(ctl, data_dir)?;
        let tcp = bind(addr, "--e2b-listen").await?;
        tracing::info!("E2B API on http://{addr} (E2B_API_URL; E2B_API_KEY is a dwell API key)");
        let app = dwell_e2b::router(
            ctl.clone(),
            dwell_e2b::Options {
                domain: a.e2b_domain.clone(),
            },
        );
        tasks.spawn(serve_http(tcp, app, "--e2b-listen", limits));
    }
    if let Some(addr) = &a.e2b_sandbox_listen {
        let tcp = bind(addr, "--e2b-sandbox-listen").await?;
        tracing::info!("E2B sandbox API (envd) on http://{addr} (E2B_SANDBOX_URL)");
        let app = dwell_envd::router_with(
            Arc::new(ctl.clone()),
            dwell_envd::Options {
                signed_url_lifetime: signed_url_lifetime(&a.signed_url_lifetime)?,
            },
        );
        tasks.spawn(serve_http(tcp, app, "--e2b-sandbox-listen", limits));
    }
    Ok(())
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
