//! dwell-proxy: the daemon's port proxy (`dwell serve --proxy-listen ADDR
//! --domain D`).
//!
//! A request for host `PORT-ID.D` (or `PORT-NAME.D` for the `default`
//! tenant's sandbox NAME, or `PORT-NAME--TENANT.D`; see
//! [`dwell_control::ports`]) is served from `127.0.0.1:PORT` inside that
//! sandbox, reached through its agent ([`dwell_proto::AgentClient::connect_tcp`]):
//! so it works for every runtime and for sandboxes without a network.
//! Asking the controller for the agent wakes a paused sandbox whose
//! policy allows it.
//!
//! * Plain HTTP/1.1 with keep-alive: one tunnel per client connection and
//!   sandbox port, kept while the server keeps its connection.
//! * WebSocket and other `Upgrade`s: the handshake is passed on, then the
//!   bytes are piped both ways.
//! * Raw TCP: `CONNECT PORT-ID.D:ANY` answers 200 and pipes bytes.
//! * Private ports need their token (`X-Dwell-Token` or E2B's
//!   `e2b-traffic-access-token` header), or the cookie a one-time link
//!   (`?dwell_token=...`) sets; wrong or missing: 401. Unknown hosts and
//!   sandboxes: 404 without saying whether they exist; a port that is not
//!   exposed: 404 naming it; nothing listening: 502 naming sandbox and port.
//! * Bounded: connections at once, header size and time, tunnels per
//!   sandbox, idle time of tunnels and of waits for an answer.
//! * With an envd router (the E2B data plane), `49983-ID.D` is served by it,
//!   as the E2B SDK expects when the E2B domain is the proxy's.

mod handler;
mod pages;
mod pipe;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dwell_control::Controller;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

pub use pipe::pipe;

/// Errors of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response of the proxy.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The header that carries a private port's token.
pub const TOKEN_HEADER: &str = "x-dwell-token";
/// E2B's header for a sandbox's traffic access token.
pub const E2B_TOKEN_HEADER: &str = "e2b-traffic-access-token";
/// The query parameter of one-time login links.
pub const LOGIN_PARAM: &str = "dwell_token";
/// The cookie a login link sets (host-only: one per port's host name).
pub const COOKIE: &str = "dwell_port";
/// The E2B envd port, served by the envd router when one is given.
pub const ENVD_PORT: u16 = 49983;

/// How the proxy serves.
#[derive(Clone)]
pub struct Options {
    /// The domain of the host names (`PORT-ID.DOMAIN`).
    pub domain: String,
    /// Client connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Tunnels (kept HTTP connections, WebSockets, CONNECTs) open at once
    /// to one sandbox; more get 503.
    pub per_sandbox: usize,
    /// Time for a request's headers to arrive (and the idle time of a
    /// kept-alive client connection between requests).
    pub header_timeout: Duration,
    /// A WebSocket or CONNECT tunnel with no byte moving for this long is
    /// closed; also the longest wait for a server's answer.
    pub idle_timeout: Duration,
    /// The largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Serves `49983-ID.DOMAIN` (the E2B envd data plane), when set.
    pub envd: Option<axum::Router>,
}

impl Options {
    /// The defaults for `domain`.
    pub fn new(domain: impl Into<String>) -> Options {
        Options {
            domain: domain.into(),
            max_connections: 1024,
            per_sandbox: 128,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            max_header_bytes: 64 * 1024,
            envd: None,
        }
    }
}

/// Tunnels open per sandbox.
#[derive(Default)]
struct Limiter {
    per: usize,
    map: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Limiter {
    fn acquire(&self, sandbox: &str) -> Option<OwnedSemaphorePermit> {
        let sem = {
            let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if m.len() > 4096 {
                // Forget sandboxes with nothing open.
                let per = self.per;
                m.retain(|_, s| s.available_permits() < per);
            }
            m.entry(sandbox.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per)))
                .clone()
        };
        sem.try_acquire_owned().ok()
    }
}

/// What every request handler shares.
pub(crate) struct Shared {
    pub(crate) ctl: Controller,
    pub(crate) opts: Options,
    limiter: Limiter,
}

impl Shared {
    pub(crate) fn permit(&self, sandbox: &str) -> Option<OwnedSemaphorePermit> {
        self.limiter.acquire(sandbox)
    }
}

/// Serves the proxy on `tcp` until `stop` completes; open connections
/// then get `drain` to finish.
pub async fn serve(
    tcp: TcpListener,
    ctl: Controller,
    opts: Options,
    stop: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        limiter: Limiter {
            per: opts.per_sandbox.max(1),
            map: Mutex::default(),
        },
        ctl,
        opts,
    });
    let slots = Arc::new(Semaphore::new(shared.opts.max_connections.max(1)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            r = tcp.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("--proxy-listen: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        while conns.try_join_next().is_some() {}
        let shared = shared.clone();
        let mut stop_rx = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let conn_state = Arc::new(handler::ConnState::new(peer));
            let svc = {
                let shared = shared.clone();
                hyper::service::service_fn(move |req| {
                    handler::handle(shared.clone(), conn_state.clone(), req)
                })
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(shared.opts.header_timeout)
                .max_buf_size(shared.opts.max_header_bytes.max(8192))
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
        tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        conns.abort_all();
    }
    Ok(())
}
