//! `connect`: a TCP connection from inside the sandbox, piped both ways
//! over one stream.
//!
//! The agent lives in the sandbox's network namespace, so `127.0.0.1` is
//! the sandbox's own loopback and a sandbox without a network device is
//! reachable too. Bytes from the socket go out as `Data` frames within the
//! client's window; bytes from the client are written to the socket and
//! only then credited back, so each direction holds at most one window
//! (256 KiB) plus one read buffer. `Eof` from either side half-closes that
//! direction; the stream ends once both are closed, or with an error when
//! the socket fails. A cancelled stream drops the socket at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use dwell_proto::frame::{Kind, DATA_CHUNK};
use dwell_proto::{ErrorKind, Event, RemoteError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::{ClientMsg, StreamCtx};

/// How long a connect may take before it is `unreachable`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `/etc/hosts` the agent reads to resolve a name.
const MAX_HOSTS_FILE: u64 = 1024 * 1024;

/// The addresses `host` names: an IP literal, `localhost`, or a name in
/// the sandbox's `/etc/hosts`. The agent is linked statically and does not
/// use the sandbox's resolver libraries.
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, RemoteError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if host.is_empty() {
        return Err(RemoteError::new(
            ErrorKind::InvalidArgument,
            "connect: the host is empty; give an IP address, localhost or a name from /etc/hosts",
        ));
    }
    let mut found: Vec<IpAddr> = hosts_file_lookup(host);
    if found.is_empty() && host.eq_ignore_ascii_case("localhost") {
        found = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    }
    if found.is_empty() {
        return Err(RemoteError::new(
            ErrorKind::Unreachable,
            format!(
                "connect {host}:{port}: the name is not in the sandbox's /etc/hosts (the agent \
                 resolves IP addresses, localhost and /etc/hosts names only)"
            ),
        ));
    }
    Ok(found
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// The addresses `/etc/hosts` gives `name` (case-insensitive), in file order.
fn hosts_file_lookup(name: &str) -> Vec<IpAddr> {
    // Only a regular file is read, and never waited on (a FIFO there must
    // not hold the agent).
    let Ok(Some(b)) = crate::small_file::read(std::path::Path::new("/etc/hosts"), MAX_HOSTS_FILE)
    else {
        return Vec::new();
    };
    parse_hosts(&String::from_utf8_lossy(&b), name)
}

fn parse_hosts(text: &str, name: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        if words.any(|w| w.eq_ignore_ascii_case(name)) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Connects to the first address that answers.
async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, RemoteError> {
    let mut last = None;
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some((a, e)),
        }
    }
    let (a, e) = last.expect("resolve returns at least one address");
    let mut err = RemoteError::from_io(&format!("connect {a}"), &e);
    if err.kind == ErrorKind::ConnectionRefused {
        err.message = format!(
            "connect {a}: nothing listens on port {} inside the sandbox (connection refused)",
            a.port()
        );
    }
    Err(err)
}

/// How one direction of the pipe finished.
enum Half {
    /// Closed cleanly (end of file passed on).
    Closed,
    /// The stream was cancelled or the connection is gone.
    Gone,
}

/// Serves a `connect` request.
pub async fn connect(mut ctx: StreamCtx, host: String, port: u16) {
    if port == 0 {
        let e = RemoteError::new(ErrorKind::InvalidArgument, "connect: port 0 is not a port");
        return ctx.end::<()>(Err(e)).await;
    }
    let addrs = match resolve(&host, port) {
        Ok(a) => a,
        Err(e) => return ctx.end::<()>(Err(e)).await,
    };
    let sock = match tokio::time::timeout(CONNECT_TIMEOUT, connect_any(&addrs)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return ctx.end::<()>(Err(e)).await,
        Err(_) => {
            let e = RemoteError::new(
                ErrorKind::Unreachable,
                format!(
                    "connect {host}:{port}: no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            );
            return ctx.end::<()>(Err(e)).await;
        }
    };
    let _ = sock.set_nodelay(true);
    let peer = sock
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| format!("{host}:{port}"));
    if ctx
        .event(&Event::Connected { peer: peer.clone() })
        .await
        .is_err()
    {
        return;
    }
    let (mut rd, mut wr) = sock.into_split();
    // The inbound queue is taken out so that both directions run at once
    // (the sending one borrows the context for its window).
    let mut inbound = std::mem::replace(&mut ctx.inbound, tokio::sync::mpsc::unbounded_channel().1);
    let result = {
        let ctx = &ctx;
        let up = async {
            while let Some(m) = inbound.recv().await {
                match m {
                    ClientMsg::Data(b) => {
                        let credit = ctx.credit(b.len());
                        if let Err(e) = wr.write_all(&b).await {
                            return Err(RemoteError::from_io(&format!("write to {peer}"), &e));
                        }
                        credit.release().await;
                    }
                    ClientMsg::Eof => {
                        let _ = wr.shutdown().await;
                        return Ok(Half::Closed);
                    }
                    ClientMsg::Control(_) => {}
                }
            }
            Ok(Half::Gone)
        };
        let down = async {
            let mut buf = vec![0u8; DATA_CHUNK];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => return Err(RemoteError::from_io(&format!("read from {peer}"), &e)),
                };
                if n == 0 {
                    return Ok(match ctx.out.frame(ctx.id, Kind::Eof, b"").await {
                        Ok(()) => Half::Closed,
                        Err(_) => Half::Gone,
                    });
                }
                let chunk = Bytes::copy_from_slice(&buf[..n]);
                if ctx.data(Kind::Data, chunk).await.is_err() {
                    return Ok(Half::Gone);
                }
            }
        };
        tokio::pin!(up, down);
        let (mut up_open, mut down_open) = (true, true);
        loop {
            let r = tokio::select! {
                r = &mut up, if up_open => { up_open = false; r }
                r = &mut down, if down_open => { down_open = false; r }
            };
            match r {
                Err(e) => break Err(e),
                Ok(Half::Gone) => break Ok(false),
                Ok(Half::Closed) if !up_open && !down_open => break Ok(true),
                Ok(Half::Closed) => {}
            }
        }
    };
    match result {
        Ok(true) => ctx.end(Ok(())).await,
        Ok(false) => {} // cancelled: dropping the socket closes it
        Err(e) => ctx.end::<()>(Err(e)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_names_resolve() {
        let text = "127.0.0.1 localhost\n# 10.0.0.9 db\n10.0.0.7 db db.local # peer\n::1 localhost ip6-localhost\n";
        assert_eq!(
            parse_hosts(text, "DB"),
            vec!["10.0.0.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(parse_hosts(text, "localhost").len(), 2);
        assert!(parse_hosts(text, "nope").is_empty());
    }

    #[test]
    fn literals_and_errors() {
        assert_eq!(
            resolve("::1", 80).unwrap(),
            vec!["[::1]:80".parse().unwrap()]
        );
        assert_eq!(resolve("[::1]", 80).unwrap().len(), 1);
        assert_eq!(
            resolve("", 80).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        assert!(!resolve("localhost", 80).unwrap().is_empty());
    }
}
