//! `connect` tunnels through the real agent: echo, refused and unreachable
//! targets, half-close in both directions, a large transfer both ways,
//! many tunnels at once on one connection, and cancellation.
//!
//! The agent runs on the host here, so its loopback is the test's: the
//! servers are tokio listeners on 127.0.0.1 in the test process.

mod common;

use std::time::Duration;

use common::Agent;
use dwell_proto::ErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that echoes every connection until the peer half-closes,
/// then closes. Returns its port.
async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

/// A port nothing listens on (bound, then closed).
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_through_a_tunnel() {
    let a = Agent::start();
    let c = a.client().await;
    let port = echo_server().await;
    let mut t = c.connect_tcp("127.0.0.1", port).await.unwrap();
    assert_eq!(t.peer(), format!("127.0.0.1:{port}"));
    t.write_all(b"hello tunnel").await.unwrap();
    let mut buf = [0u8; 12];
    t.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello tunnel");
    t.shutdown().await.unwrap();
    let mut rest = Vec::new();
    t.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    // Names: localhost resolves without the sandbox's resolver.
    let mut t = c.connect_tcp("localhost", port).await.unwrap();
    t.write_all(b"x").await.unwrap();
    t.shutdown().await.unwrap();
    let mut all = Vec::new();
    t.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, b"x");
    // The connection is still usable for other requests.
    assert!(c.health().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_unresolvable_and_invalid_targets() {
    let a = Agent::start();
    let c = a.client().await;
    let port = closed_port().await;
    let e = c.connect_tcp("127.0.0.1", port).await.unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::ConnectionRefused), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("nothing listens on port {port}")),
        "{e}"
    );
    let e = c.connect_tcp("no-such-name.invalid", 80).await.unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::Unreachable), "{e}");
    assert!(e.to_string().contains("/etc/hosts"), "{e}");
    let e = c.connect_tcp("127.0.0.1", 0).await.unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::InvalidArgument), "{e}");
    let e = c.connect_tcp("", 80).await.unwrap_err();
    assert_eq!(e.remote_kind(), Some(ErrorKind::InvalidArgument), "{e}");
    assert!(c.health().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_in_both_directions() {
    let a = Agent::start();
    let c = a.client().await;

    // Client half-closes first: the server reads to EOF, then answers.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(format!("got {} bytes", got.len()).as_bytes())
            .await
            .unwrap();
        s.shutdown().await.unwrap();
    });
    let mut t = c.connect_tcp("127.0.0.1", port).await.unwrap();
    t.write_all(&[7u8; 1000]).await.unwrap();
    t.shutdown().await.unwrap();
    let mut answer = String::new();
    t.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "got 1000 bytes");
    server.await.unwrap();

    // Server half-closes first: the client sees EOF and can still send.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (mut r, mut w) = s.into_split();
        w.write_all(b"banner").await.unwrap();
        w.shutdown().await.unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut t = c.connect_tcp("127.0.0.1", port).await.unwrap();
    let mut banner = Vec::new();
    t.read_to_end(&mut banner).await.unwrap();
    assert_eq!(banner, b"banner");
    t.write_all(b"after the server's eof").await.unwrap();
    t.shutdown().await.unwrap();
    assert_eq!(server.await.unwrap(), b"after the server's eof");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfer_both_ways() {
    let a = Agent::start();
    let c = a.client().await;
    let port = echo_server().await;
    let t = c.connect_tcp("127.0.0.1", port).await.unwrap();
    let (mut r, mut w) = tokio::io::split(t);
    const LEN: usize = 64 << 20;
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        let mut i = 0u8;
        while sent < LEN {
            let chunk: Vec<u8> = (0..100_000usize).map(|j| i.wrapping_add(j as u8)).collect();
            let n = chunk.len().min(LEN - sent);
            w.write_all(&chunk[..n]).await.unwrap();
            sent += n;
            i = i.wrapping_add(1);
        }
        w.shutdown().await.unwrap();
    });
    let mut got = 0usize;
    let mut sum = 0u64;
    let mut buf = vec![0u8; 100_000];
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        sum = buf[..n]
            .iter()
            .fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(*b as u64));
        got += n;
    }
    writer.await.unwrap();
    assert_eq!(got, LEN);
    // The same checksum over the bytes sent.
    let mut want = 0u64;
    let mut sent = 0usize;
    let mut i = 0u8;
    while sent < LEN {
        let n = 100_000usize.min(LEN - sent);
        for j in 0..n {
            want = want
                .wrapping_mul(31)
                .wrapping_add(i.wrapping_add(j as u8) as u64);
        }
        sent += n;
        i = i.wrapping_add(1);
    }
    assert_eq!(sum, want, "the bytes came back changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tunnels_at_once() {
    let a = Agent::start();
    let c = a.client().await;
    let port = echo_server().await;
    let mut tasks = Vec::new();
    for i in 0..100u32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = c.connect_tcp("127.0.0.1", port).await.unwrap();
            let msg = format!("tunnel {i} ").repeat(1000);
            let (mut r, mut w) = tokio::io::split(&mut t);
            let send = async {
                w.write_all(msg.as_bytes()).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut back = String::new();
            let recv = r.read_to_string(&mut back);
            let ((), n) = tokio::join!(send, recv);
            n.unwrap();
            assert_eq!(back, msg);
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("tunnels finish")
            .unwrap();
    }
    assert!(c.health().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_tunnel_closes_the_socket_and_a_reset_is_an_error() {
    let a = Agent::start();
    let c = a.client().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let t = c.connect_tcp("127.0.0.1", port).await.unwrap();
    let (mut s, _) = l.accept().await.unwrap();
    drop(t);
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the agent closes the socket when the tunnel is dropped");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

    // The server resets the connection: the tunnel's reader gets an error.
    let mut t = c.connect_tcp("127.0.0.1", port).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    // SO_LINGER 0 makes the close send a reset (and does not block).
    #[allow(deprecated)]
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
    let mut all = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), t.read_to_end(&mut all))
        .await
        .expect("the reset reaches the tunnel");
    let e = r.expect_err("a reset is not a clean end of file");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    assert!(c.health().await.is_ok());
}
