//! Item 7 of issue 11: a bounded daemon. Neither a sandbox nor a client can
//! make the daemon hold unbounded memory, connections or disk:
//!
//! * a sandbox floods a directory watch whose client stopped reading: the
//!   daemon's RSS stays bounded, the stream ends with a clear error, and a
//!   neighbour keeps working;
//! * a create above the daemon's per-sandbox ceilings, or above the
//!   default quota of a tenant without a record, is refused;
//! * a revoked API key gets 401 on the REST and the E2B listeners;
//! * a signed file URL without an expiration stops working after the
//!   daemon's lifetime for such URLs;
//! * the REST listener serves at most `--max-connections` at once and
//!   drops a client that never finishes its headers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::support::*;

/// One request: (status, body as text).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let r = http::request(addr, method, path, headers, body);
    (r.status, r.text())
}

/// A daemon with the E2B listeners; returns it with (api, envd) addresses
/// and the admin key (whose tenant, `default`, owns `dwell create`'s sandboxes).
fn e2b_daemon(extra: &[&str]) -> (Daemon, String, String, String) {
    let (d, E2bListeners { api, envd }) = Daemon::start_e2b(extra);
    let key = d.admin_key();
    (d, api, envd, key)
}

/// The envd access token of sandbox `id` (E2B connect with the admin key).
fn envd_token(api: &str, key: &str, id: &str) -> String {
    let (status, body) = http(
        api,
        "POST",
        &format!("/sandboxes/{id}/connect"),
        &[("X-API-KEY", key), ("Content-Type", "application/json")],
        br#"{"timeout":600}"#,
    );
    assert!(status == 200 || status == 201, "connect: {status} {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["envdAccessToken"].as_str().unwrap().to_string()
}

/// A TCP connection to `addr` with a small receive buffer, so that a
/// client that stops reading pushes back on the daemon at once.
fn slow_reader(addr: &str) -> TcpStream {
    let sa: std::net::SocketAddrV4 = addr.parse().unwrap();
    // SAFETY: plain socket calls on a fresh descriptor that we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let small: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &small as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        );
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: sa.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*sa.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            &sin as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(r, 0, "connect {addr}");
        TcpStream::from_raw_fd(fd)
    }
}

/// Reads a streaming response (head included in `buf`) to its end:
/// the end-of-stream envelope and the chunked body's last chunk, or `secs`
/// pass; returns (`filesystem` messages, the end envelope's JSON).
fn read_stream_end(s: &mut TcpStream, mut buf: Vec<u8>, secs: u64) -> (usize, Option<Value>) {
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let t0 = Instant::now();
    let mut chunk = vec![0u8; 1 << 16];
    while t0.elapsed() < Duration::from_secs(secs) && !buf.ends_with(b"\r\n0\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
    }
    let body = http::parse(&buf).text();
    let messages = body.matches("\"filesystem\"").count();
    // The end envelope is the last one: flag 2, then its JSON.
    let end = body
        .rfind("{\"error\"")
        .and_then(|i| serde_json::from_str(&body[i..]).ok());
    (messages, end)
}

#[test]
fn a_flooded_watch_whose_client_stopped_reading_keeps_the_daemon_bounded() {
    if !can_run() {
        return;
    }
    let (d, api, envd, key) = e2b_daemon(&[]);
    let pid = d.pid().unwrap();
    for rt in runtimes() {
        let name = format!("flood-{rt}");
        // A volume with inodes for the flood (ext4 makes one per 16 KiB).
        let id = create_bare_on(&d, &name, rt, &["--memory", "256M", "--disk", "2G"]);
        let neighbour = format!("calm-{rt}");
        create_on(&d, &neighbour, rt);
        d.sh(&name, "mkdir -p /root/flood");
        let token = envd_token(&api, &key, &id);
        let mut s = slow_reader(&envd);
        let body = envelope(&json!({"path": "/root/flood", "recursive": false}));
        let head = format!(
            "POST /filesystem.Filesystem/WatchDir HTTP/1.1\r\nHost: {envd}\r\nE2b-Sandbox-Id: {id}\r\nX-Access-Token: {token}\r\nContent-Type: application/connect+json\r\nConnect-Protocol-Version: 1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
        // Take the response head and the `start` message, then stop reading.
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut first = vec![0u8; 512];
        let n = s.read(&mut first).unwrap();
        first.truncate(n);
        let text = String::from_utf8_lossy(&first).into_owned();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        std::thread::sleep(Duration::from_millis(500));
        let before = rss_kib(pid);
        // The sandbox makes 60000 files (two events each) while nobody reads.
        let t0 = Instant::now();
        d.sh(
            &name,
            "cd /root/flood && i=0; while [ $i -lt 60000 ]; do : > f$i; i=$((i+1)); done; echo done",
        );
        std::thread::sleep(Duration::from_secs(2));
        let after = rss_kib(pid);
        eprintln!(
            "{rt}: daemon RSS {before} KiB before, {after} KiB after the flood ({:?})",
            t0.elapsed()
        );
        assert!(
            after < before + 48 * 1024,
            "{rt}: the daemon grew from {before} KiB to {after} KiB while a watch went unread"
        );
        // The neighbour (and the flooding sandbox) still work.
        assert_eq!(d.sh(&neighbour, "echo alive").trim(), "alive");
        assert_eq!(d.sh(&name, "ls /root/flood | wc -l").trim(), "60000");
        // Reading again: the queued events, then the stream's clear end
        // (the reader fell behind, or the kernel's queue overflowed).
        let (messages, end) = read_stream_end(&mut s, first, 120);
        let end = end.unwrap_or_else(|| {
            panic!("{rt}: the flooded watch never ended ({messages} events read)")
        });
        let text = end.to_string();
        eprintln!("{rt}: {messages} events read after the flood, then {text}");
        assert!(
            text.contains("fell 4096 events behind") || text.contains("lost"),
            "{rt}: the flooded watch ended without saying why: {text}"
        );
        drop(s);
        d.ok(&["rm", "-f", &name, &neighbour]);
    }
}

#[test]
fn a_create_above_the_daemon_ceilings_is_refused() {
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(&[
        "--max-sandbox-memory",
        "512M",
        "--max-sandbox-pids",
        "200",
        "--max-sandbox-disk",
        "1G",
    ]);
    for rt in runtimes() {
        for (flag, value, ceiling) in [
            ("--memory", "1G", "--max-sandbox-memory"),
            ("--pids", "300", "--max-sandbox-pids"),
            ("--disk", "2G", "--max-sandbox-disk"),
        ] {
            let mut args = vec!["create", "--name", "big", "--isolation", rt, flag, value];
            for (f, v) in [("--memory", "256M"), ("--disk", "512M")] {
                if f != flag {
                    args.extend([f, v]);
                }
            }
            let out = d.run(&args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(64), "{rt} {flag} {value}: {err}");
            assert!(
                err.contains("ceiling") && err.contains(ceiling),
                "{rt} {flag} {value}: {err}"
            );
        }
        // Nothing was made; a sandbox within the ceilings works.
        assert!(
            !d.run(&["inspect", "big"]).status.success(),
            "{rt}: a refused create left a sandbox"
        );
        let ok = format!("fits-{rt}");
        create_bare_on(
            &d,
            &ok,
            rt,
            &["--pids", "200", "--memory", "512M", "--disk", "1G"],
        );
        // Sizes not given are lowered to the ceilings, not refused.
        let dflt = format!("default-{rt}");
        create_bare_on(&d, &dflt, rt, &[]);
        let spec = &d.inspect(&dflt)["spec"];
        assert_eq!(
            (spec["pids"].as_u64(), spec["memory_bytes"].as_u64()),
            (Some(200), Some(512 << 20)),
            "{spec}"
        );
        d.ok(&["rm", "-f", &dflt]);
        assert_eq!(d.sh(&ok, "echo fine").trim(), "fine");
        d.ok(&["rm", "-f", &ok]);
    }
}

#[test]
fn a_tenant_without_a_record_is_held_to_the_default_quota() {
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(&["--default-max-sandboxes", "1", "--default-max-memory", "1G"]);
    let v: Value = serde_json::from_str(&d.ok(&["tenant", "ls", "--json"])).unwrap();
    let default = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "default")
        .unwrap_or_else(|| panic!("tenant ls does not show the default tenant: {v}"));
    assert_eq!(default["default_quota"], true, "{default}");
    assert_eq!(default["max_sandboxes"], 1, "{default}");
    assert_eq!(default["max_memory"], 1u64 << 30, "{default}");
    assert!(d.ok(&["tenant", "ls"]).contains("default (default quota)"));
    for rt in runtimes() {
        let first = format!("one-{rt}");
        create_on(&d, &first, rt);
        let out = d.run(&[
            "create",
            "--name",
            "two",
            "--isolation",
            rt,
            "--memory",
            "256M",
        ]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{rt}: a second sandbox was allowed");
        assert!(
            err.contains("sandboxes quota") && err.contains("limit 1"),
            "{rt}: {err}"
        );
        assert_eq!(d.sh(&first, "echo still").trim(), "still");
        d.ok(&["rm", "-f", &first]);
    }
}

#[test]
fn a_revoked_key_is_refused_on_the_rest_and_e2b_listeners() {
    if !can_run() {
        return;
    }
    let rest = format!("127.0.0.1:{}", free_port());
    let (d, api, _envd, _admin) = e2b_daemon(&["--listen", &rest]);
    wait_listening(&rest, 20);
    let key = d.ok(&["tenant", "create", "acme"]).trim().to_string();
    let bearer = format!("Bearer {key}");
    let (s, b) = http(
        &rest,
        "GET",
        "/v1/sandboxes",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = http(&api, "GET", "/v2/sandboxes", &[("X-API-KEY", &key)], b"");
    assert_eq!(s, 200, "{b}");
    let listed = d.ok(&["tenant", "key", "ls", "acme", "--json"]);
    assert!(!listed.contains(&key), "key ls shows the secret: {listed}");
    let keys: Value = serde_json::from_str(&listed).unwrap();
    let k = &keys.as_array().unwrap()[0];
    assert!(k["last_used_at"].is_i64(), "{k}");
    assert!(k["revoked_at"].is_null(), "{k}");
    let id = k["id"].as_str().unwrap().to_string();
    // A second key of the tenant stays valid.
    let other = d.ok(&["tenant", "key", "acme"]).trim().to_string();
    let out = d.ok(&["tenant", "key", "revoke", "acme", &id]);
    assert!(out.contains(&id), "{out}");
    let (s, b) = http(
        &rest,
        "GET",
        "/v1/sandboxes",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(s, 401, "{b}");
    assert!(b.contains("revoked"), "{b}");
    let (s, b) = http(&api, "GET", "/v2/sandboxes", &[("X-API-KEY", &key)], b"");
    assert_eq!(s, 401, "{b}");
    assert!(b.contains("revoked"), "{b}");
    let (s, b) = http(&api, "GET", "/v2/sandboxes", &[("X-API-KEY", &other)], b"");
    assert_eq!(s, 200, "{b}");
    let keys: Value =
        serde_json::from_str(&d.ok(&["tenant", "key", "ls", "acme", "--json"])).unwrap();
    let k = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap();
    assert!(k["revoked_at"].is_i64(), "{k}");
    // An unknown key id: 404 that says how to list them.
    let out = d.run(&["tenant", "key", "revoke", "acme", "key-nope"]);
    assert!(
        !out.status.success() && stderr(&out).contains("tenant key ls"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_signed_url_without_an_expiration_expires() {
    if !can_run() {
        return;
    }
    let (d, api, envd, key) = e2b_daemon(&["--signed-url-lifetime", "3s"]);
    for rt in runtimes() {
        let name = format!("signed-{rt}");
        let id = create_on(&d, &name, rt);
        d.sh(&name, "echo secret > /tmp/s.txt");
        let token = envd_token(&api, &key, &id);
        let url = format!(
            "/files?path=%2Ftmp%2Fs.txt&signature={}",
            signature(&format!("/tmp/s.txt:read::{token}"))
        );
        let (s, b) = http(&envd, "GET", &url, &[], b"");
        assert_eq!((s, b.trim()), (200, "secret"), "{rt}");
        let (s, _) = http(&envd, "GET", &url, &[], b"");
        assert_eq!(s, 200, "{rt}: within its lifetime");
        std::thread::sleep(Duration::from_secs(4));
        let (s, b) = http(&envd, "GET", &url, &[], b"");
        assert_eq!(s, 401, "{rt}: {b}");
        assert!(
            b.contains("expired") && b.contains("use_signature_expiration"),
            "{b}"
        );
        // A URL that carries its own expiration is judged by it.
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let url = format!(
            "/files?path=%2Ftmp%2Fs.txt&signature={}&signature_expiration={exp}",
            signature(&format!("/tmp/s.txt:read::{token}:{exp}"))
        );
        let (s, _) = http(&envd, "GET", &url, &[], b"");
        assert_eq!(s, 200, "{rt}: an explicit expiration");
        assert_eq!(d.sh(&name, "cat /tmp/s.txt").trim(), "secret");
        d.ok(&["rm", "-f", &name]);
    }
}

#[test]
fn the_rest_listener_caps_connections_and_drops_slow_headers() {
    if !can_run() {
        return;
    }
    let rest = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(&[
        "--listen",
        &rest,
        "--max-connections",
        "2",
        "--header-timeout",
        "2s",
    ]);
    wait_listening(&rest, 20);
    // wait_listening's probe connections may still hold slots: let the
    // header timeout drop them.
    std::thread::sleep(Duration::from_secs(3));
    // Two clients that never finish their headers take both slots.
    let mut slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(&rest).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A third is not served while they hold them...
    let t0 = Instant::now();
    let mut third = TcpStream::connect(&rest).unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(
        third.read(&mut buf).is_err(),
        "a connection above the cap was served at once"
    );
    // ...and is once the header timeout dropped the slow ones.
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw = Vec::new();
    let _ = third.read_to_end(&mut raw);
    let r = http::parse(&raw);
    let (status, body) = (r.status, r.text());
    assert_eq!(
        (status, body.trim()),
        (200, "ok"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest_of = Vec::new();
        // Closed by the daemon (EOF, maybe after a 408), not left hanging.
        match s.read_to_end(&mut rest_of) {
            Ok(_) => {}
            Err(e) => assert!(
                e.kind() == std::io::ErrorKind::ConnectionReset,
                "a client that never finished its headers was kept: {e}"
            ),
        }
    }
    // The daemon still serves everyone.
    d.ok(&["ls"]);
}
