//! The TCP listeners of `dwell serve` (the REST API's `--listen`, the E2B
//! control plane's `--e2b-listen` and the envd data plane's
//! `--e2b-sandbox-listen`) all serve HTTP/1.1 the same bounded way:
//!
//! * at most [`Limits::max_connections`] connections at once; more wait
//!   in the kernel's listen backlog (and are refused by the kernel when it
//!   is full) until one ends, so a client that opens sockets without end
//!   cannot make the daemon hold more;
//! * a connection whose request headers do not arrive within
//!   [`Limits::header_timeout`] (also the idle limit between keep-alive
//!   requests) is closed, so a client that never finishes its headers
//!   cannot hold a slot;
//! * on SIGTERM/SIGINT open requests run on for at most [`DRAIN`]: exec
//!   and envd streams (process output, watches) never end by themselves;
//! * a handler may have its connection reset rather than closed (see
//!   [`dwell_envd::ConnectionReset`], which every request carries, and
//!   [`dwell_envd::ResettableTcp`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use crate::commands::serve::shutdown;

/// Default connections a listener serves at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Default time for a request's headers to arrive (and for the next
/// request on a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open requests may run on after a shutdown signal.
pub const DRAIN: Duration = Duration::from_secs(10);

/// The bounds every TCP listener of the daemon serves under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_timeout: HEADER_TIMEOUT,
        }
    }
}

impl Limits {
    /// From `dwell serve`'s `--max-connections` and `--header-timeout`.
    pub fn from_flags(max_connections: usize, header_timeout: &str) -> Result<Limits> {
        if max_connections == 0 {
            anyhow::bail!("--max-connections 0 would serve nothing; give at least 1 (default {MAX_CONNECTIONS})");
        }
        let header_timeout = humantime::parse_duration(header_timeout).with_context(|| {
            format!("--header-timeout {header_timeout:?} is not a duration; write it like 30s")
        })?;
        if header_timeout.is_zero() {
            anyhow::bail!(
                "--header-timeout 0s would drop every connection; give a duration like 30s"
            );
        }
        Ok(Limits {
            max_connections,
            header_timeout,
        })
    }
}

/// Binds `addr` for the listener named by `flag` (for the error).
pub async fn bind(addr: &str, flag: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{flag}: cannot listen on {addr}; is the port free?"))
}

/// Serves `app` on `tcp` under `limits` until SIGTERM/SIGINT, then drains
/// for at most [`DRAIN`].
pub async fn serve_http(
    tcp: tokio::net::TcpListener,
    app: axum::Router,
    what: &'static str,
    limits: Limits,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
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
            let reset = dwell_envd::ConnectionReset::default();
            let stream = dwell_envd::ResettableTcp::new(stream, reset.clone());
            let app = hyper_util::service::TowerToHyperService::new(app);
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(reset.clone());
                    hyper::service::Service::call(&app, req)
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked() {
        let l = Limits::from_flags(8, "2s").unwrap();
        assert_eq!(
            (l.max_connections, l.header_timeout),
            (8, Duration::from_secs(2))
        );
        let e = Limits::from_flags(0, "2s").unwrap_err().to_string();
        assert!(e.contains("--max-connections"), "{e}");
        let e = Limits::from_flags(8, "soon").unwrap_err().to_string();
        assert!(e.contains("--header-timeout") && e.contains("30s"), "{e}");
        assert!(Limits::from_flags(8, "0s").is_err());
    }
}
