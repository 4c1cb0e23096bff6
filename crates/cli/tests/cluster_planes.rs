//! A cluster of three dwell daemons (one PostgreSQL, one moto bucket),
//! each with every listener: the E2B control plane (`--e2b-listen`), the
//! envd data plane (`--e2b-sandbox-listen`), the port proxy
//! (`--proxy-listen`) and the SSH gateway (`--ssh-listen`). A sandbox
//! created through n1's E2B API is placed on n2 (the node with room) and
//! is then served by n2 through n1 and n3 alike: E2B control calls
//! (info, timeout, pause, connect), envd process and file calls (by
//! header, and by `49983-ID` host through the proxy), a proxied HTTP port,
//! a WebSocket-style upgrade and a CONNECT tunnel; an SSH login on n1
//! runs a command in it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use dwell_testkit::cluster::Cluster;
use serde_json::{json, Value};

const DOMAIN: &str = "dwell.test";

/// The listeners of one node.
#[derive(Clone)]
struct Listeners {
    api: String,
    envd: String,
    proxy: String,
    ssh: u16,
}

/// A server on port 8765, in plain python3: an `Upgrade` request gets a
/// 101 and then its bytes echoed; any other request its own request line.
const ECHO_SERVER: &str = r#"
import socket, threading
def serve(c):
    data = b''
    while b'\r\n\r\n' not in data:
        d = c.recv(4096)
        if not d: return
        data += d
    head, rest = data.split(b'\r\n\r\n', 1)
    if b'upgrade: echo' not in head.lower():
        line = head.split(b'\r\n')[0]
        c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n' % len(line) + line)
        c.close()
        return
    c.sendall(b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n')
    if rest: c.sendall(rest)
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 8765)); s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

fn start() -> Option<(Cluster, Vec<Listeners>)> {
    let l: Vec<Listeners> = (0..3)
        .map(|_| Listeners {
            api: format!("127.0.0.1:{}", free_port()),
            envd: format!("127.0.0.1:{}", free_port()),
            proxy: format!("127.0.0.1:{}", free_port()),
            ssh: free_port(),
        })
        .collect();
    let flags = l.clone();
    let c = Cluster::start(3, move |i| {
        let mem = ["2G", "8G", "4G"][i];
        let n = &flags[i];
        [
            "--node-capacity",
            &format!("vcpus=8,memory={mem},disk=50G"),
            "--e2b-listen",
            &n.api,
            "--e2b-sandbox-listen",
            &n.envd,
            "--proxy-listen",
            &n.proxy,
            "--domain",
            DOMAIN,
            "--ssh-listen",
            &format!("127.0.0.1:{}", n.ssh),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    })?;
    for n in &l {
        wait_listening(&n.api, 30);
        wait_listening(&n.envd, 30);
        wait_listening(&n.proxy, 30);
        wait_listening(&format!("127.0.0.1:{}", n.ssh), 30);
    }
    Some((c, l))
}

/// An E2B control-plane call to `api` with `key`.
fn e2b(api: &str, key: &str, method: &str, path: &str, body: &[u8]) -> Response {
    http::request(
        api,
        method,
        path,
        &[("X-API-KEY", key), ("Content-Type", "application/json")],
        body,
    )
}

/// Process.Start of `sh -c script` through envd at `addr` (with `host` as
/// the Host header when given): what it wrote to stdout.
fn envd_sh(addr: &str, host: Option<&str>, id: &str, token: &str, script: &str) -> String {
    let mut h = vec![
        ("E2b-Sandbox-Id", id),
        ("X-Access-Token", token),
        ("Content-Type", "application/connect+json"),
        ("Connect-Protocol-Version", "1"),
    ];
    if let Some(host) = host {
        h.push(("Host", host));
        h.remove(0);
    }
    let r = http::request(
        addr,
        "POST",
        "/process.Process/Start",
        &h,
        &envelope(&json!({"process": {"cmd": "/bin/sh", "args": ["-c", script]}, "stdin": false})),
    );
    assert_eq!(r.status, 200, "{r}");
    let ev = envelopes(&r.body);
    let end = &ev[ev.len() - 2].1["event"]["end"];
    assert_eq!(end["status"], "exit status 0", "{ev:?}");
    ev.iter()
        .filter_map(|(_, v)| v["event"]["data"]["stdout"].as_str())
        .map(|s| String::from_utf8_lossy(&unb64(s)).into_owned())
        .collect()
}

/// A file read through envd at `addr`.
fn envd_read(addr: &str, id: &str, token: &str, path: &str) -> Response {
    http::request(
        addr,
        "GET",
        &format!("/files?path={path}&username=root"),
        &[("E2b-Sandbox-Id", id), ("X-Access-Token", token)],
        b"",
    )
}

/// The head of an HTTP answer read from `c`.
fn read_head(c: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if c.read(&mut b).unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn every_plane_is_served_by_the_owner_through_any_node() {
    if !can_run() {
        return;
    }
    let Some((c, l)) = start() else { return };
    let (n1, n3) = (c.node(0), c.node(2));
    let key = n1.tenant_key("planes");

    // Created through n1, placed on n2 (the most room).
    let r = e2b(
        &l[0].api,
        &key,
        "POST",
        "/v2/sandboxes",
        br#"{"templateID":"host","timeout":600,"metadata":{"k":"v"},"envVars":{}}"#,
    );
    assert_eq!(r.status, 201, "{r}");
    let v = r.json();
    let id = v["sandboxID"].as_str().unwrap().to_string();
    let token = v["envdAccessToken"].as_str().unwrap().to_string();
    let as_tenant = |args: &[&str]| {
        let mut cmd = n1.cmd(args);
        cmd.env("DWELL_AS_TENANT", "planes");
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let owner: Value = serde_json::from_str(&as_tenant(&["inspect", &id, "--json"])).unwrap();
    assert_eq!(owner["node"], "n2", "{owner}");

    // The E2B control plane, through n1 and n3.
    for n in [&l[0], &l[2]] {
        let r = e2b(&n.api, &key, "GET", &format!("/sandboxes/{id}"), b"");
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.json()["sandboxID"], id.as_str());
        assert_eq!(r.json()["metadata"]["k"], "v");
        let r = e2b(
            &n.api,
            &key,
            "POST",
            &format!("/sandboxes/{id}/timeout"),
            br#"{"timeout":900}"#,
        );
        assert_eq!(r.status, 204, "{r}");
    }
    // Another tenant's key sees nothing of it, through any node.
    let other = n3.tenant_key("other");
    let r = e2b(&l[2].api, &other, "GET", &format!("/sandboxes/{id}"), b"");
    assert_eq!(r.status, 404, "{r}");

    // envd, through n1 and n3, by header; and by host through n3's proxy.
    assert_eq!(
        envd_sh(
            &l[0].envd,
            None,
            &id,
            &token,
            "echo one > /root/f; echo written"
        ),
        "written\n"
    );
    let r = envd_read(&l[2].envd, &id, &token, "/root/f");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body, b"one\n");
    let host = format!("49983-{id}.{DOMAIN}");
    assert_eq!(
        envd_sh(&l[2].proxy, Some(&host), &id, &token, "cat /root/f"),
        "one\n"
    );
    // A wrong token is refused by the owner.
    let r = envd_read(&l[0].envd, &id, "wrong", "/root/f");
    assert_eq!(r.status, 401, "{r}");
    spoofed_node_headers_reach_no_rest_api(&l, &id);

    // Pause through n3, connect (resume) through n1: the files stay.
    let r = e2b(
        &l[2].api,
        &key,
        "POST",
        &format!("/sandboxes/{id}/pause"),
        b"",
    );
    assert_eq!(r.status, 204, "{r}");
    let r = e2b(
        &l[0].api,
        &key,
        "POST",
        &format!("/sandboxes/{id}/connect"),
        br#"{"timeout":600}"#,
    );
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(
        envd_sh(&l[2].envd, None, &id, &token, "cat /root/f"),
        "one\n"
    );

    // A port of the sandbox (E2B exposes every port publicly), through the
    // proxy of n1 and n3: HTTP, an upgrade, a CONNECT tunnel.
    as_tenant(&["exec", "-d", &id, "--", "python3", "-c", ECHO_SERVER]);
    envd_sh(
        &l[0].envd,
        None,
        &id,
        &token,
        "for i in $(seq 100); do python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8765))\" 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
    );
    let port_host = format!("8765-{id}.{DOMAIN}");
    for n in [&l[0], &l[2]] {
        let r = http::request(&n.proxy, "GET", "/hello", &[("Host", &port_host)], b"");
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.text(), "GET /hello HTTP/1.1");

        let mut s = TcpStream::connect(&n.proxy).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "GET /ws HTTP/1.1\r\nHost: {port_host}\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
        )
        .unwrap();
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        for msg in [&b"through another node"[..], &[7u8; 100_000][..]] {
            s.write_all(msg).unwrap();
            let mut back = vec![0u8; msg.len()];
            s.read_exact(&mut back).unwrap();
            assert_eq!(back, msg);
        }
        drop(s);

        let target = format!("{port_host}:80");
        let mut s = TcpStream::connect(&n.proxy).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        write!(s, "GET /tunnel HTTP/1.0\r\n\r\n").unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        assert!(all.ends_with("GET /tunnel HTTP/1.0"), "{all}");
    }

    ssh_through_n1(&c, &l[0], &id);

    // Killed through n3.
    let r = e2b(&l[2].api, &key, "DELETE", &format!("/sandboxes/{id}"), b"");
    assert_eq!(r.status, 204, "{r}");
    let r = e2b(&l[0].api, &key, "GET", &format!("/sandboxes/{id}"), b"");
    assert_eq!(r.status, 404, "{r}");
}

/// The attack of a client of envd or the port proxy, which need no API
/// key: it names the sandbox of another node, sends the headers nodes use
/// for a caller (an admin, from the unix socket) and lists the plane mark
/// in `Connection`, so that a forwarder dropping what `Connection` names
/// would send it to the owner's REST API as that admin. The owner serves
/// it with the plane it came to (or refuses it): never the REST API.
fn spoofed_node_headers_reach_no_rest_api(l: &[Listeners], id: &str) {
    let spoof = [
        ("Connection", "keep-alive, x-dwell-plane, x-dwell-client"),
        ("x-dwell-plane", "agent"),
        ("x-dwell-forwarded-tenant", "planes"),
        ("x-dwell-forwarded-admin", "1"),
        ("x-dwell-forwarded-key-id", "local"),
        ("x-dwell-forwarded-credential", "key:none"),
    ];
    let path = format!("/v1/sandboxes/{id}");
    let mut h = vec![("E2b-Sandbox-Id", id)];
    h.extend_from_slice(&spoof);
    let r = http::request(&l[0].envd, "GET", &path, &h, b"");
    assert!(
        r.status != 200 && !r.text().contains("\"tenant\""),
        "a spoofed request through envd reached the owner's REST API: {r}"
    );
    let host = format!("49983-{id}.{DOMAIN}");
    let mut h = vec![("Host", host.as_str())];
    h.extend_from_slice(&spoof);
    let r = http::request(&l[2].proxy, "GET", &path, &h, b"");
    assert!(
        r.status != 200 && !r.text().contains("\"tenant\""),
        "a spoofed request through the port proxy reached the owner's REST API: {r}"
    );
}

/// An SSH login on n1 to the sandbox on n2 runs a command in it.
fn ssh_through_n1(c: &Cluster, n1: &Listeners, id: &str) {
    let have_ssh = Command::new("ssh")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !have_ssh {
        skip("ssh is not installed; install openssh-client (scripts/install-deps.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test@dwell", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
    let d = c.node(0);
    let mut add = d.cmd(&["ssh-key", "add", "--name", "laptop"]);
    add.arg(key.with_extension("pub"));
    add.env("DWELL_AS_TENANT", "planes");
    let out = add.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let public = std::fs::read_to_string(d.data.join("ssh_host_ed25519_key.pub")).unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, format!("[127.0.0.1]:{} {}", n1.ssh, public.trim())).unwrap();
    let out = Command::new("ssh")
        .arg("-p")
        .arg(n1.ssh.to_string())
        .arg("-i")
        .arg(&key)
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .args(["-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=20",
        ])
        .args(["-o", "LogLevel=ERROR"])
        .arg(format!("{id}@127.0.0.1"))
        .args(["--", "cat /root/f; echo through n1; exit 3"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "one\nthrough n1\n");
}
