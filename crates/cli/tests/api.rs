//! End to end: the HTTP API itself: TCP needs an API key; the OpenAPI
//! document is served.

mod common;

use std::io::{Read, Write};

use common::*;

fn http(addr: &str, req: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn tcp_needs_an_api_key_and_the_cli_uses_it() {
    if !can_run() {
        return;
    }
    let port = 20000 + (std::process::id() % 20000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_with(&["--listen", &addr]);
    wait_for(10, "admin key", || d.data.join("admin.key").exists());
    let key = std::fs::read_to_string(d.data.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let r = http(
        &addr,
        "GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert!(r.contains("API key"));
    let r = http(&addr, "GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = http(&addr, &format!("GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = http(
        &addr,
        "GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.contains("\"openapi\""));
    // The CLI over TCP.
    let out = d
        .cmd(&[
            "create", "--name", "remote", "--memory", "128M", "--disk", "256M",
        ])
        .env("DWELL_HOST", &addr)
        .env("DWELL_API_KEY", &key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = d
        .cmd(&["exec", "remote", "--", "echo", "over tcp"])
        .env("DWELL_HOST", &addr)
        .env("DWELL_API_KEY", &key)
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "over tcp\n");
    let out = d
        .cmd(&["ls"])
        .env("DWELL_HOST", &addr)
        .env("DWELL_API_KEY", "nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77));
    // The unix socket is for root only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
