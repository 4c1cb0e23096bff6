//! The node listener: serves a router to the other nodes of the cluster
//! only.
//!
//! Each accepted TCP connection must complete mutual TLS with a
//! certificate of this cluster within [`HANDSHAKE_TIMEOUT`]; anything else
//! (a plain HTTP client, a client without a certificate, a node of another
//! cluster) is closed at the TLS layer before any HTTP is read. A verified
//! connection is served HTTP/1.1 with keep-alive and upgrades, each request
//! carrying the peer's node name as a [`PeerNode`] extension.
//!
//! Handshakes in progress are capped, in all ([`MAX_HANDSHAKES`]) and per
//! peer address ([`MAX_HANDSHAKES_PER_IP`]; past either, new connections
//! are closed at once), and each has [`HANDSHAKE_TIMEOUT`], so a flood of
//! idle connections from one place cannot shut other nodes out. Connections get TCP_NODELAY and TCP keepalives, so a
//! peer that vanished without closing is noticed within about a minute.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::ClusterTls;

/// Time a connection has to complete the TLS handshake (nodes do it in
/// milliseconds).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// TLS handshakes in progress at once.
pub const MAX_HANDSHAKES: usize = 128;
/// TLS handshakes in progress at once from one IP address.
pub const MAX_HANDSHAKES_PER_IP: usize = 8;

/// Handshakes in progress by peer address.
#[derive(Default)]
struct PerIp(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One handshake slot of an address, given back when dropped.
struct IpSlot {
    table: Arc<PerIp>,
    ip: std::net::IpAddr,
}

impl PerIp {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<IpSlot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= MAX_HANDSHAKES_PER_IP {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}
/// A kept-alive connection with no request for this long is closed (and
/// the time a request's head has to arrive). Longer than the forwarder
/// keeps idle connections, so a node's forwarder closes first and never
/// sends on a connection this side is closing.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// On shutdown, the time requests in flight have to finish before their
/// connections are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The node name a request came from (put in request extensions by
/// [`serve_nodes`]; read from the peer's verified certificate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerNode(pub String);

/// TCP options of node-channel sockets: no Nagle delay (requests are small
/// and latency matters), keepalives to notice peers that vanished.
pub(crate) fn tune(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka);
}

/// Serves `router` to nodes only: each accepted TCP connection must
/// complete mutual TLS with a certificate of this cluster; HTTP/1.1 with
/// upgrades (WebSockets); returns when `shutdown` resolves, after the
/// requests in flight finished (at most [`SHUTDOWN_GRACE`]; connections
/// already upgraded are the router's and go on).
///
/// Errors accepting a connection (such as running out of file
/// descriptors) are logged and retried after a short pause, not returned.
pub async fn serve_nodes(
    listener: TcpListener,
    tls: Arc<ClusterTls>,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let per_ip = Arc::new(PerIp::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("node listener: cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    tracing::debug!(
                        "node listener: {MAX_HANDSHAKES} TLS handshakes in progress; closing the \
                         connection from {addr}"
                    );
                    continue;
                };
                let Some(ip_slot) = per_ip.take(addr.ip()) else {
                    tracing::debug!(
                        "node listener: {MAX_HANDSHAKES_PER_IP} TLS handshakes from {} in progress; \
                         closing the connection from {addr}",
                        addr.ip()
                    );
                    continue;
                };
                tune(&tcp);
                let acceptor = acceptor.clone();
                let router = router.clone();
                let stop = stop_rx.clone();
                conns.spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!("node listener: refused {addr}: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(
                                "node listener: refused {addr}: no TLS handshake within {HANDSHAKE_TIMEOUT:?}"
                            );
                            return;
                        }
                    };
                    drop(permit);
                    drop(ip_slot);
                    let peer = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                        Some(cert) => match crate::tls::node_name_of(cert) {
                            Ok(n) => n,
                            Err(e) => {
                                tracing::warn!("node listener: refused {addr}: {e}");
                                return;
                            }
                        },
                        // Cannot happen: the verifier requires a certificate.
                        None => return,
                    };
                    serve_connection(tls, PeerNode(peer), addr, router, stop).await;
                });
            }
        }
    }
    let _ = stop_tx.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::info!(
            "node listener: {} connection(s) still busy {SHUTDOWN_GRACE:?} after shutdown; dropping them",
            conns.len()
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// Serves one verified connection until it closes or shutdown is asked.
async fn serve_connection(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerNode,
    addr: SocketAddr,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(peer.clone());
        req.extensions_mut().insert(ConnectInfo(addr));
        let req = req.map(Body::new);
        hyper::service::Service::call(&TowerToHyperService::new(router.clone()), req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("node listener: connection ended: {e}");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!("node listener: connection ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_a_few_handshakes_at_once() {
        let t = Arc::new(PerIp::default());
        let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let other: std::net::IpAddr = "192.0.2.8".parse().unwrap();
        let held: Vec<IpSlot> = (0..MAX_HANDSHAKES_PER_IP)
            .map(|_| t.take(ip).unwrap())
            .collect();
        assert!(t.take(ip).is_none());
        assert!(t.take(other).is_some(), "another address is not shut out");
        drop(held);
        assert!(t.take(ip).is_some());
        assert!(t.0.lock().unwrap().len() <= 1);
    }
}
