//! The node channel end to end on 127.0.0.1: a `Forwarder` of node n1
//! sending to a `serve_nodes` listener of node n2 (and a plain axum front
//! server that forwards, for upgrades), and everything that must be
//! refused.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use dwell_cluster::{serve_nodes, ClusterTls, ForwardFailure, Forwarder, PeerNode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const SECRET: &[u8] = b"test cluster secret: 32 bytes or more";
const OTHER: &[u8] = b"another cluster's secret, also >= 32 bytes";

/// A node listener with a test router.
struct Node {
    addr: String,
    hits: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Node {
    async fn start(secret: &[u8], name: &str) -> Node {
        Node::start_on("127.0.0.1:0", secret, name).await
    }

    async fn start_on(addr: &str, secret: &[u8], name: &str) -> Node {
        let tls = Arc::new(ClusterTls::from_secret(secret, name).unwrap());
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hits = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_nodes(listener, tls, router(hits.clone()), async {
            let _ = rx.await;
        }));
        Node {
            addr,
            hits,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve_nodes returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

fn router(hits: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route("/echo/{*rest}", any(echo))
        .route("/who", get(who))
        .route("/up", get(up))
        .route("/panic", get(panics))
        .route("/flaky", any(flaky))
        .route("/big", get(big))
        .with_state(hits)
}

fn peer_of(req: &Request) -> String {
    req.extensions()
        .get::<PeerNode>()
        .map(|p| p.0.clone())
        .unwrap_or_else(|| "none".into())
}

/// Says what came (method, URI, Host, peer, headers that must and must
/// not have passed) in headers, and answers with the request's own body,
/// streamed back as it arrives.
async fn echo(State(hits): State<Arc<AtomicUsize>>, req: Request) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let h = req.headers();
    let has = |n: &str| if h.contains_key(n) { "yes" } else { "no" };
    let resp = Response::builder()
        .header("x-method", req.method().as_str())
        .header("x-uri", req.uri().to_string())
        .header(
            "x-host",
            h.get(header::HOST)
                .cloned()
                .unwrap_or(HeaderValue::from_static("")),
        )
        .header("x-peer", peer_of(&req))
        .header(
            "x-test",
            h.get("x-test")
                .cloned()
                .unwrap_or(HeaderValue::from_static("")),
        )
        .header("x-saw-private", has("x-private"))
        .header("x-saw-keep-alive", has("keep-alive"))
        .header("x-saw-connection", has("connection"))
        .header(header::CONNECTION, "x-resp-private")
        .header("x-resp-private", "1")
        .header("x-resp-public", "1");
    resp.body(req.into_body()).unwrap()
}

async fn who(
    State(hits): State<Arc<AtomicUsize>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> String {
    hits.fetch_add(1, Ordering::SeqCst);
    format!("{} {addr}", peer_of(&req))
}

async fn panics(State(hits): State<Arc<AtomicUsize>>) -> &'static str {
    hits.fetch_add(1, Ordering::SeqCst);
    panic!("this test handler panics on purpose, dropping its connection");
}

/// Calls of `/flaky` (only one test uses it).
static FLAKY: AtomicUsize = AtomicUsize::new(0);

/// Answers its n-th call with n, except the 2nd and 5th, which drop the
/// connection unanswered (as a node does when it stops under a request).
async fn flaky(State(hits): State<Arc<AtomicUsize>>) -> String {
    hits.fetch_add(1, Ordering::SeqCst);
    let n = FLAKY.fetch_add(1, Ordering::SeqCst) + 1;
    if n == 2 || n == 5 {
        panic!("this test handler drops its connection on purpose (call {n})");
    }
    n.to_string()
}

/// 8 MiB made as it is sent, in 64 KiB chunks.
async fn big(State(hits): State<Arc<AtomicUsize>>) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let chunks = futures_util::stream::unfold(0u32, |i| async move {
        (i < 128).then(|| {
            let chunk = bytes::Bytes::from(pattern(i as usize * 65536, 65536));
            (Ok::<_, std::io::Error>(chunk), i + 1)
        })
    });
    Body::from_stream(chunks).into_response()
}

/// `n` bytes of a pattern, as found at `offset` of an endless stream.
fn pattern(offset: usize, n: usize) -> Vec<u8> {
    (offset..offset + n).map(|i| (i % 251) as u8).collect()
}

/// Switches to the `test` protocol and answers each read in upper case.
async fn up(State(hits): State<Arc<AtomicUsize>>, mut req: Request) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    if req.headers().get(header::UPGRADE).map(|v| v.as_bytes()) != Some(b"test") {
        return (StatusCode::BAD_REQUEST, "no Upgrade: test").into_response();
    }
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let mut io = TokioIo::new(on.await.expect("the node's side upgrades"));
        let mut buf = [0u8; 4096];
        loop {
            let n = io.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf[..n].make_ascii_uppercase();
            if io.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = io.shutdown().await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "test")
        .body(Body::empty())
        .unwrap()
}

fn forwarder(secret: &[u8], name: &str) -> Forwarder {
    Forwarder::new(Arc::new(ClusterTls::from_secret(secret, name).unwrap()))
}

fn get_req(path: &str) -> Request {
    Request::builder()
        .uri(path)
        .header(header::HOST, "api.test")
        .body(Body::empty())
        .unwrap()
}

async fn text(resp: Response) -> String {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_arrives_whole_and_both_bodies_stream() {
    let n2 = Node::start(SECRET, "n2").await;
    let fwd = forwarder(SECRET, "n1");

    // The request body comes from a channel, so the test decides when
    // each chunk is sent.
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|c| (Ok::<_, std::io::Error>(bytes::Bytes::from(c)), rx))
    });
    let req = Request::builder()
        .method(Method::PUT)
        .uri("http://api.test/echo/a/b%20c?x=1&y=two")
        .header(header::HOST, "api.test")
        .header("x-test", "kept")
        .header(header::CONNECTION, "keep-alive, x-private")
        .header("keep-alive", "timeout=5")
        .header("x-private", "dropped")
        .body(Body::from_stream(body))
        .unwrap();
    let first = pattern(0, 1000);
    tx.send(first.clone()).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), fwd.forward("n2", &n2.addr, req))
        .await
        .expect("the answer's head comes while the request body is still open")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert_eq!(h["x-method"], "PUT");
    assert_eq!(h["x-uri"], "/echo/a/b%20c?x=1&y=two");
    assert_eq!(h["x-host"], "api.test");
    assert_eq!(h["x-peer"], "n1");
    assert_eq!(h["x-test"], "kept");
    assert_eq!(h["x-saw-private"], "no");
    assert_eq!(h["x-saw-keep-alive"], "no");
    assert_eq!(h["x-saw-connection"], "no");
    assert!(h.get("x-resp-private").is_none(), "{h:?}");
    assert!(h.get(header::CONNECTION).is_none(), "{h:?}");
    assert_eq!(h["x-resp-public"], "1");

    // The first chunk comes back before the rest is sent: streamed both
    // ways, nothing buffered whole.
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while got.len() < first.len() {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the echo of the first chunk")
            .unwrap()
            .unwrap();
        got.extend_from_slice(frame.data_ref().unwrap());
    }
    assert_eq!(got, first);

    // Then 6 MiB more, and the end.
    const TOTAL: usize = 6 * 1024 * 1024 + 1000;
    let sender = tokio::spawn(async move {
        let mut off = 1000;
        while off < TOTAL {
            let n = (TOTAL - off).min(64 * 1024);
            tx.send(pattern(off, n)).await.unwrap();
            off += n;
        }
    });
    let mut n = got.len();
    let mut ok = true;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(d) = frame.data_ref() {
            ok &= d[..] == pattern(n, d.len())[..];
            n += d.len();
        }
    }
    sender.await.unwrap();
    assert_eq!(n, TOTAL);
    assert!(ok, "the echoed bytes are the bytes sent");
    assert_eq!(n2.hits.load(Ordering::SeqCst), 1);
    n2.stop().await;
}

/// A TCP relay to `target` that counts the connections it accepts.
async fn counting_relay(target: String) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let accepts = Arc::new(AtomicUsize::new(0));
    let count = accepts.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let target = target.clone();
            tokio::spawn(async move {
                let mut s = TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
            });
        }
    });
    (addr, accepts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_comes_back_and_requests_share_one_connection() {
    let n2 = Node::start(SECRET, "n2").await;
    // The node seen through a relay that counts the connections made.
    let (addr, accepts) = counting_relay(n2.addr.clone()).await;
    let fwd = forwarder(SECRET, "n1");

    let resp = fwd.forward("n2", &addr, get_req("/big")).await.unwrap();
    assert!(
        resp.headers().get(header::CONTENT_LENGTH).is_none(),
        "chunked"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 8 * 1024 * 1024);
    assert!(body[..] == pattern(0, body.len())[..]);

    // Every later request comes on the same connection (one client
    // address seen, one connection accepted), and the forwarder keeps
    // just that one.
    let first = text(fwd.forward("n2", &addr, get_req("/who")).await.unwrap()).await;
    assert!(first.starts_with("n1 127.0.0.1:"), "{first}");
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let who = text(fwd.forward("n2", &addr, get_req("/who")).await.unwrap()).await;
        times.push(t.elapsed());
        assert_eq!(who, first, "a kept connection is reused");
    }
    assert_eq!(accepts.load(Ordering::SeqCst), 1);
    assert_eq!(fwd.kept_connections(&addr), 1);
    times.sort();
    eprintln!(
        "forwarded GET on a kept connection (debug build): p50 {:?}, p90 {:?}",
        times[100], times[180]
    );

    // A clone shares the pool; an answer left unread does not spoil it.
    let unread = fwd
        .clone()
        .forward("n2", &addr, get_req("/big"))
        .await
        .unwrap();
    drop(unread);
    let again = text(
        fwd.clone()
            .forward("n2", &addr, get_req("/who"))
            .await
            .unwrap(),
    )
    .await;
    assert!(again.starts_with("n1 127.0.0.1:"), "{again}");
    let accepted = accepts.load(Ordering::SeqCst);
    assert!(accepted <= 2, "{accepted}");

    // Two at once need two connections, and both are kept.
    let slow_body = futures_util::stream::unfold(0, |i| async move {
        if i > 0 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"late")),
            1,
        ))
    });
    let slow = Request::builder()
        .method(Method::POST)
        .uri("/echo/slow")
        .body(Body::from_stream(slow_body))
        .unwrap();
    let (a, b) = tokio::join!(
        async { text(fwd.forward("n2", &addr, slow).await.unwrap()).await },
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            text(fwd.forward("n2", &addr, get_req("/who")).await.unwrap()).await
        }
    );
    assert_eq!(a, "late");
    assert!(b.starts_with("n1 127.0.0.1:"), "{b}");
    assert_eq!(
        accepts.load(Ordering::SeqCst),
        accepted + 1,
        "the busy one is not used"
    );
    assert_eq!(fwd.kept_connections(&addr), 2);

    fwd.forget(&addr);
    assert_eq!(fwd.kept_connections(&addr), 0);
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_request_in_flight_finish() {
    let n2 = Node::start(SECRET, "n2").await;
    let fwd = forwarder(SECRET, "n1");
    let (tx, rx) = mpsc::channel::<Vec<u8>>(1);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|c| (Ok::<_, std::io::Error>(bytes::Bytes::from(c)), rx))
    });
    let req = Request::builder()
        .method(Method::POST)
        .uri("/echo/in-flight")
        .body(Body::from_stream(body))
        .unwrap();
    let resp = fwd.forward("n2", &n2.addr, req).await.unwrap();
    let (addr, hits) = (n2.addr.clone(), n2.hits.clone());
    let stopping = tokio::spawn(n2.stop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!stopping.is_finished(), "waits for the request in flight");
    tx.send(b"still served".to_vec()).await.unwrap();
    drop(tx);
    assert_eq!(text(resp).await, "still served");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // And nothing listens there any more.
    let e = fwd.forward("n2", &addr, get_req("/who")).await.unwrap_err();
    assert!(
        matches!(
            e.failure,
            ForwardFailure::Connect(_) | ForwardFailure::Dropped(_)
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_is_joined_both_ways_through_the_forward() {
    let n2 = Node::start(SECRET, "n2").await;
    let fwd = forwarder(SECRET, "n1");

    // A front server (any node's public listener) that forwards all.
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let target = n2.addr.clone();
    let app = Router::new().fallback(move |req: Request| {
        let (fwd, target) = (fwd.clone(), target.clone());
        async move {
            match fwd.forward("n2", &target, req).await {
                Ok(r) => r,
                Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
    });
    let server = tokio::spawn(async move { axum::serve(front, app).await });

    let mut c = TcpStream::connect(front_addr).await.unwrap();
    c.write_all(
        b"GET /up HTTP/1.1\r\nHost: front.test\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: test"), "{head}");
    assert!(lower.contains("connection: upgrade"), "{head}");

    for word in ["hello", "through two nodes", "and back"] {
        c.write_all(word.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; word.len()];
        tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, word.to_ascii_uppercase().as_bytes());
    }
    // Closing our side reaches the node, whose close comes back.
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest))
        .await
        .expect("the close goes through both joins")
        .unwrap();
    assert!(rest.is_empty());

    // A plain request through the same front still works.
    let mut c = TcpStream::connect(front_addr).await.unwrap();
    c.write_all(b"GET /who HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).await.unwrap();
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
    assert!(all.contains("n1 127.0.0.1:"), "{all}");

    server.abort();
    n2.stop().await;
}

async fn read_head(c: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut b))
            .await
            .expect("a response head")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed before the head ended: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_another_cluster_are_refused_both_ways() {
    let n2 = Node::start(SECRET, "n2").await;
    let stranger = forwarder(OTHER, "n1");
    let e = stranger
        .forward("n2", &n2.addr, get_req("/who"))
        .await
        .unwrap_err();
    assert!(matches!(e.failure, ForwardFailure::Tls(_)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("node n2") && msg.contains(&n2.addr), "{msg}");
    assert!(msg.contains("same cluster secret"), "{msg}");

    // The other way: a node of this cluster asked to reach a listener of
    // another one.
    let foreign = Node::start(OTHER, "n2").await;
    let e = forwarder(SECRET, "n1")
        .forward("n2", &foreign.addr, get_req("/who"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("same cluster secret"), "{e}");

    // A client that trusts this cluster's listener (it skips checking the
    // server) but has another cluster's certificate: the listener refuses
    // it at the TLS layer.
    let other = ClusterTls::from_secret(OTHER, "n1").unwrap();
    let mut cfg = (*other.client_config()).clone();
    cfg.dangerous()
        .set_certificate_verifier(Arc::new(AnyServer(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))));
    let reply = raw_tls_get(&n2.addr, cfg).await;
    assert!(reply.contains("fatal alert"), "{reply}");

    // A client with no certificate at all.
    let mine = ClusterTls::from_secret(SECRET, "n1").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(mine.ca_certificate().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let reply = raw_tls_get(&n2.addr, cfg).await;
    assert!(
        reply.contains("fatal alert: CertificateRequired"),
        "{reply}"
    );

    // Plain HTTP over TCP.
    let mut c = TcpStream::connect(&n2.addr).await.unwrap();
    c.write_all(b"GET /who HTTP/1.1\r\nHost: n2\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut reply))
        .await
        .expect("the listener closes a plain HTTP client")
        .ok();
    // Nothing, or a TLS alert record (content type 21), never HTTP.
    assert!(reply.is_empty() || reply[0] == 21, "{reply:?}");

    assert_eq!(
        n2.hits.load(Ordering::SeqCst),
        0,
        "no refused request reached the router"
    );
    assert_eq!(foreign.hits.load(Ordering::SeqCst), 0);

    // And the listener still serves its own cluster.
    let ok = forwarder(SECRET, "n1")
        .forward("n2", &n2.addr, get_req("/who"))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    foreign.stop().await;
    n2.stop().await;
}

/// Completes a TLS handshake as `cfg` allows, sends a GET and returns
/// what came back (empty, or an error's text, when refused).
async fn raw_tls_get(addr: &str, cfg: rustls::ClientConfig) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("dwell-node").unwrap();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let mut tls = match conn.connect(name, tcp).await {
        Ok(t) => t,
        Err(e) => return format!("handshake failed: {e}"),
    };
    if let Err(e) = tls
        .write_all(b"GET /who HTTP/1.1\r\nHost: n2\r\n\r\n")
        .await
    {
        return format!("write failed: {e}");
    }
    let mut reply = Vec::new();
    match tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut reply)).await {
        Ok(Ok(_)) => String::from_utf8_lossy(&reply).into_owned(),
        Ok(Err(e)) => format!("read failed: {e}"),
        Err(_) => panic!("the listener neither answered nor closed"),
    }
}

/// A server verifier that accepts any certificate (to get a foreign
/// client certificate as far as the listener's check).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_name_the_node_and_say_why() {
    let fwd = forwarder(SECRET, "n1");

    // Nothing listens there.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gone.local_addr().unwrap().to_string();
    drop(gone);
    let e = fwd.forward("n7", &addr, get_req("/who")).await.unwrap_err();
    assert!(matches!(e.failure, ForwardFailure::Connect(_)), "{e}");
    assert_eq!((e.node.as_str(), e.address.as_str()), ("n7", addr.as_str()));
    let msg = e.to_string();
    assert!(
        msg.contains("node n7") && msg.contains(&addr) && msg.contains("--advertise"),
        "{msg}"
    );

    // Another node of the cluster at that address.
    let n2 = Node::start(SECRET, "n2").await;
    let e = fwd
        .forward("n3", &n2.addr, get_req("/who"))
        .await
        .unwrap_err();
    assert_eq!(
        e.failure,
        ForwardFailure::WrongNode { found: "n2".into() },
        "{e}"
    );
    assert!(e.to_string().contains("node n3"), "{e}");

    // The node drops the connection before answering.
    let e = fwd
        .forward("n2", &n2.addr, get_req("/panic"))
        .await
        .unwrap_err();
    assert!(matches!(e.failure, ForwardFailure::Dropped(_)), "{e}");
    assert!(e.to_string().contains("dropped before an answer"), "{e}");
    assert_eq!(n2.hits.load(Ordering::SeqCst), 1);
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_restarts_is_reached_on_a_new_connection() {
    let n2 = Node::start(SECRET, "n2").await;
    let fwd = forwarder(SECRET, "n1");
    let before = text(fwd.forward("n2", &n2.addr, get_req("/who")).await.unwrap()).await;
    assert_eq!(fwd.kept_connections(&n2.addr), 1);

    // Shutdown closes the idle kept connection and returns.
    let addr = n2.addr.clone();
    n2.stop().await;
    let n2 = Node::start_on(&addr, SECRET, "n2").await;
    let after = text(fwd.forward("n2", &n2.addr, get_req("/who")).await.unwrap()).await;
    assert!(after.starts_with("n1 127.0.0.1:"), "{after}");
    assert_ne!(after, before, "a new connection");
    assert_eq!(fwd.kept_connections(&n2.addr), 1, "the dead one is gone");
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_requests_without_a_body_are_sent_again() {
    let n2 = Node::start(SECRET, "n2").await;
    let (addr, accepts) = counting_relay(n2.addr.clone()).await;
    let fwd = forwarder(SECRET, "n1");
    let call = |method: Method, body: &'static str| {
        Request::builder()
            .method(method)
            .uri("/flaky")
            .body(Body::from(body))
            .unwrap()
    };
    let got = text(
        fwd.forward("n2", &addr, call(Method::GET, ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got, "1");
    // The kept connection closes under the 2nd call: a GET goes again on
    // a new connection.
    let got = text(
        fwd.forward("n2", &addr, call(Method::GET, ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got, "3");
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
    let got = text(
        fwd.forward("n2", &addr, call(Method::DELETE, ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got, "4");
    // A POST is not sent twice.
    let e = fwd
        .forward("n2", &addr, call(Method::POST, "once"))
        .await
        .unwrap_err();
    assert!(matches!(e.failure, ForwardFailure::Dropped(_)), "{e}");
    assert_eq!(FLAKY.load(Ordering::SeqCst), 5);
    assert_eq!(n2.hits.load(Ordering::SeqCst), 5);
    n2.stop().await;
}
