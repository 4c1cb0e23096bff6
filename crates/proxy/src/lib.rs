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
//!   (`?dwell_token=...`) sets; wrong or missing: 401 by id, and by name the
//!   same 404 as unknown hosts, unknown sandboxes and ports not exposed (so
//!   nothing says which names exist); nothing listening: 502 naming sandbox
//!   and port. Cookie-only requests that are not GET/HEAD/OPTIONS or are
//!   upgrades must come from the host's own origin (403 otherwise), since
//!   every preview host is "same-site" with every other. A server's
//!   `Set-Cookie` for the proxy's cookie is dropped.
//! * Bounded: connections at once and per client address (IPv6: per /64),
//!   header size and time, tunnels per sandbox, idle time of tunnels and of
//!   waits for an answer.
//! * With an envd router (the E2B data plane), `49983-ID.D` is served by it,
//!   as the E2B SDK expects when the E2B domain is the proxy's; so is
//!   `sandbox.D` (E2B's host for its own domains), which names the sandbox
//!   and port in the `E2b-Sandbox-Id` and `E2b-Sandbox-Port` headers: port
//!   49983 is envd, any other the exposed port under the rules above (by
//!   token header only: no cookies or login links on a shared host name).
//! * With an E2B control-plane router, `api.D` is served by it (the SDKs'
//!   `https://api.{domain}` when `E2B_API_URL` is unset).
//! * TLS when given a certificate ([`tls`]): the handshake has
//!   [`Options::handshake_timeout`]; everything else is the same over it.
//!   A connection over its address's limit gives its connection slot back
//!   before its handshake and 503, which run under a small cap of their
//!   own for at most 2 s (beyond the cap it is just closed).
//! * In a cluster ([`Options::forward`]), a request for a sandbox another
//!   node owns goes, whole, to that node's proxy over the node channel
//!   (plain requests, upgrades, and a `CONNECT` as an upgrade to
//!   [`CONNECT_UPGRADE`]); that node serves it with [`NodeSide`] and does
//!   every check itself.
//! * A process stream of a sandbox that goes away resets the client's
//!   connection (beneath TLS, if any), as on the daemon's own envd
//!   listener: the E2B SDKs read that as "the sandbox was killed"
//!   ([`dwell_envd::ConnectionReset`]).

mod handler;
mod pages;
mod pipe;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
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
/// Set by a node forwarding a request to the owner's proxy: the client's
/// address (for `X-Forwarded-For`).
pub const CLIENT_HEADER: &str = "x-dwell-client";
/// Set with [`CLIENT_HEADER`]: `1` when the client came over TLS.
pub const CLIENT_TLS_HEADER: &str = "x-dwell-client-tls";
/// The `Upgrade` protocol a forwarded `CONNECT` asks for.
pub const CONNECT_UPGRADE: &str = "dwell-connect";

/// How the proxy serves.
#[derive(Clone)]
pub struct Options {
    /// The domain of the host names (`PORT-ID.DOMAIN`).
    pub domain: String,
    /// Client connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Client connections served at once from one address (IPv4) or /64
    /// (IPv6); more get 503 and are closed, so one client cannot take
    /// every slot.
    pub max_per_ip: usize,
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
    /// Serves `49983-ID.DOMAIN` and `sandbox.DOMAIN` (the E2B envd data
    /// plane), when set.
    pub envd: Option<axum::Router>,
    /// Serves `api.DOMAIN` (the E2B control plane), when set.
    pub api: Option<axum::Router>,
    /// Serve over TLS with this configuration ([`tls::server_config`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// In a cluster: how requests for other nodes' sandboxes reach them.
    pub forward: Option<dwell_api::forward::ForwardFn>,
}

impl Options {
    /// The defaults for `domain`.
    pub fn new(domain: impl Into<String>) -> Options {
        Options {
            domain: domain.into(),
            max_connections: 1024,
            max_per_ip: 64,
            per_sandbox: 128,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            max_header_bytes: 64 * 1024,
            envd: None,
            api: None,
            tls: None,
            handshake_timeout: Duration::from_secs(10),
            forward: None,
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

/// Client connections open per source address.
struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted client connection; uncounted when dropped.
struct IpSlot {
    per: Arc<PerIp>,
    key: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.per.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// The address a client is counted under: IPv4 as is (also when mapped
/// into IPv6), IPv6 by its /64 (one host usually has a whole /64).
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl PerIp {
    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let key = ip_key(ip);
        let mut m = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            per: self.clone(),
            key,
        })
    }
}

/// The answer to a connection over its address's limit.
const PER_IP_REFUSAL: &str = "503 Too Many Connections\nthis client address already has the \
most connections open that the port proxy serves to one address (--proxy-max-per-ip); close some \
and retry\n";

/// TLS connections over their address's limit answered at once (each
/// needs a handshake before its 503); more are closed without an answer.
const MAX_TLS_REFUSALS: usize = 16;
/// Longest the handshake and 503 of a refused TLS connection may take.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

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
    Proxy::new(ctl, opts).serve(tcp, stop, drain).await
}

/// The proxy: served on its listener ([`Proxy::serve`]) and, in a
/// cluster, to other nodes ([`Proxy::node_side`]), with one set of limits.
pub struct Proxy {
    shared: Arc<Shared>,
}

/// The proxy as a node's listener serves it to the other nodes of its
/// cluster: requests they forwarded for this node's sandboxes.
#[derive(Clone)]
pub struct NodeSide {
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn new(ctl: Controller, opts: Options) -> Proxy {
        Proxy {
            shared: Arc::new(Shared {
                limiter: Limiter {
                    per: opts.per_sandbox.max(1),
                    map: Mutex::default(),
                },
                ctl,
                opts,
            }),
        }
    }

    /// What the node listener serves for `x-dwell-plane: proxy`.
    pub fn node_side(&self) -> NodeSide {
        NodeSide {
            shared: self.shared.clone(),
        }
    }

    /// Serves the proxy on `tcp` until `stop` completes; open connections
    /// then get `drain` to finish.
    pub async fn serve(
        self,
        tcp: TcpListener,
        stop: impl Future<Output = ()>,
        drain: Duration,
    ) -> std::io::Result<()> {
        serve_shared(self.shared, tcp, stop, drain).await
    }
}

impl NodeSide {
    /// Serves one request another node forwarded ([`Options::forward`]):
    /// as if its client had come here, from the address in
    /// [`CLIENT_HEADER`]; never forwarded again.
    pub async fn serve(&self, mut req: axum::extract::Request) -> axum::response::Response {
        let h = req.headers_mut();
        let ip = h
            .get(CLIENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<IpAddr>().ok())
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let tls = h.get(CLIENT_TLS_HEADER).is_some_and(|v| v == "1");
        h.remove(CLIENT_HEADER);
        h.remove(CLIENT_TLS_HEADER);
        let conn = Arc::new(handler::ConnState::forwarded(
            std::net::SocketAddr::new(ip, 0),
            tls,
            dwell_envd::ConnectionReset::default(),
        ));
        let Ok(resp) = handler::handle(self.shared.clone(), conn, req).await;
        resp.map(axum::body::Body::new)
    }
}

async fn serve_shared(
    shared: Arc<Shared>,
    tcp: TcpListener,
    stop: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(shared.opts.max_connections.max(1)));
    let per_ip = Arc::new(PerIp {
        max: shared.opts.max_per_ip.max(1),
        open: Mutex::default(),
    });
    let refusals = Arc::new(Semaphore::new(MAX_TLS_REFUSALS));
    let tls = shared.opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
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
        let Some(ip_slot) = per_ip.acquire(peer.ip()) else {
            tracing::debug!("port proxy: {peer} is over --proxy-max-per-ip");
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{PER_IP_REFUSAL}",
                PER_IP_REFUSAL.len()
            );
            match &tls {
                // Answer without waiting (what does not fit in the socket
                // buffer is not sent) and close.
                None => {
                    let _ = stream.try_write(head.as_bytes());
                }
                // Over TLS the answer needs a handshake first (else the
                // client sees only a closed connection). It gives its
                // connection slot back at once (an address opening idle
                // sockets must not take the slots of everyone else) and
                // is answered under its own small cap, for a short time;
                // beyond the cap it is closed without an answer.
                Some(acceptor) => {
                    drop(permit);
                    let Ok(refusing) = refusals.clone().try_acquire_owned() else {
                        tracing::debug!(
                            "port proxy: closing {peer} without an answer: \
                             {MAX_TLS_REFUSALS} refusals are already being answered"
                        );
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let limit = shared.opts.handshake_timeout.min(REFUSAL_TIME);
                    conns.spawn(async move {
                        let _refusing = refusing;
                        let _ = tokio::time::timeout(limit, async move {
                            use tokio::io::AsyncWriteExt;
                            let mut s = acceptor.accept(stream).await?;
                            s.write_all(head.as_bytes()).await?;
                            s.shutdown().await
                        })
                        .await;
                    });
                }
            }
            continue;
        };
        let shared = shared.clone();
        let mut stop_rx = stop_rx.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let _permit = permit;
            let _ip_slot = ip_slot;
            // Beneath TLS, if any: an envd stream of a sandbox that went
            // away resets the client's TCP connection.
            let reset = dwell_envd::ConnectionReset::default();
            let stream = dwell_envd::ResettableTcp::new(stream, reset.clone());
            let Some(acceptor) = tls else {
                serve_conn(shared, peer, false, reset, stream, stop_rx).await;
                return;
            };
            let handshake = tokio::time::timeout(
                shared.opts.handshake_timeout,
                acceptor.accept(stream),
            );
            let stream = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!("port proxy: TLS handshake with {peer} failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("port proxy: {peer} did not finish the TLS handshake in time");
                        return;
                    }
                },
                _ = stop_rx.wait_for(|s| *s) => return,
            };
            serve_conn(shared, peer, true, reset, stream, stop_rx).await;
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

/// Serves HTTP/1.1 on one client connection (plain or TLS) until it ends;
/// on shutdown it finishes the request in flight. `reset` is the
/// connection's, handed to the requests the envd router serves.
async fn serve_conn<S>(
    shared: Arc<Shared>,
    peer: std::net::SocketAddr,
    tls: bool,
    reset: dwell_envd::ConnectionReset,
    stream: S,
    mut stop_rx: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn_state = Arc::new(handler::ConnState::new(peer, tls, reset));
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
}

/// The node listener runs [`NodeSide::serve`] on any thread: its future
/// must be `Send` with axum's body (which is not `Sync`), checked here.
fn _node_side_is_send(n: NodeSide, r: axum::extract::Request) {
    fn is_send<T: Send>(_: T) {}
    is_send(async move { n.serve(r).await });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_address() {
        let per = Arc::new(PerIp {
            max: 2,
            open: Mutex::default(),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let s1 = per.acquire(a).unwrap();
        let _s2 = per.acquire("::ffff:10.0.0.1".parse().unwrap()).unwrap();
        assert!(per.acquire(a).is_none(), "a third from one address");
        assert!(per.acquire("10.0.0.2".parse().unwrap()).is_some());
        drop(s1);
        assert!(per.acquire(a).is_some(), "a slot is given back");
        let _v1 = per.acquire("2001:db8::1".parse().unwrap()).unwrap();
        let _v2 = per.acquire("2001:db8::2".parse().unwrap()).unwrap();
        assert!(
            per.acquire("2001:db8::ffff:1".parse().unwrap()).is_none(),
            "one /64"
        );
        assert!(per.acquire("2001:db8:0:1::1".parse().unwrap()).is_some());
    }
}
