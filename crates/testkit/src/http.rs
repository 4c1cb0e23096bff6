//! A small HTTP/1.1 client for tests: one request per connection
//! (`Connection: close`), the answer read to its end and de-chunked. Tests
//! speak raw HTTP on purpose: they check what goes over the wire.

use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::process::wait_for;

/// An answer: status, headers (names lower-cased), de-chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the status and body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `name=value` of the first `Set-Cookie` (what a client sends
    /// back in `Cookie`); panics without one.
    pub fn cookie(&self) -> String {
        let set = self
            .header("set-cookie")
            .unwrap_or_else(|| panic!("no Set-Cookie in {self}"));
        set.split(';').next().unwrap_or_default().to_string()
    }
}

/// Status, headers and body, for assertion messages.
impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "HTTP {}", self.status)?;
        for (k, v) in &self.headers {
            writeln!(f, "{k}: {v}")?;
        }
        write!(f, "\n{}", self.text())
    }
}

/// One request to `addr`; `Host: addr` unless `headers` names another.
/// Panics if nothing can be sent or nothing comes back.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// [`request`] that reports failure instead of panicking (for cleanup,
/// which must not fail a test twice).
pub fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    // A reset after a whole answer (a server that closes early) still
    // counts; an answer that never came does not.
    if let Err(e) = s.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(e);
        }
    }
    Ok(parse(&raw))
}

/// Parses what a server sent: status 0 when there is no status line, and
/// a chunked body de-chunked as far as it arrived (a stream cut short
/// keeps its whole chunks).
pub fn parse(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw.get(split + 4..).unwrap_or_default();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if !chunked {
        return Response {
            status,
            headers,
            body: body.to_vec(),
        };
    }
    // De-chunk on bytes: chunk sizes count bytes, and bodies need not be text.
    let mut out = Vec::new();
    while let Some(nl) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..nl]);
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let data = &body[nl + 2..];
        if n == 0 || data.len() < n {
            break;
        }
        out.extend_from_slice(&data[..n]);
        body = data[n..].strip_prefix(b"\r\n").unwrap_or(&data[n..]);
    }
    Response {
        status,
        headers,
        body: out,
    }
}

/// Waits (at most `secs`) until `addr` accepts connections.
pub fn wait_listening(addr: &str, secs: u64) {
    wait_for(secs, &format!("{addr} to listen"), || {
        TcpStream::connect(addr).is_ok()
    });
}
