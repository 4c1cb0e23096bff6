//! The port proxy's request overhead: small GETs over one kept-alive
//! connection to an HTTP server in a sandbox, through the proxy
//! (`PORT-ID.DOMAIN`, agent tunnel) and directly (a connection made inside
//! the sandbox's network namespace to the same server process), one of
//! each in turn so that both see the same machine load.

use std::fmt::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use crate::api::Api;
use crate::error::{Error, Result};
use crate::stats::Samples;

/// The port of the server inside the sandbox.
const PORT: u16 = 8080;

/// A keep-alive HTTP/1.1 server that answers every GET with `ok\n`.
const SERVER: &str = "import http.server as h
class H(h.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True
    def do_GET(s):
        b = b'ok\\n'
        s.send_response(200); s.send_header('Content-Length', str(len(b))); s.end_headers(); s.wfile.write(b)
    def log_message(s, *a): pass
h.ThreadingHTTPServer(('127.0.0.1', 8080), H).serve_forever()
";

/// Where the daemon's proxy is.
pub struct ProxyTarget {
    pub addr: SocketAddr,
    pub domain: String,
}

pub struct ProxyResults {
    pub direct: Samples,
    pub proxied: Samples,
}

fn other(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("proxy case: {what}: {e}"))
}

/// A TCP connection to 127.0.0.1:PORT made inside the network namespace
/// of process `pid` (a thread joins it, connects, and ends).
fn connect_inside(pid: u32) -> Result<std::net::TcpStream> {
    std::thread::spawn(move || -> std::io::Result<std::net::TcpStream> {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        // SAFETY: setns on this thread with a namespace fd we hold.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = std::net::TcpStream::connect(("127.0.0.1", PORT))?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .join()
    .map_err(|_| Error::Other("proxy case: the namespace thread panicked".into()))?
    .map_err(|e| other("connecting inside the sandbox", e))
}

async fn client(s: tokio::net::TcpStream) -> Result<SendRequest<Empty<Bytes>>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|source| Error::Http {
            what: "the proxy case's handshake".into(),
            source,
        })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One GET; fails unless it is answered 200 `ok`.
async fn get(c: &mut SendRequest<Empty<Bytes>>, host: &str) -> Result<()> {
    c.ready().await.map_err(|source| Error::Http {
        what: "the proxy case's connection".into(),
        source,
    })?;
    let req = Request::builder()
        .method(Method::GET)
        .uri("/")
        .header("host", host)
        .body(Empty::new())
        .map_err(|e| other("building a request", e))?;
    let resp = c.send_request(req).await.map_err(|source| Error::Http {
        what: format!("GET / (Host: {host})"),
        source,
    })?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|source| Error::Http {
            what: "reading an answer".into(),
            source,
        })?
        .to_bytes();
    if status != 200 || &body[..] != b"ok\n" {
        return Err(Error::BadAnswer {
            what: format!("GET / (Host: {host})"),
            detail: format!("{status}: {}", String::from_utf8_lossy(&body)),
        });
    }
    Ok(())
}

pub async fn run(
    api: &mut Api,
    data_dir: &Path,
    target: &ProxyTarget,
    warmup: usize,
    n: usize,
) -> Result<ProxyResults> {
    let id = api
        .create(&format!("bench-{}-proxy", std::process::id()))
        .await?;
    api.call(
        Method::POST,
        &format!("/v1/sandboxes/{id}/exec"),
        // The exec answers when `sh` exits; the server goes on.
        Some(&serde_json::json!({
            "argv": ["sh", "-c", "python3 -c \"$0\" </dev/null >/dev/null 2>&1 &", SERVER],
            "background": true
        })),
    )
    .await?;
    api.call(
        Method::POST,
        &format!("/v1/sandboxes/{id}/ports"),
        Some(&serde_json::json!({"port": PORT, "public": true})),
    )
    .await?;
    let pid = crate::memory::pid_file(&data_dir.join("sandboxes").join(&id).join("pid"))
        .ok_or_else(|| Error::Other(format!("proxy case: no pid file of sandbox {id}")))?;
    let host = format!("{PORT}-{id}.{}", target.domain);
    // The server needs a moment to listen.
    let t0 = Instant::now();
    let std_direct = loop {
        match connect_inside(pid) {
            Ok(s) => break s,
            Err(e) if t0.elapsed() > Duration::from_secs(20) => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let direct = tokio::net::TcpStream::from_std(std_direct)
        .map_err(|e| other("adopting the direct connection", e))?;
    let mut direct = client(direct).await?;
    let via = tokio::net::TcpStream::connect(target.addr)
        .await
        .map_err(|e| other(&format!("connecting to the proxy at {}", target.addr), e))?;
    let _ = via.set_nodelay(true);
    let mut proxied = client(via).await?;
    let mut r = ProxyResults {
        direct: Samples::default(),
        proxied: Samples::default(),
    };
    for i in 0..warmup + n {
        let t = Instant::now();
        get(&mut direct, &host).await?;
        let d = t.elapsed();
        let t = Instant::now();
        get(&mut proxied, &host).await?;
        let p = t.elapsed();
        if i >= warmup {
            r.direct.push(d);
            r.proxied.push(p);
        }
    }
    drop((direct, proxied));
    api.delete(&id).await?;
    Ok(r)
}

/// The report's section.
pub fn render(r: &ProxyResults) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "### 7. Port proxy: request overhead\n");
    let _ = writeln!(
        o,
        "Small GETs (`ok`, HTTP/1.1 keep-alive, one connection each) to a Python \
         `http.server` in a namespace sandbox without a network: directly (a connection \
         made inside the sandbox's network namespace) and through `--proxy-listen` \
         (`8080-ID.DOMAIN`, the agent's TCP tunnel), alternating.\n"
    );
    crate::report::header(&mut o);
    crate::report::row(&mut o, "direct to the server", &r.direct);
    crate::report::row(&mut o, "through the port proxy", &r.proxied);
    if let (Some(d), Some(p)) = (r.direct.summary(), r.proxied.summary()) {
        let _ = writeln!(
            o,
            "\nOverhead of the proxy: p50 +{:.2} ms, p99 +{:.2} ms.\n",
            p.p50 - d.p50,
            p.p99 - d.p99
        );
    }
    o
}
