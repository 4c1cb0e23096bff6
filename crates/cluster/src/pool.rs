//! Connections of the forwarder to other nodes: made (TCP, then mutual
//! TLS, then a check that the peer is the node asked for) and kept alive
//! per address for the next request.
//!
//! A connection goes back to the pool as soon as its answer's head has
//! come, with a flag the answer's body sets when it has been read to its
//! end. A request takes a kept connection that is ready; or
//! else one whose answer was read to the end but whose hyper task has not
//! yet noticed (the usual case for back-to-back requests), waiting a moment
//! ([`FINISH_WAIT`]) for it; or else it opens a new one. So concurrent
//! requests to one node use as many connections as they need, up to
//! [`MAX_POOLED`] kept per address. A connection idle for [`POOL_IDLE`] is
//! dropped, which is well before the node listener would close it
//! ([`crate::listener::IDLE_TIMEOUT`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::forward::ForwardFailure;
use crate::identity::SERVER_NAME;
use crate::ClusterTls;

/// Time to have a TCP connection to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time to complete the TLS handshake with a node once connected.
pub const TLS_TIMEOUT: Duration = Duration::from_secs(5);
/// Kept connections per address (more may be open while busy).
pub const MAX_POOLED: usize = 32;
/// A kept connection unused for this long is closed.
pub const POOL_IDLE: Duration = Duration::from_secs(60);
/// How long a request waits for a connection whose last answer was read
/// to its end to be ready again, before it opens a new one.
pub const FINISH_WAIT: Duration = Duration::from_millis(25);
/// How often every address's kept connections are looked over.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Set when the answer of a kept connection's last exchange has been read
/// to its end: the connection is about to be ready again.
#[derive(Clone, Default)]
pub(crate) struct Finished(Arc<AtomicBool>);

impl Finished {
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

struct Kept {
    node: String,
    sender: SendRequest<Body>,
    /// When it was last seen in use.
    seen: Instant,
    finished: Finished,
}

/// What [`Pool::take`] found.
pub(crate) enum Taken {
    /// A connection ready for a request.
    Ready(SendRequest<Body>),
    /// One whose last answer was read to its end: ready in a moment.
    Finishing(SendRequest<Body>, Finished),
    /// None: open a new one.
    Nothing,
}

impl Kept {
    /// Still worth keeping: open, and busy or idle for less than
    /// [`POOL_IDLE`] (a busy one counts as used now).
    fn keep(&mut self, now: Instant) -> bool {
        if self.sender.is_closed() {
            return false;
        }
        if !self.sender.is_ready() {
            self.seen = now;
            return true;
        }
        now.duration_since(self.seen) < POOL_IDLE
    }
}

struct Shelf {
    by_addr: HashMap<String, Vec<Kept>>,
    swept: Instant,
}

pub(crate) struct Pool {
    tls: Arc<ClusterTls>,
    connector: tokio_rustls::TlsConnector,
    kept: Mutex<Shelf>,
}

impl Pool {
    pub(crate) fn new(tls: Arc<ClusterTls>) -> Pool {
        Pool {
            connector: tokio_rustls::TlsConnector::from(tls.client_config()),
            tls,
            kept: Mutex::new(Shelf {
                by_addr: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    pub(crate) fn tls(&self) -> &ClusterTls {
        &self.tls
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shelf> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kept connection to `node` at `addr` that can take a request now,
    /// or soon.
    pub(crate) fn take(&self, node: &str, addr: &str) -> Taken {
        let now = Instant::now();
        let mut kept = self.lock();
        if now.duration_since(kept.swept) >= SWEEP_EVERY {
            kept.swept = now;
            kept.by_addr.retain(|_, v| {
                v.retain_mut(|k| k.keep(now));
                !v.is_empty()
            });
        }
        let Some(list) = kept.by_addr.get_mut(addr) else {
            return Taken::Nothing;
        };
        // Another node now at this address (a stale record): drop the
        // old node's connections.
        list.retain_mut(|k| k.node == node && k.keep(now));
        if let Some(i) = list.iter().position(|k| k.sender.is_ready()) {
            return Taken::Ready(list.swap_remove(i).sender);
        }
        match list.iter().position(|k| k.finished.get()) {
            Some(i) => {
                let k = list.swap_remove(i);
                Taken::Finishing(k.sender, k.finished)
            }
            None => Taken::Nothing,
        }
    }

    /// Puts back a connection taken as [`Taken::Finishing`] that did not
    /// become ready in time.
    pub(crate) fn put_back(
        &self,
        node: &str,
        addr: &str,
        sender: SendRequest<Body>,
        finished: Finished,
    ) {
        self.keep(node, addr, sender, finished);
    }

    /// Keeps `sender`, whose answer just came, for the next request to
    /// `node` at `addr` (unless it is closed or the address has enough);
    /// the answer's body sets the flag returned when read to its end.
    pub(crate) fn give_back(&self, node: &str, addr: &str, sender: SendRequest<Body>) -> Finished {
        let finished = Finished::default();
        self.keep(node, addr, sender, finished.clone());
        finished
    }

    fn keep(&self, node: &str, addr: &str, sender: SendRequest<Body>, finished: Finished) {
        if sender.is_closed() {
            return;
        }
        let mut kept = self.lock();
        let list = kept.by_addr.entry(addr.to_string()).or_default();
        if list.len() < MAX_POOLED {
            list.push(Kept {
                node: node.to_string(),
                sender,
                seen: Instant::now(),
                finished,
            });
        }
    }

    /// Drops the kept connections to `addr`.
    pub(crate) fn forget(&self, addr: &str) {
        self.lock().by_addr.remove(addr);
    }

    /// Connections kept to `addr` (busy or idle).
    pub(crate) fn kept(&self, addr: &str) -> usize {
        self.lock().by_addr.get(addr).map_or(0, Vec::len)
    }

    /// A new connection to `node` at `addr`.
    pub(crate) async fn connect(
        &self,
        node: &str,
        addr: &str,
    ) -> Result<SendRequest<Body>, ForwardFailure> {
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(ForwardFailure::Connect(e.to_string())),
            Err(_) => return Err(ForwardFailure::ConnectTimeout(CONNECT_TIMEOUT)),
        };
        crate::listener::tune(&tcp);
        let name = ServerName::try_from(SERVER_NAME).expect("dwell-node is a DNS name");
        let tls = match tokio::time::timeout(TLS_TIMEOUT, self.connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(ForwardFailure::Tls(tls_reason(&e))),
            Err(_) => {
                return Err(ForwardFailure::Tls(format!(
                    "no TLS handshake within {TLS_TIMEOUT:?} (is that address a dwell node \
                     listener?)"
                )))
            }
        };
        let found = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| ForwardFailure::Tls("the server sent no certificate".into()))
            .and_then(|c| {
                crate::tls::node_name_of(c).map_err(|e| ForwardFailure::Tls(e.to_string()))
            })?;
        if found != node {
            return Err(ForwardFailure::WrongNode { found });
        }
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ForwardFailure::Dropped(e.to_string()))?;
        let (node, addr) = (node.to_string(), addr.to_string());
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("node channel to {node} at {addr}: connection ended: {e}");
            }
        });
        Ok(sender)
    }
}

/// Why a TLS handshake failed, in words.
fn tls_reason(e: &std::io::Error) -> String {
    if let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return crate::forward::describe_rustls(r);
    }
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return "the server closed the connection during the TLS handshake (is that address a \
                dwell node listener of this cluster?)"
            .into();
    }
    e.to_string()
}
