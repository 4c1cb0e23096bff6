//! E2B create to first command, against dwell's own create + exec: what
//! an agent written for the E2B SDKs waits for on dwell, beside what a
//! client of dwell's API waits for, one of each in turn.
//!
//! The E2B side speaks the SDKs' wire protocol itself, on kept-alive
//! connections as the SDKs keep them: `POST /v2/sandboxes` on the control
//! plane (template `base`), then `process.Process/Start` (Connect
//! streaming, JSON envelopes) on the envd data plane with the routing and
//! access-token headers, read to the end event. Both sides run the command
//! the SDKs' `commands.run` runs (`/bin/bash -l -c true`), so the
//! difference is the protocol and control plane, not the shell.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::api::Api;
use crate::error::{Error, Result};
use crate::stats::Samples;

/// What `commands.run("true")` runs.
const ARGV: [&str; 4] = ["/bin/bash", "-l", "-c", "true"];

/// The daemon's E2B listeners and a key.
pub struct E2bTarget {
    /// `--e2b-listen`.
    pub api: SocketAddr,
    /// `--e2b-sandbox-listen`.
    pub envd: SocketAddr,
    /// An API key, in the `e2b_` form the SDKs send.
    pub key: String,
}

pub struct E2bResults {
    pub e2b: Samples,
    pub dwell: Samples,
    /// Through the Python SDK itself (None: `python3 -c "import e2b"` fails).
    pub sdk: Option<Samples>,
}

/// One round per line read: `Sandbox.create()` + `commands.run("true")`,
/// timed, then `kill()` untimed; prints the milliseconds or `error: ...`.
const SDK_SCRIPT: &str = r#"
import sys, time
from e2b import Sandbox
for line in sys.stdin:
    try:
        t0 = time.perf_counter()
        s = Sandbox.create("base", timeout=300)
        r = s.commands.run("true")
        ms = (time.perf_counter() - t0) * 1e3
        s.kill()
        print(ms if r.exit_code == 0 else "error: exit %d" % r.exit_code, flush=True)
    except Exception as e:
        print("error: %r" % (e,), flush=True)
"#;

/// The Python SDK in a child process, driven a round at a time.
struct Sdk {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Sdk {
    fn start(t: &E2bTarget) -> Option<Sdk> {
        use std::process::{Command, Stdio};
        let ok = Command::new("python3")
            .args(["-c", "import e2b"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("dwell-bench: skipping the E2B SDK row: the Python package e2b is missing");
            return None;
        }
        let mut child = Command::new("python3")
            .args(["-c", SDK_SCRIPT])
            .env("E2B_API_URL", format!("http://{}", t.api))
            .env("E2B_SANDBOX_URL", format!("http://{}", t.envd))
            .env("E2B_API_KEY", &t.key)
            .env_remove("E2B_DEBUG")
            .env_remove("E2B_DOMAIN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let out = std::io::BufReader::new(child.stdout.take()?);
        Some(Sdk { child, out })
    }

    fn round(&mut self) -> Result<std::time::Duration> {
        use std::io::{BufRead, Write};
        let stdin = self.child.stdin.as_mut().expect("piped");
        stdin
            .write_all(b"go\n")
            .and_then(|_| stdin.flush())
            .map_err(|e| other("driving the Python SDK", e))?;
        let mut line = String::new();
        self.out
            .read_line(&mut line)
            .map_err(|e| other("reading the Python SDK's answer", e))?;
        let ms: f64 = line
            .trim()
            .parse()
            .map_err(|_| other("the Python SDK round", line.trim()))?;
        Ok(std::time::Duration::from_secs_f64(ms / 1e3))
    }
}

impl Drop for Sdk {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn other(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("E2B case: {what}: {e}"))
}

/// A kept-alive HTTP/1.1 connection to `addr`, re-opened when the server
/// closed it.
struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn { addr, sender: None }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        let closed = match &mut self.sender {
            Some(s) => s.ready().await.is_err(),
            None => true,
        };
        if closed {
            let s = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| other(&format!("connecting to {}", self.addr), e))?;
            let _ = s.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .map_err(|source| Error::Http {
                    what: format!("the handshake with {}", self.addr),
                    source,
                })?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("just opened"))
    }

    /// One request; the whole answer, which must be a 2xx.
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Bytes> {
        let what = format!("{} {}", req.method(), req.uri());
        let resp = self
            .sender()
            .await?
            .send_request(req)
            .await
            .map_err(|source| Error::Http {
                what: what.clone(),
                source,
            })?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|source| Error::Http {
                what: what.clone(),
                source,
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(Error::Api {
                what,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(body)
    }
}

/// One Connect envelope: flags, big-endian length, the message.
fn envelope(msg: &Value) -> Bytes {
    let body = serde_json::to_vec(msg).expect("a JSON value serializes");
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.into()
}

/// The exit code in a `process.Start` answer (a run of envelopes; the
/// last, flagged 0x02, ends the stream and carries an error if any).
fn exit_code(mut b: Bytes) -> Result<i64> {
    let mut code = None;
    while b.remaining() >= 5 {
        let flags = b.get_u8();
        let len = b.get_u32() as usize;
        if b.remaining() < len {
            break;
        }
        let msg: Value = serde_json::from_slice(&b.split_to(len))
            .map_err(|e| other("a process.Start message is not JSON", e))?;
        if flags & 0x02 != 0 {
            if let Some(err) = msg.get("error") {
                return Err(other("process.Start ended with an error", err));
            }
            continue;
        }
        if let Some(end) = msg.pointer("/event/end") {
            code = Some(end["exitCode"].as_i64().unwrap_or(0));
        }
    }
    code.ok_or_else(|| other("process.Start", "the stream had no end event"))
}

/// E2B: create from `base`, run the command, return (id, time to its end).
async fn e2b_once(t: &E2bTarget, api: &mut Conn, envd: &mut Conn) -> Result<(String, f64)> {
    let t0 = Instant::now();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v2/sandboxes")
        .header("host", t.api.to_string())
        .header("x-api-key", &t.key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"templateID":"base","timeout":300}"#,
        )))
        .map_err(|e| other("building the create request", e))?;
    let created: Value = serde_json::from_slice(&api.send(req).await?)
        .map_err(|e| other("the create answer is not JSON", e))?;
    let id = created["sandboxID"]
        .as_str()
        .ok_or_else(|| other("the create answer", format!("no sandboxID in {created}")))?
        .to_string();
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/process.Process/Start")
        .header("host", t.envd.to_string())
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .header("e2b-sandbox-id", &id)
        .header("e2b-sandbox-port", "49983");
    if let Some(tok) = created["envdAccessToken"].as_str() {
        req = req.header("x-access-token", tok);
    }
    let start = serde_json::json!({
        "process": { "cmd": ARGV[0], "args": &ARGV[1..], "envs": {} },
        "stdin": false
    });
    let req = req
        .body(Full::new(envelope(&start)))
        .map_err(|e| other("building process.Start", e))?;
    let code = exit_code(envd.send(req).await?)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if code != 0 {
        return Err(other("the command", format!("exited {code}")));
    }
    Ok((id, ms))
}

async fn e2b_kill(t: &E2bTarget, api: &mut Conn, id: &str) -> Result<()> {
    let req = Request::builder()
        .method(Method::DELETE)
        .uri(format!("/sandboxes/{id}"))
        .header("host", t.api.to_string())
        .header("x-api-key", &t.key)
        .body(Full::new(Bytes::new()))
        .map_err(|e| other("building the kill request", e))?;
    api.send(req).await.map(drop)
}

/// Alternating rounds; every sandbox is removed, also when a round fails.
pub async fn run(api: &mut Api, t: &E2bTarget, warmup: usize, n: usize) -> Result<E2bResults> {
    let mut sdk = Sdk::start(t);
    let mut r = E2bResults {
        e2b: Samples::default(),
        dwell: Samples::default(),
        sdk: sdk.as_ref().map(|_| Samples::default()),
    };
    let mut e2b_api = Conn::new(t.api);
    let mut envd = Conn::new(t.envd);
    for i in 0..warmup + n {
        let t0 = Instant::now();
        let id = api
            .create(&format!("bench-{}-e2b-{i}", std::process::id()))
            .await?;
        api.exec(&id, &ARGV).await?;
        let d = t0.elapsed();
        api.delete(&id).await?;
        // A sandbox of a failed round is left to bench.sh's cleanup,
        // which removes every sandbox of its daemon.
        let (id, ms) = e2b_once(t, &mut e2b_api, &mut envd).await?;
        e2b_kill(t, &mut e2b_api, &id).await?;
        let via_sdk = match &mut sdk {
            // The SDK blocks this thread for its round: nothing else runs.
            Some(sdk) => Some(sdk.round()?),
            None => None,
        };
        if i >= warmup {
            r.dwell.push(d);
            r.e2b.push(std::time::Duration::from_secs_f64(ms / 1e3));
            if let (Some(s), Some(v)) = (r.sdk.as_mut(), via_sdk) {
                s.push(v);
            }
        }
    }
    Ok(r)
}

/// The report's section.
pub fn render(r: &E2bResults) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "### 10. E2B SDKs: create to first command\n");
    let _ = writeln!(
        o,
        "A namespace sandbox created and its first command run to its end, one of each \
         in turn: through dwell's API (`POST /v1/sandboxes`, `POST .../exec`, one kept-alive \
         unix-socket connection) and through the E2B layer as the SDKs do it (`POST \
         /v2/sandboxes` with template `base`, then envd's `process.Process/Start` streamed \
         to its end event, kept-alive TCP connections). Both run `/bin/bash -l -c true`, \
         what `commands.run` runs. The last row is the Python SDK itself (`Sandbox.create()` \
         + `commands.run(\"true\")` in one long-lived `python3`, the client's own time \
         included). Deleting is not timed.\n"
    );
    crate::report::header(&mut o);
    crate::report::row(&mut o, "dwell API: create + exec", &r.dwell);
    crate::report::row(&mut o, "E2B wire protocol: create + commands.run", &r.e2b);
    if let Some(s) = &r.sdk {
        crate::report::row(&mut o, "E2B Python SDK: create + commands.run", s);
    }
    if let (Some(d), Some(e)) = (r.dwell.summary(), r.e2b.summary()) {
        let _ = writeln!(
            o,
            "\nE2B over dwell's own API: p50 {:.2}x ({:.1} vs {:.1} ms; the bar is 1.5x).\n",
            e.p50 / d.p50,
            e.p50,
            d.p50
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_is_read_from_the_end_event() {
        let mut b = Vec::new();
        for (flags, msg) in [
            (0u8, r#"{"event":{"start":{"pid":7}}}"#),
            (0, r#"{"event":{"end":{"exitCode":3,"exited":true}}}"#),
            (2, "{}"),
        ] {
            b.push(flags);
            b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            b.extend_from_slice(msg.as_bytes());
        }
        assert_eq!(exit_code(b.into()).unwrap(), 3);
        let mut e = vec![2u8];
        let m = br#"{"error":{"code":"not_found"}}"#;
        e.extend_from_slice(&(m.len() as u32).to_be_bytes());
        e.extend_from_slice(m);
        assert!(exit_code(e.into()).is_err());
        assert!(exit_code(Bytes::new()).is_err());
    }
}
