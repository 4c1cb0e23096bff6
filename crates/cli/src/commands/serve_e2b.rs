//! The E2B-compatible listeners of `dwell serve`: `--e2b-listen` serves the
//! control plane (`dwell-e2b`, the SDKs' `E2B_API_URL`) and
//! `--e2b-sandbox-listen` the envd data plane of every sandbox
//! (`dwell-envd`, the SDKs' `E2B_SANDBOX_URL`). Both are plain HTTP/1.1.
//!
//! Each listener takes at most [`MAX_CONNECTIONS`] connections at once
//! (more wait in the listen backlog), closes a connection whose request
//! headers do not arrive within [`HEADER_TIMEOUT`] (also the idle limit
//! between keep-alive requests), and on SIGTERM/SIGINT lets open requests
//! finish for at most [`DRAIN`]: envd streams (process output, watches)
//! never end by themselves.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use dwell_control::Controller;
use tokio::task::JoinSet;

use crate::cli::ServeArgs;
use crate::commands::serve::{ensure_admin_key, shutdown};

/// Bind what the flags ask for and serve it on `tasks`.
pub async fn spawn(
    a: &ServeArgs,
    ctl: &Controller,
    data_dir: &Path,
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
        tasks.spawn(serve_http(tcp, app, "--e2b-listen"));
    }
    if let Some(addr) = &a.e2b_sandbox_listen {
        let tcp = bind(addr, "--e2b-sandbox-listen").await?;
        tracing::info!("E2B sandbox API (envd) on http://{addr} (E2B_SANDBOX_URL)");
        let app = dwell_envd::router(Arc::new(ctl.clone()));
        tasks.spawn(serve_http(tcp, app, "--e2b-sandbox-listen"));
    }
    Ok(())
}

/// Connections a listener serves at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time for a request's headers to arrive (and for the next request on a
/// kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open requests may run on after a shutdown signal.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `tcp` until SIGTERM/SIGINT, then drains for at most
/// [`DRAIN`].
async fn serve_http(
    tcp: tokio::net::TcpListener,
    app: axum::Router,
    what: &'static str,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    let stop = shutdown();
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, _) = tokio::select! {
            _ = &mut stop => break,
            r = tcp.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!("{what}: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let app = app.clone();
        let mut stop_rx = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop_rx.wait_for(|s| *s) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(tcp);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::info!(
            "{what}: {} connections still open after {}s; closing them",
            conns.len(),
            DRAIN.as_secs()
        );
        conns.abort_all();
    }
    Ok(())
}

async fn bind(addr: &str, flag: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{flag}: cannot listen on {addr}; is the port free?"))
}
