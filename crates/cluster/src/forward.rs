//! The forwarder: sends a request to the node that owns what it is about,
//! over the node channel, and hands back that node's answer.
//!
//! The request goes as it came (method, path and query of its URI,
//! end-to-end headers, body streamed as it arrives) on a kept-alive
//! connection to the node ([`crate::pool`]): no new TLS handshake per
//! request. An HTTP/1.1 upgrade (a WebSocket) is passed on with its
//! `Connection: upgrade` and `Upgrade` headers; when the node answers `101`
//! the two upgraded connections, the caller's and the node's, are joined
//! both ways until either side closes.
//!
//! A kept connection can be closed by the node (a restart, its idle limit)
//! just as a request is put on it. A request hyper had not begun to send
//! is sent again on a new connection; one that was written is sent again
//! only if it is idempotent and has no body (RFC 9110 section 9.2.2: GET,
//! HEAD, OPTIONS, TRACE, PUT, DELETE) and the connection closed with no
//! answer begun; any other is a [`ForwardFailure::Dropped`], never sent
//! twice.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode, Uri, Version};
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::headers::{is_upgrade, strip_hop_by_hop};
use crate::pool::{Finished, Pool, Taken, FINISH_WAIT};
use crate::ClusterTls;

/// A request that could not be forwarded, naming the node and address.
#[derive(Debug, thiserror::Error)]
#[error("cannot forward to node {node} at {address}: {failure}")]
pub struct ForwardError {
    /// The node the request was for.
    pub node: String,
    /// The address it was sent to (the node's `--advertise`).
    pub address: String,
    /// What went wrong.
    pub failure: ForwardFailure,
}

/// Why a request could not be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardFailure {
    /// No TCP connection within the time allowed.
    #[error(
        "no connection within {0:?} (is the node up, and its --advertise address reachable from \
         this node?)"
    )]
    ConnectTimeout(Duration),
    /// The TCP connection failed (refused, no route, a name that does not
    /// resolve).
    #[error("cannot connect: {0} (is the node up, and its --advertise address right?)")]
    Connect(String),
    /// The TLS handshake failed, or the node refused this node's
    /// certificate.
    #[error("TLS refused: {0}")]
    Tls(String),
    /// The address answered as another node of the cluster.
    #[error(
        "the node listening there is {found:?}, not the one asked for (a stale --advertise \
         address in the nodes table?)"
    )]
    WrongNode {
        /// The name in the certificate of the node that answered.
        found: String,
    },
    /// The connection closed or failed before the node's answer came.
    #[error("the connection dropped before an answer: {0}")]
    Dropped(String),
    /// The request's own body failed while it was being sent (the client
    /// went away, or its body stream gave an error).
    #[error("the request's body failed while it was sent: {0}")]
    Body(String),
    /// The node switched protocols for a request whose caller cannot be
    /// upgraded (it came without hyper's upgrade handle).
    #[error("the node answered 101 to a request that cannot be upgraded here")]
    NotUpgradable,
}

/// Sends requests to other nodes over the channel, reusing connections
/// (keep-alive pool per address).
#[derive(Clone)]
pub struct Forwarder {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("node", &self.pool.tls().node_name())
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A forwarder presenting `tls`'s certificate.
    pub fn new(tls: Arc<ClusterTls>) -> Forwarder {
        Forwarder {
            pool: Arc::new(Pool::new(tls)),
        }
    }

    /// Forwards `req` (method, path+query, headers, streamed body, and an
    /// HTTP/1.1 upgrade such as a WebSocket: when the answer is 101 the two
    /// upgraded connections are joined both ways) to `node` listening at
    /// `advertise` (`host:port`) and returns its answer, body streamed.
    ///
    /// The path and query are those of `req.uri()` as given (axum's
    /// `OriginalUri`, if a nested router stripped a prefix, is not looked
    /// at). `Host` is kept (set from the URI's authority when missing);
    /// hop-by-hop headers are removed both ways. The peer must present the
    /// certificate of `node`: another node at that address is a
    /// [`ForwardFailure::WrongNode`].
    ///
    /// There is no time limit on the answer (exec streams and long polls
    /// are forwarded too); a node that vanishes is noticed by TCP
    /// keepalives within about a minute.
    pub async fn forward(
        &self,
        node: &str,
        advertise: &str,
        mut req: Request,
    ) -> Result<Response, ForwardError> {
        let fail = |failure| ForwardError {
            node: node.to_string(),
            address: advertise.to_string(),
            failure,
        };
        let upgrade = is_upgrade(req.headers());
        let inbound = if upgrade {
            req.extensions_mut().remove::<OnUpgrade>()
        } else {
            None
        };
        let (mut parts, body) = req.into_parts();
        if !parts.headers.contains_key(header::HOST) {
            let host = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .unwrap_or(HeaderValue::from_static(crate::identity::SERVER_NAME));
            parts.headers.insert(header::HOST, host);
        }
        strip_hop_by_hop(&mut parts.headers, upgrade, true);
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
        let mut out = hyper::Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = path;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = parts.headers;

        let mut resp = self
            .send(node, advertise, out, upgrade)
            .await
            .map_err(fail)?;

        let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switched {
            let Some(inbound) = inbound else {
                return Err(fail(ForwardFailure::NotUpgradable));
            };
            let outbound = hyper::upgrade::on(&mut resp);
            let (node, addr) = (node.to_string(), advertise.to_string());
            tokio::spawn(async move {
                match tokio::join!(inbound, outbound) {
                    (Ok(a), Ok(b)) => {
                        let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                        if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
                            tracing::debug!("upgraded connection to {node} at {addr}: {e}");
                        }
                    }
                    (a, b) => tracing::debug!(
                        "upgrade through {node} at {addr} not completed: caller {:?}, node {:?}",
                        a.err(),
                        b.err()
                    ),
                }
            });
        }
        strip_hop_by_hop(resp.headers_mut(), switched, false);
        Ok(resp.map(Body::new))
    }

    /// Opens an upgraded connection to `node` at `advertise` for this
    /// node's own use (no caller's connection to join): `req` must ask for
    /// an upgrade (`Connection: upgrade` and `Upgrade`) and is sent as
    /// [`Forwarder::forward`] sends. On `101` the answer's headers and the
    /// upgraded connection come back; any other answer is the `Err` side,
    /// as the node gave it.
    pub async fn upgrade(
        &self,
        node: &str,
        advertise: &str,
        req: Request,
    ) -> Result<
        Result<(axum::http::HeaderMap, TokioIo<hyper::upgrade::Upgraded>), Response>,
        ForwardError,
    > {
        let fail = |failure| ForwardError {
            node: node.to_string(),
            address: advertise.to_string(),
            failure,
        };
        let (mut parts, body) = req.into_parts();
        if !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(
                header::HOST,
                HeaderValue::from_static(crate::identity::SERVER_NAME),
            );
        }
        strip_hop_by_hop(&mut parts.headers, true, true);
        let mut out = hyper::Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = parts.headers;
        let mut resp = self.send(node, advertise, out, true).await.map_err(fail)?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            strip_hop_by_hop(resp.headers_mut(), false, false);
            return Ok(Err(resp.map(Body::new)));
        }
        let headers = resp.headers().clone();
        let upgraded = hyper::upgrade::on(&mut resp)
            .await
            .map_err(|e| fail(ForwardFailure::Dropped(format!("the upgrade failed: {e}"))))?;
        Ok(Ok((headers, TokioIo::new(upgraded))))
    }

    /// Sends `req` on a kept connection, or a new one; a request a kept
    /// connection gave back unsent goes again on a new one.
    async fn send(
        &self,
        node: &str,
        addr: &str,
        mut req: hyper::Request<Body>,
        upgrade: bool,
    ) -> Result<hyper::Response<Tracked>, ForwardFailure> {
        let mut kept = match self.pool.take(node, addr) {
            Taken::Ready(s) => Some(s),
            Taken::Finishing(mut s, finished) => {
                match tokio::time::timeout(FINISH_WAIT, s.ready()).await {
                    Ok(Ok(())) => Some(s),
                    Ok(Err(_)) => None,
                    Err(_) => {
                        self.pool.put_back(node, addr, s, finished);
                        None
                    }
                }
            }
            Taken::Nothing => None,
        };
        loop {
            let reused = kept.is_some();
            // What it takes to send again an idempotent request without a
            // body, should the kept connection turn out to be closed.
            let replay = (reused && replayable(&req)).then(|| {
                let mut copy = hyper::Request::new(Body::empty());
                *copy.method_mut() = req.method().clone();
                *copy.uri_mut() = req.uri().clone();
                *copy.version_mut() = req.version();
                *copy.headers_mut() = req.headers().clone();
                copy
            });
            let mut sender = match kept.take() {
                Some(s) => s,
                None => self.pool.connect(node, addr).await?,
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    // A connection that switched protocols is the caller's now.
                    if upgrade && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        return Ok(resp.map(|b| Tracked::new(b, Finished::default())));
                    }
                    let finished = self.pool.give_back(node, addr, sender);
                    return Ok(resp.map(|b| Tracked::new(b, finished)));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        tracing::debug!(
                            "node channel to {node} at {addr}: kept connection gone ({}); \
                             sending on a new one",
                            e.error()
                        );
                        req = unsent;
                    }
                    None if replay.is_some() && closed_unanswered(e.error()) => {
                        tracing::debug!(
                            "node channel to {node} at {addr}: kept connection closed under \
                             the request ({}); sending it again on a new one",
                            e.error()
                        );
                        req = replay.expect("checked");
                    }
                    _ => return Err(describe_hyper(e.error())),
                },
            }
        }
    }

    /// Closes the kept connections to `advertise` (for a node declared
    /// lost, or one that registered again elsewhere); connections busy
    /// with a request finish it first.
    pub fn forget(&self, advertise: &str) {
        self.pool.forget(advertise);
    }

    /// Connections kept to `advertise`, busy or idle.
    pub fn kept_connections(&self, advertise: &str) -> usize {
        self.pool.kept(advertise)
    }
}

/// A node's answer body that marks its connection [`Finished`] when read
/// to its end (or when it had no body at all).
pub(crate) struct Tracked {
    inner: Incoming,
    finished: Finished,
}

impl Tracked {
    fn new(inner: Incoming, finished: Finished) -> Tracked {
        if inner.is_end_stream() {
            finished.set();
        }
        Tracked { inner, finished }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.finished.set();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `req` may be sent again if a kept connection closed under it
/// before any answer (RFC 9110 section 9.2.2): an idempotent method, and
/// no body (a streamed body cannot be sent twice).
fn replayable(req: &hyper::Request<Body>) -> bool {
    use axum::http::Method;
    let idempotent = [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ];
    idempotent.contains(req.method()) && req.body().is_end_stream()
}

/// Whether a kept connection was found closed (by the other side, while
/// idle) once the request was written to it: no answer began.
fn closed_unanswered(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            // A clean close is `is_incomplete_message`; without TLS's
            // close_notify it is an unexpected EOF.
            return matches!(
                io.kind(),
                K::ConnectionReset | K::BrokenPipe | K::UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}

/// A hyper client error as a failure, with what lies beneath it.
fn describe_hyper(e: &hyper::Error) -> ForwardFailure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut chain = e.to_string();
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return ForwardFailure::Tls(describe_rustls(r));
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return ForwardFailure::Tls(describe_rustls(r));
            }
        }
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_user() {
        ForwardFailure::Body(chain)
    } else {
        ForwardFailure::Dropped(chain)
    }
}

/// A rustls error of the node channel, with the likely cause.
pub(crate) fn describe_rustls(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let hint = match e {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature)
        | E::AlertReceived(A::UnknownCA | A::BadCertificate | A::DecryptError) => {
            " (the other node's certificate is not of this cluster: do both nodes use the same \
             cluster secret file?)"
        }
        E::AlertReceived(A::CertificateRequired) => {
            " (the node wanted a certificate of the cluster)"
        }
        E::InvalidMessage(_) => {
            " (is that address a dwell node listener, not a plain HTTP or other server?)"
        }
        _ => "",
    };
    format!("{e}{hint}")
}
