//! The agent survives garbage and silent clients, serves over `--stdio`,
//! accepts reconnects, and reaps orphans when it really is PID 1.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{s, sh, Agent, AGENT};
use dwell_proto::frame::{encode, Kind};
use dwell_proto::{AgentClient, ExecRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

async fn expect_closed(mut s: UnixStream) {
    let mut buf = vec![0u8; 4096];
    let t = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => assert!(t.elapsed() < Duration::from_secs(5)),
            Err(_) => panic!("agent kept a garbage connection open"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_does_not_hurt_other_clients() {
    let a = Agent::start();
    let good = a.client().await;
    // A long-running exec on the good connection must survive too.
    let p = good
        .exec(ExecRequest::shell("sleep 0.5; echo alive"))
        .await
        .unwrap();

    // Raw garbage instead of a handshake.
    let mut g = UnixStream::connect(&a.sock).await.unwrap();
    g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    expect_closed(g).await;

    // An oversized frame header.
    let mut g = UnixStream::connect(&a.sock).await.unwrap();
    g.write_all(&[0xff; 64]).await.unwrap();
    expect_closed(g).await;

    // A valid handshake, then garbage frames.
    let mut g = UnixStream::connect(&a.sock).await.unwrap();
    let hello = format!(
        r#"{{"protocol":{},"software":"test"}}"#,
        dwell_proto::PROTOCOL_VERSION
    );
    g.write_all(&encode(0, Kind::Hello, hello.as_bytes()).unwrap())
        .await
        .unwrap();
    // The agent may drop the connection at the first violation, so a later
    // write can meet a closed socket (EPIPE): that is the point.
    let _ = g
        .write_all(&encode(5, Kind::Request, b"{not json").unwrap())
        .await;
    let _ = g
        .write_all(&encode(6, Kind::Stdout, b"agents send this, not clients").unwrap())
        .await;
    let _ = g.write_all(b"\x00\x00\x00\x05\x00\x00\x00\x01\x99").await;
    expect_closed(g).await;

    // A wrong protocol version is refused with a reason.
    let mut g = UnixStream::connect(&a.sock).await.unwrap();
    g.write_all(&encode(0, Kind::Hello, br#"{"protocol":999,"software":"future"}"#).unwrap())
        .await
        .unwrap();
    expect_closed(g).await;

    // A client that connects and says nothing does not block anyone.
    let _silent = UnixStream::connect(&a.sock).await.unwrap();

    let o = p.output(1 << 24).await.unwrap();
    assert_eq!(s(&o.stdout), "alive\n");
    assert_eq!(
        sh(&good, "echo still-serving").await.stdout,
        b"still-serving\n"
    );
    let fresh = a.client().await;
    assert!(fresh.health().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_json_is_a_remote_error_not_a_disconnect() {
    let a = Agent::start();
    let mut g = UnixStream::connect(&a.sock).await.unwrap();
    let hello = format!(
        r#"{{"protocol":{},"software":"test"}}"#,
        dwell_proto::PROTOCOL_VERSION
    );
    g.write_all(&encode(0, Kind::Hello, hello.as_bytes()).unwrap())
        .await
        .unwrap();
    g.write_all(&encode(3, Kind::Request, br#"{"op":"no_such_op"}"#).unwrap())
        .await
        .unwrap();
    g.write_all(&encode(4, Kind::Request, br#"{"op":"health"}"#).unwrap())
        .await
        .unwrap();
    let mut r = dwell_proto::frame::FrameReader::new(g);
    let hello = r.next().await.unwrap().unwrap();
    assert_eq!(hello.kind, Kind::Hello);
    let f = r.next().await.unwrap().unwrap();
    assert_eq!((f.stream, f.kind), (3, Kind::End));
    assert!(
        s(&f.payload).contains("invalid_argument"),
        "{}",
        s(&f.payload)
    );
    let f = r.next().await.unwrap().unwrap();
    assert_eq!((f.stream, f.kind), (4, Kind::End));
    assert!(s(&f.payload).contains("uptime_ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_many_times() {
    let a = Agent::start();
    for i in 0..20 {
        let c = a.client().await;
        assert_eq!(
            sh(&c, &format!("echo {i}")).await.stdout,
            format!("{i}\n").as_bytes()
        );
    }
    // The socket is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&a.sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_stdio_pipes() {
    let mut child = tokio::process::Command::new(AGENT)
        .arg("--stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let c = AgentClient::from_stream(tokio::io::join(stdout, stdin))
        .await
        .unwrap();
    let o = sh(&c, "echo over-stdio; echo e >&2; exit 4").await;
    assert_eq!(
        (s(&o.stdout).as_str(), s(&o.stderr).as_str(), o.status.code),
        ("over-stdio\n", "e\n", Some(4))
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x");
    let mut w = c
        .write_file(f.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    w.write(bytes::Bytes::from_static(b"data")).await.unwrap();
    w.finish().await.unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), b"data");
    // No socket to stop listening on: refused with the reason.
    match c.unlisten().await {
        Err(dwell_proto::Error::Remote(e)) => {
            assert_eq!(e.kind, dwell_proto::ErrorKind::InvalidArgument);
            assert!(e.message.contains("stdio"), "{}", e.message);
        }
        other => panic!("unlisten over stdio: {other:?}"),
    }
    drop(c);
    // Not PID 1: the agent exits when its only connection ends.
    let st = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success());
}

/// An agent that really is PID 1 of a new pid namespace.
struct Pid1Agent {
    child: std::process::Child,
    sock: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Pid1Agent {
    fn drop(&mut self) {
        // --kill-child: the agent (PID 1 of the namespace, and with it every
        // process in the namespace) dies with unshare.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaps_orphans_as_pid1() {
    let ok = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        println!(
            "SKIP reaps_orphans_as_pid1: `unshare --pid --fork --mount-proc` is unavailable here"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(AGENT)
        .arg("--listen")
        .arg(&sock)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let a = Pid1Agent {
        child,
        sock,
        _dir: dir,
    };
    let t = Instant::now();
    while !a.sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "agent socket never appeared"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c = AgentClient::connect_unix(&a.sock).await.unwrap();
    assert_eq!(s(&sh(&c, "echo $PPID").await.stdout), "1\n");
    // The grandchild is orphaned and re-parented to the agent.
    let o = sh(&c, "sleep 0.1 & echo $!; exit 0").await;
    let orphan: u32 = s(&o.stdout).trim().parse().unwrap();
    assert_eq!(o.status.code, Some(0));
    let t = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let st = c.stat(&format!("/proc/{orphan}")).await;
        if st.is_err() {
            break; // reaped: the pid is gone entirely
        }
        let stat = c.read_file(&format!("/proc/{orphan}/stat")).await;
        let text = match stat {
            Ok(r) => s(&r.read_to_end(1 << 24).await.unwrap_or_default()),
            Err(_) => break,
        };
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "orphan {orphan} was not reaped: {text}"
        );
    }
    // Many orphans at once, and no zombie anywhere afterwards.
    sh(&c, "for i in 1 2 3 4 5 6 7 8; do (sleep 0.05 &) ; done").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = sh(
        &c,
        "cat /proc/[0-9]*/stat 2>/dev/null | awk '{print $3}' | grep -c Z || true",
    )
    .await;
    assert_eq!(s(&o.stdout).trim(), "0", "zombies left in the sandbox");
    let h = c.health().await.unwrap();
    assert!(h.pid_count <= 3, "unexpected processes: {h:?}");
}

/// SIGUSR1 takes the socket and every connection down (for a checkpoint),
/// SIGUSR2 brings the socket back; background processes live through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisten_and_relisten_keep_background_processes() {
    let a = Agent::start();
    let c = a.client().await;
    let mut req = dwell_proto::ExecRequest::shell(
        "i=0; while true; do i=$((i+1)); echo $i > n; sleep 0.05; done",
    );
    req.background = true;
    req.cwd = Some(a.dir.path().display().to_string());
    let bg = c.exec(req).await.unwrap();
    let pid = bg.pid();
    drop(bg);
    unsafe { libc::kill(a.pid() as i32, libc::SIGUSR1) };
    a.wait_socket_gone().await;
    assert!(
        c.health().await.is_err(),
        "an old connection survived SIGUSR1"
    );
    assert!(dwell_proto::AgentClient::connect_unix(&a.sock)
        .await
        .is_err());
    unsafe { libc::kill(a.pid() as i32, libc::SIGUSR2) };
    a.wait_for_socket();
    let c = a.client().await;
    let list = c.processes().await.unwrap();
    assert!(
        list.iter().any(|p| p.pid == pid && p.running),
        "the background process did not survive"
    );
    // The shell truncates `n` before each write, so a read can land in
    // between and find it empty: read again then.
    let number = || async {
        for _ in 0..50 {
            if let Some(n) = std::fs::read_to_string(a.dir.path().join("n"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
            {
                return n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("n never held a number");
    };
    let n1 = number().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let n2 = number().await;
    assert!(n2 > n1, "the counter did not continue ({n1} -> {n2})");
}

/// The `unlisten` request does what SIGUSR1 does; a SIGUSR1 arriving too
/// (the runtime's fallback for the same checkpoint) does not take the
/// socket down again once the agent listens anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisten_request_then_a_late_signal_keeps_the_new_socket() {
    let a = Agent::start();
    let c = a.client().await;
    c.unlisten().await.expect("unlisten");
    a.wait_socket_gone().await;
    assert!(c.health().await.is_err(), "the old connection survived");
    // The fallback's signal for the same checkpoint, while not listening.
    unsafe { libc::kill(a.pid() as i32, libc::SIGUSR1) };
    tokio::time::sleep(Duration::from_millis(100)).await;
    unsafe { libc::kill(a.pid() as i32, libc::SIGUSR2) };
    a.wait_for_socket();
    let c = a.client().await;
    // Still listening a while later: the late SIGUSR1 was forgotten.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.sock.exists(), "a stale SIGUSR1 took the new socket down");
    c.health().await.expect("health after relisten");
    // And a second round works the same.
    c.unlisten().await.expect("unlisten again");
    a.wait_socket_gone().await;
}
