//! End to end: the port proxy (`dwell serve --proxy-listen --domain`).
//! A `python3 -m http.server` in a sandbox without a network is reached
//! through the proxy by host name: with its token, through a one-time
//! link and its cookie, by name, publicly; wrong tokens get 401 by id,
//! and by name the same 404 as unknown hosts, ports not exposed and another
//! tenant's calls; a port nothing listens on a 502 page that names it. A
//! WebSocket-style upgrade and a CONNECT tunnel pipe bytes both ways. The
//! attacks of a sandbox (or another site's page) on the proxy's cookie are
//! refused: cross-origin cookie POSTs and WebSocket handshakes (403), a
//! server planting the cookie, a login link redirecting off the host, a
//! used link replayed after a restart, and one client taking every
//! connection. A headless Chromium takes a screenshot of a page a sandbox
//! serves. Both runtimes (gVisor when runsc is there).
//!
//! All traffic goes to the proxy on 127.0.0.1; host names are sent as
//! `Host` headers (and mapped to 127.0.0.1 for Chromium), never resolved.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

const DOMAIN: &str = "dwell.test";

/// A WebSocket-style server on port 8765, in plain python3: answers an
/// `Upgrade: websocket` handshake with 101 and the RFC 6455 accept key,
/// then echoes raw bytes until the client closes; any other request gets
/// its own head back (what the proxy passed on).
const WS_SERVER: &str = r#"
import base64, hashlib, socket, threading
def serve(c):
    data = b''
    while b'\r\n\r\n' not in data:
        d = c.recv(4096)
        if not d: return
        data += d
    head, rest = data.split(b'\r\n\r\n', 1)
    key = ''
    for line in head.decode().split('\r\n')[1:]:
        k, _, v = line.partition(':')
        if k.strip().lower() == 'sec-websocket-key': key = v.strip()
    planted = b'Set-Cookie: dwell_port=planted; Domain=dwell.test; Path=/\r\nSet-Cookie: DWELL_PORT=p2\r\nSet-Cookie: app=1\r\n'
    if not key:
        c.sendall(b'HTTP/1.1 200 OK\r\n' + planted + b'Content-Length: %d\r\nConnection: close\r\n\r\n' % len(head) + head)
        c.close()
        return
    acc = base64.b64encode(hashlib.sha1((key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').encode()).digest()).decode()
    c.sendall(('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n' % acc).encode() + planted + b'\r\n')
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

const PAGE: &str = "<!doctype html><html><head><title>dwell preview</title></head>\
<body style=\"background:#1e6fd9;color:#fff;font:40px sans-serif\">\
<h1 id=\"hello\">hello from the sandbox</h1></body></html>";

struct Setup {
    d: Daemon,
    proxy: String,
    api: String,
    id: String,
}

fn start(runtime: &str) -> Setup {
    let proxy = format!("127.0.0.1:{}", free_port());
    let api = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(&[
        "--proxy-listen",
        &proxy,
        "--domain",
        DOMAIN,
        "--listen",
        &api,
    ]);
    wait_listening(&proxy, 20);
    wait_listening(&api, 20);
    assert!(
        d.log().contains(&format!("port proxy on http://{proxy}")),
        "the daemon says where the proxy is"
    );
    let id = d.create("web", &["--isolation", runtime]);
    d.sh(
        "web",
        &format!("mkdir -p /srv/site && cat > /srv/site/index.html <<'EOF'\n{PAGE}\nEOF"),
    );
    d.ok(&[
        "exec",
        "-d",
        "web",
        "-w",
        "/srv/site",
        "--",
        "python3",
        "-m",
        "http.server",
        "8080",
        "--bind",
        "127.0.0.1",
    ]);
    d.ok(&["exec", "-d", "web", "--", "python3", "-c", WS_SERVER]);
    d.sh(
        "web",
        "for i in $(seq 100); do python3 -c \"import socket; [socket.create_connection(('127.0.0.1', p)) for p in (8080, 8765)]\" 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
    );
    Setup { d, proxy, api, id }
}

fn get(s: &Setup, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut h = vec![("Host", host)];
    h.extend_from_slice(headers);
    http::request(&s.proxy, "GET", path, &h, b"")
}

fn port_json(s: &Setup, args: &[&str]) -> serde_json::Value {
    json_of(&s.d, args)
}

fn json_of(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&d.ok(&a)).unwrap()
}

/// The 404 for `host`, with the host name taken out: every host that
/// serves nothing to the client gets this same page.
fn generic_404(s: &Setup, host: &str, headers: &[(&str, &str)]) -> String {
    let r = get(s, host, "/", headers);
    assert_eq!(r.status, 404, "{host}: {r}");
    let text = r.text().replace(host, "HOST");
    assert!(text.contains("no sandbox port is served at HOST"), "{r}");
    text
}

/// The HTTP part: tokens, links, cookies, names, errors, public, tenants.
fn http_checks(s: &Setup) {
    let host = format!("8080-{}.{DOMAIN}", s.id);
    // Before exposing, by id or name: the 404 of an unknown host, naming
    // neither sandbox nor port.
    let unknown = generic_404(s, &format!("8080-nosuchname.{DOMAIN}"), &[]);
    assert_eq!(generic_404(s, &host, &[]), unknown);
    assert_eq!(generic_404(s, &format!("8080-web.{DOMAIN}"), &[]), unknown);
    assert!(!unknown.contains("web") && !unknown.contains(&s.id));

    // `dwell port` exposes privately and prints URL, token and link.
    let e = port_json(s, &["port", "web", "8080"]);
    let proxy_port = s.proxy.rsplit(':').next().unwrap();
    assert_eq!(
        e["url"].as_str().unwrap(),
        format!("http://{host}:{proxy_port}/")
    );
    assert_eq!(e["public"], false);
    let token = e["token"]
        .as_str()
        .expect("a new private port's token")
        .to_string();
    let link = e["login_url"].as_str().unwrap().to_string();

    let r = get(s, &host, "/", &[("X-Dwell-Token", &token)]);
    assert_eq!(r.status, 200, "{r}");
    assert!(r.text().contains("hello from the sandbox"), "{r}");
    // E2B's header works too.
    let r = get(
        s,
        &host,
        "/index.html",
        &[("e2b-traffic-access-token", &token)],
    );
    assert_eq!(r.status, 200, "{r}");
    // Missing or wrong token: by id (unguessable) 401 that says how; by
    // name the 404 of an unknown name, so names do not tell who exists.
    let r = get(s, &host, "/", &[]);
    assert_eq!(r.status, 401, "{r}");
    assert!(r.text().contains("X-Dwell-Token"), "{r}");
    let r = get(s, &host, "/", &[("X-Dwell-Token", &"0".repeat(64))]);
    assert_eq!(r.status, 401, "{r}");
    let by_name = format!("8080-web.{DOMAIN}");
    assert_eq!(generic_404(s, &by_name, &[]), unknown);
    assert_eq!(
        generic_404(s, &by_name, &[("X-Dwell-Token", &"0".repeat(64))]),
        unknown
    );
    assert_eq!(
        generic_404(s, &format!("8080-web--default.{DOMAIN}"), &[]),
        unknown
    );
    // By name (the default tenant's sandbox `web`).
    let r = get(
        s,
        &format!("8080-web.{DOMAIN}:{proxy_port}"),
        "/",
        &[("X-Dwell-Token", &token)],
    );
    assert_eq!(r.status, 200, "{r}");

    // The one-time link: a cookie and a redirect to the clean URL, once.
    let path = &link[link.find("/?").unwrap()..];
    let r = get(s, &host, path, &[]);
    assert_eq!(r.status, 303, "{r}");
    assert_eq!(r.header("location"), Some("/"), "{r}");
    let cookie = r.header("set-cookie").expect("a cookie").to_string();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && !cookie.contains("Domain"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = get(s, &host, "/", &[("Cookie", &format!("theme=dark; {pair}"))]);
    assert_eq!(r.status, 200, "{r}");
    let r = get(s, &host, path, &[]);
    assert_eq!(r.status, 401, "a link works once: {r}");
    // The cookie is bound to its host.
    let r = get(s, &format!("8080-web.{DOMAIN}"), "/", &[("Cookie", &pair)]);
    assert_eq!(r.status, 404, "{r}");
    // A login link never sends the browser off the host: `//evil.example`
    // as the path would be another host in `Location`.
    let fresh = port_json(s, &["port", "web", "8080"]);
    let link = fresh["login_url"].as_str().unwrap();
    let query = &link[link.find('?').unwrap()..];
    let r = get(s, &host, &format!("//evil.example/x{query}"), &[]);
    assert_eq!(r.status, 303, "{r}");
    assert_eq!(r.header("location"), Some("/evil.example/x"), "{r}");
    // `dwell port` of an exposed port: a fresh link, no new token.
    let again = port_json(s, &["port", "web", "8080"]);
    assert!(again.get("token").is_none(), "{again}");
    assert_ne!(again["login_url"], e["login_url"]);

    // Keep-alive: two requests on one client connection.
    let mut c = TcpStream::connect(&s.proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    for _ in 0..2 {
        write!(
            c,
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Dwell-Token: {token}\r\n\r\n"
        )
        .unwrap();
        let head = read_head(&mut c);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let len: usize = header_of(&head, "content-length").unwrap().parse().unwrap();
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).unwrap();
        assert!(String::from_utf8_lossy(&body).contains("hello from the sandbox"));
    }

    // Unknown sandbox, unknown host, a port not exposed: the same 404.
    assert_eq!(
        generic_404(s, &format!("8080-abcdefghijkmnpqrstuv.{DOMAIN}"), &[]),
        unknown
    );
    assert_eq!(generic_404(s, "example.org", &[]), unknown);
    assert_eq!(
        generic_404(s, &format!("7777-{}.{DOMAIN}", s.id), &[]),
        unknown
    );
    assert_eq!(generic_404(s, &format!("7777-web.{DOMAIN}"), &[]), unknown);

    // Exposed, nothing listening: 502 naming sandbox and port.
    s.d.ok(&["expose", "web", "9090", "--public"]);
    let r = get(
        s,
        &format!("9090-{}.{DOMAIN}", s.id),
        "/",
        &[("Accept", "text/html")],
    );
    assert_eq!(r.status, 502, "{r}");
    assert!(
        r.text()
            .contains("nothing listens on port 9090 inside sandbox web")
            && r.text().contains("0.0.0.0 or 127.0.0.1"),
        "{r}"
    );
    assert!(
        r.header("content-type").unwrap().starts_with("text/html"),
        "{r}"
    );

    // inspect and `dwell port SANDBOX` list the exposures.
    let v = s.d.inspect("web");
    let ports: Vec<u64> = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [8080, 9090], "{v}");
    let listed = s.d.ok(&["port", "web"]);
    assert!(
        listed.contains("port 9090") && listed.contains("(public)"),
        "{listed}"
    );
    assert!(s
        .d
        .ok(&["inspect", "web"])
        .contains("exposed:     port 8080 (private)"));

    // Another tenant: 404 for the sandbox, its ports and by name.
    let other = s.d.tenant_key("other");
    let r = http::request(
        &s.api,
        "GET",
        &format!("/v1/sandboxes/{}/ports", s.id),
        &[("Authorization", &format!("Bearer {other}"))],
        b"",
    );
    assert_eq!(r.status, 404, "{r}");
    let r = http::request(
        &s.api,
        "POST",
        &format!("/v1/sandboxes/{}/ports", s.id),
        &[
            ("Authorization", &format!("Bearer {other}")),
            ("Content-Type", "application/json"),
        ],
        br#"{"port": 8080, "public": true}"#,
    );
    assert_eq!(r.status, 404, "{r}");
    let r = get(
        s,
        &format!("8080-web--other.{DOMAIN}"),
        "/",
        &[("X-Dwell-Token", &token)],
    );
    assert_eq!(r.status, 404, "{r}");
    // `--` separates name and tenant in host names: new names may not
    // hold it (a sandbox `a--other` of `default` would read as sandbox `a`
    // of tenant `other`).
    for args in [
        &["create", "--name", "web--other"][..],
        &["tenant", "create", "team--x"][..],
    ] {
        let out = s.d.run(args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            stderr(&out).contains("separates sandbox name and tenant"),
            "{}",
            stderr(&out)
        );
    }

    // Public: no token needed. Private again: a new token, the old one void.
    s.d.ok(&["expose", "web", "8080", "--public"]);
    let r = get(s, &host, "/", &[]);
    assert_eq!(r.status, 200, "{r}");
    let e = port_json(s, &["expose", "web", "8080"]);
    let token2 = e["token"].as_str().unwrap().to_string();
    assert_ne!(token2, token);
    assert_eq!(get(s, &host, "/", &[("X-Dwell-Token", &token)]).status, 401);
    assert_eq!(
        get(s, &host, "/", &[("X-Dwell-Token", &token2)]).status,
        200
    );
    let out = s.d.run(&["unexpose", "web", "7000"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("port 7000 of sandbox web is not exposed"),
        "{}",
        stderr(&out)
    );
}

fn read_head(c: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = c.read(&mut b).unwrap();
        assert_eq!(
            n,
            1,
            "closed in the head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

fn header_of(head: &str, name: &str) -> Option<String> {
    head.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
}

/// An upgrade (WebSocket handshake) and a CONNECT tunnel.
fn tunnel_checks(s: &Setup) {
    let e = port_json(s, &["expose", "web", "8765"]);
    let token = e["token"].as_str().unwrap().to_string();
    let host = format!("8765-{}.{DOMAIN}", s.id);
    // What reaches the server: no token, not the proxy's cookie, the
    // client's own cookies, X-Forwarded-*.
    let r = get(
        s,
        &host,
        "/echo",
        &[
            ("X-Dwell-Token", &token),
            ("Cookie", "theme=dark; dwell_port=123.abc; lang=en"),
            ("X-App", "kept"),
        ],
    );
    assert_eq!(r.status, 200, "{r}");
    let seen = r.text().to_ascii_lowercase();
    assert!(
        !seen.contains(&token) && !seen.contains("x-dwell-token"),
        "{seen}"
    );
    assert!(!seen.contains("dwell_port"), "{seen}");
    assert!(seen.contains("cookie: theme=dark; lang=en"), "{seen}");
    assert!(
        seen.contains("x-app: kept") && seen.contains("x-forwarded-for: 127.0.0.1"),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("x-forwarded-host: {host}")),
        "{seen}"
    );
    // The server cannot set the proxy's cookie (for this host or, with
    // Domain=, for every other); its own cookies pass.
    let set: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(set, ["app=1"], "{r}");
    let mut c = TcpStream::connect(&s.proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "GET /chat HTTP/1.1\r\nHost: {host}\r\nX-Dwell-Token: {token}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        !lower.contains("dwell_port") && lower.contains("set-cookie: app=1"),
        "{head}"
    );
    assert_eq!(
        header_of(&head, "sec-websocket-accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    for msg in [&b"hello websocket"[..], &[7u8; 200_000][..]] {
        c.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
    drop(c);
    cross_site_checks(s, &host, &token);

    // CONNECT to the HTTP server's port, then HTTP over the raw tunnel.
    let e = port_json(s, &["port", "web", "8080"]);
    let token = e["token"].as_str().map(str::to_string);
    let token = token.unwrap_or_else(|| {
        port_json(s, &["expose", "web", "8080", "--new-token"])["token"]
            .as_str()
            .unwrap()
            .to_string()
    });
    let target = format!("8080-{}.{DOMAIN}:80", s.id);
    let mut c = TcpStream::connect(&s.proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nX-Dwell-Token: {token}\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    write!(c, "GET /index.html HTTP/1.0\r\n\r\n").unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    assert!(
        all.starts_with("HTTP/1.0 200") && all.contains("hello from the sandbox"),
        "{all}"
    );
    // CONNECT without the token: 401.
    let mut c = TcpStream::connect(&s.proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(c, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let head = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}

/// A WebSocket handshake to `host` with `headers`; the answer's head.
fn ws_handshake(s: &Setup, host: &str, headers: &[(&str, &str)]) -> String {
    let mut c = TcpStream::connect(&s.proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "GET /chat HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).unwrap();
    read_head(&mut c)
}

/// Another sandbox's page (`8080-other.D`, same-site with every preview
/// host) cannot use this host's login cookie for POSTs or WebSockets.
fn cross_site_checks(s: &Setup, host: &str, token: &str) {
    let proxy_port = s.proxy.rsplit(':').next().unwrap();
    let with_port = format!("{host}:{proxy_port}");
    let e = port_json(s, &["port", "web", "8765"]);
    let link = e["login_url"].as_str().unwrap();
    let r = get(s, &with_port, &link[link.find("/?").unwrap()..], &[]);
    assert_eq!(r.status, 303, "{r}");
    let set = r.header("set-cookie").unwrap();
    let cookie = set.split(';').next().unwrap().to_string();
    let evil = format!("http://8080-other.{DOMAIN}:{proxy_port}");
    let own = format!("http://{with_port}");
    let post = |headers: &[(&str, &str)]| {
        let mut h = vec![("Host", with_port.as_str())];
        h.extend_from_slice(headers);
        http::request(&s.proxy, "POST", "/transfer", &h, b"")
    };
    // A sandbox (its page, or its server) may also have planted a
    // `dwell_port` cookie for the whole domain: the valid one still counts.
    let planted = format!("dwell_port=planted; {cookie}");
    for h in [
        vec![("Cookie", cookie.as_str()), ("Origin", evil.as_str())],
        vec![("Cookie", planted.as_str()), ("Origin", evil.as_str())],
        vec![("Cookie", cookie.as_str()), ("Sec-Fetch-Site", "same-site")],
        vec![("Cookie", cookie.as_str()), ("Origin", "null")],
    ] {
        let r = post(&h);
        assert_eq!(r.status, 403, "{h:?}: {r}");
        assert!(r.text().contains("another site's page"), "{r}");
        let head = ws_handshake(s, &with_port, &h);
        assert!(head.starts_with("HTTP/1.1 403"), "{h:?}: {head}");
    }
    // Its own pages, tools (no Origin), token holders and plain GETs pass.
    for h in [
        vec![("Cookie", cookie.as_str()), ("Origin", own.as_str())],
        vec![
            ("Cookie", planted.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        vec![("Cookie", cookie.as_str())],
        vec![("X-Dwell-Token", token), ("Origin", evil.as_str())],
    ] {
        let r = post(&h);
        assert_eq!(r.status, 200, "{h:?}: {r}");
        let head = ws_handshake(s, &with_port, &h);
        assert!(head.starts_with("HTTP/1.1 101"), "{h:?}: {head}");
    }
    let r = get(
        s,
        &with_port,
        "/",
        &[("Cookie", &cookie), ("Origin", &evil)],
    );
    assert_eq!(r.status, 200, "{r}");
}

/// A login link, used, is refused after a daemon restart too (its nonce
/// was only remembered in memory; links are signed per daemon process).
fn restart_checks(s: &mut Setup) {
    let host = format!("8080-{}.{DOMAIN}", s.id);
    let used = port_json(s, &["port", "web", "8080"]);
    let unused = port_json(s, &["port", "web", "8080"]);
    let path = |e: &serde_json::Value| {
        let l = e["login_url"].as_str().unwrap().to_string();
        l[l.find("/?").unwrap()..].to_string()
    };
    let r = get(s, &host, &path(&used), &[]);
    assert_eq!(r.status, 303, "{r}");
    let cookie = r.cookie();
    s.d.restart();
    wait_listening(&s.proxy, 20);
    for e in [&used, &unused] {
        let r = get(s, &host, &path(e), &[]);
        assert_eq!(r.status, 401, "a link from before the restart: {r}");
    }
    // Cookies outlive restarts.
    let r = get(s, &host, "/", &[("Cookie", &cookie)]);
    assert_eq!(r.status, 200, "{r}");
}

/// curl, as a user would: a Host header, and CONNECT through `-x -p`.
fn curl_checks(s: &Setup) {
    if !skip::have_tool("curl") {
        skip("curl is not installed (scripts/install-deps.sh installs it)");
        return;
    }
    let e = port_json(s, &["expose", "web", "8080", "--new-token"]);
    let token = e["token"].as_str().unwrap().to_string();
    let host = format!("8080-{}.{DOMAIN}", s.id);
    let curl = |args: &[&str]| {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "30"]).args(args);
        let out = output_within(c, "curl", String::new);
        (stdout(&out), stderr(&out))
    };
    let (out, err) = curl(&[
        "-H",
        &format!("Host: {host}"),
        "-H",
        &format!("X-Dwell-Token: {token}"),
        &format!("http://{}/", s.proxy),
    ]);
    assert!(out.contains("hello from the sandbox"), "{out}{err}");
    let (out, err) = curl(&[
        "-p",
        "-x",
        &format!("http://{}", s.proxy),
        "--proxy-header",
        &format!("X-Dwell-Token: {token}"),
        &format!("http://{host}/"),
    ]);
    assert!(out.contains("hello from the sandbox"), "{out}{err}");
    let (out, _) = curl(&[
        "-H",
        &format!("Host: {host}"),
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        &format!("http://{}/", s.proxy),
    ]);
    assert_eq!(out, "401");
    // A browser-like cross-site POST with the login cookie: 403.
    let e = port_json(s, &["port", "web", "8080"]);
    let link = e["login_url"].as_str().unwrap();
    let (head, _) = curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        &format!("Host: {host}"),
        &format!("http://{}{}", s.proxy, &link[link.find("/?").unwrap()..]),
    ]);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no cookie: {head}"))
        .to_string();
    let post = |origin: &str| {
        curl(&[
            "-X",
            "POST",
            "-d",
            "x=1",
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            "-H",
            &format!("Host: {host}"),
            "-b",
            &cookie,
            "-H",
            &format!("Origin: {origin}"),
            &format!("http://{}/", s.proxy),
        ])
        .0
    };
    assert_eq!(post(&format!("http://8080-other.{DOMAIN}")), "403");
    // Same origin: reaches the server (http.server does not do POST: 501).
    assert_eq!(post(&format!("http://{host}")), "501");
}

/// A headless Chromium screenshot of the sandbox's page, through the proxy
/// (public, so the browser needs no header).
fn screenshot_check(s: &Setup) {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| skip::have_tool(c));
    let Some(chromium) = chromium else {
        skip("chromium is not installed (scripts/install-deps.sh installs it); no screenshot");
        return;
    };
    s.d.ok(&["expose", "web", "8080", "--public"]);
    let proxy_port = s.proxy.rsplit(':').next().unwrap();
    let url = format!("http://8080-{}.{DOMAIN}:{proxy_port}/", s.id);
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("shot.png");
    let rules = format!("--host-resolver-rules=MAP *.{DOMAIN} 127.0.0.1");
    let base = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            &rules,
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ));
    };
    let mut c = Command::new(chromium);
    base(&mut c);
    c.arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=800,600")
        .arg(&url);
    let out = process::output_within(c, "chromium --screenshot", String::new);
    assert!(png.is_file(), "no screenshot: {}", stderr(&out));
    let data = std::fs::read(&png).unwrap();
    assert_eq!(&data[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&data[12..16], b"IHDR");
    let w = u32::from_be_bytes(data[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(data[20..24].try_into().unwrap());
    assert_eq!((w, h), (800, 600), "the screenshot's size");
    // A blank page compresses to almost nothing; this one has a colored
    // background and text.
    assert!(
        data.len() > 3000,
        "the screenshot looks blank ({} bytes)",
        data.len()
    );
    let mut c = Command::new(chromium);
    base(&mut c);
    c.arg("--dump-dom").arg(&url);
    let out = process::output_within(c, "chromium --dump-dom", String::new);
    let dom = stdout(&out);
    assert!(
        dom.contains("<h1 id=\"hello\">hello from the sandbox</h1>"),
        "the page chromium saw: {dom}\n{}",
        stderr(&out)
    );
}

fn run(runtime: &str) {
    let mut s = start(runtime);
    http_checks(&s);
    tunnel_checks(&s);
    curl_checks(&s);
    restart_checks(&mut s);
    screenshot_check(&s);
    // A stopped sandbox: 503 that says how to start it.
    s.d.ok(&["stop", "web"]);
    let r = get(&s, &format!("8080-{}.{DOMAIN}", s.id), "/", &[]);
    assert_eq!(r.status, 503, "{r}");
    assert!(r.text().contains("dwell start web"), "{r}");
    // Exposures die with the sandbox.
    s.d.ok(&["rm", "-f", "web"]);
    let r = get(&s, &format!("8080-{}.{DOMAIN}", s.id), "/", &[]);
    assert_eq!(r.status, 404, "{r}");
}

#[test]
fn proxy_serves_a_namespace_sandbox() {
    if can_run() {
        run("namespace");
    }
}

#[test]
fn proxy_serves_a_gvisor_sandbox() {
    if can_run_gvisor() {
        run("gvisor");
    }
}

/// One client address cannot take every connection slot of the proxy:
/// over `--proxy-max-per-ip` it gets 503 at once, and is served again when
/// its connections close.
#[test]
fn one_client_cannot_take_every_connection() {
    if !can_run() {
        return;
    }
    let proxy = format!("127.0.0.1:{}", free_port());
    let _d = Daemon::start_with(&[
        "--proxy-listen",
        &proxy,
        "--domain",
        DOMAIN,
        "--proxy-max-per-ip",
        "2",
    ]);
    wait_listening(&proxy, 20);
    // wait_listening's probe connection may still be counted for a moment.
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&proxy).unwrap())
        .collect();
    wait_for(20, "a third connection to be refused", || {
        let r = http::try_request(&proxy, "GET", "/", &[("Host", "x.example")], b"");
        matches!(r, Ok(r) if r.status == 503 && r.text().contains("--proxy-max-per-ip"))
    });
    drop(idle);
    wait_for(20, "the closed connections to free their slots", || {
        let r = http::try_request(&proxy, "GET", "/", &[("Host", "x.example")], b"");
        matches!(r, Ok(r) if r.status == 404)
    });
}

/// E2B: a sandbox created with `allowPublicTraffic: false` gets a traffic
/// access token; every port is served as `PORT-ID.DOMAIN` (the SDK's
/// `getHost`) with that token; `domain` is the proxy's; the envd port is
/// the E2B data plane, in-process.
#[test]
fn e2b_sandboxes_are_served_on_every_port() {
    if !can_run() {
        return;
    }
    let proxy = format!("127.0.0.1:{}", free_port());
    let api = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(&[
        "--proxy-listen",
        &proxy,
        "--domain",
        DOMAIN,
        "--e2b-listen",
        &api,
        "--proxy-max-per-sandbox",
        "2",
    ]);
    wait_listening(&proxy, 20);
    wait_listening(&api, 20);
    let key = d.admin_key();
    let auth = ("X-API-KEY", key.as_str());
    let r = http::request(
        &api,
        "POST",
        "/v2/sandboxes",
        &[auth, ("Content-Type", "application/json")],
        br#"{"templateID": "base", "network": {"allowPublicTraffic": false}}"#,
    );
    assert_eq!(r.status, 201, "{r}");
    let v = r.json();
    let id = v["sandboxID"].as_str().unwrap().to_string();
    let proxy_port = proxy.rsplit(':').next().unwrap();
    assert_eq!(v["domain"], format!("{DOMAIN}:{proxy_port}"), "{v}");
    let traffic = v["trafficAccessToken"]
        .as_str()
        .expect("a token")
        .to_string();
    let envd_token = v["envdAccessToken"].as_str().unwrap().to_string();

    d.ok(&[
        "exec",
        "-d",
        &id,
        "--",
        "python3",
        "-m",
        "http.server",
        "3000",
        "--bind",
        "127.0.0.1",
    ]);
    d.sh(
        &id,
        "for i in $(seq 100); do python3 -c \"import socket; socket.create_connection(('127.0.0.1', 3000))\" 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
    );
    // Without --proxy-e2b-api the control plane is not on the proxy.
    let api_host = format!("api.{DOMAIN}:{proxy_port}");
    let r = http::request(
        &proxy,
        "GET",
        "/v2/sandboxes",
        &[("Host", &api_host), auth],
        b"",
    );
    assert_eq!(r.status, 404, "{r}");
    // getHost(3000) = 3000-ID.DOMAIN:PORT.
    let host = format!("3000-{id}.{}", v["domain"].as_str().unwrap());
    let r = http::request(&proxy, "GET", "/", &[("Host", &host)], b"");
    assert_eq!(r.status, 401, "{r}");
    let r = http::request(
        &proxy,
        "GET",
        "/",
        &[("Host", &host), ("e2b-traffic-access-token", &traffic)],
        b"",
    );
    assert_eq!(r.status, 200, "{r}");
    // At most 2 tunnels to one sandbox: a third connection gets 503 while
    // two CONNECTs are open, and works once they are closed.
    let open_tunnel = || {
        let mut c = TcpStream::connect(&proxy).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            c,
            "CONNECT {host} HTTP/1.1\r\nHost: {host}\r\ne2b-traffic-access-token: {traffic}\r\n\r\n"
        )
        .unwrap();
        let head = read_head(&mut c);
        (c, head)
    };
    // The tunnel of the request above is released once the proxy has seen
    // its connection close, which a loaded machine may do a little later:
    // ask again until both tunnels are granted.
    let granted = || {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (c, head) = open_tunnel();
            if head.starts_with("HTTP/1.1 200") || std::time::Instant::now() > end {
                return (c, head);
            }
            drop(c);
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (t1, h1) = granted();
    let (t2, h2) = granted();
    assert!(
        h1.starts_with("HTTP/1.1 200") && h2.starts_with("HTTP/1.1 200"),
        "{h1}{h2}"
    );
    let r = http::request(
        &proxy,
        "GET",
        "/",
        &[("Host", &host), ("e2b-traffic-access-token", &traffic)],
        b"",
    );
    assert_eq!(r.status, 503, "{r}");
    assert!(
        r.text().contains("already has 2 proxied connections"),
        "{r}"
    );
    drop((t1, t2));
    wait_for(20, "the closed tunnels to free their slots", || {
        http::request(
            &proxy,
            "GET",
            "/",
            &[("Host", &host), ("e2b-traffic-access-token", &traffic)],
            b"",
        )
        .status
            == 200
    });
    // Connect gives the same token again.
    let r = http::request(
        &api,
        "POST",
        &format!("/v2/sandboxes/{id}/connect"),
        &[auth, ("Content-Type", "application/json")],
        br#"{"timeout": 300}"#,
    );
    assert!(r.status == 200 || r.status == 201, "{r}");
    assert_eq!(r.json()["trafficAccessToken"], traffic);
    // envd through the proxy.
    let r = http::request(
        &proxy,
        "GET",
        "/health",
        &[
            ("Host", &format!("49983-{id}.{DOMAIN}")),
            ("X-Access-Token", &envd_token),
        ],
        b"",
    );
    assert!(r.status == 200 || r.status == 204, "{r}");
    // By name, envd is not served: its answers would tell that a sandbox
    // of that name exists.
    let name = d.inspect(&id)["name"].as_str().unwrap().to_string();
    let r = http::request(
        &proxy,
        "GET",
        "/health",
        &[("Host", &format!("49983-{name}.{DOMAIN}"))],
        b"",
    );
    assert_eq!(r.status, 404, "{r}");
    assert!(r.text().contains("no sandbox port is served"), "{r}");
    // `dwell port` of a port the every-port exposure covers: its URL and a
    // login link, nothing new exposed.
    let e = json_of(&d, &["port", &id, "3000"]);
    assert_eq!(e["port"], 3000, "{e}");
    assert!(
        e["login_url"].as_str().unwrap().contains("dwell_token="),
        "{e}"
    );
    assert!(e.get("token").is_none(), "{e}");
    let listed = json_of(&d, &["port", &id]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let login = e["login_url"].as_str().unwrap();
    let path = &login[login.find("/?").unwrap()..];
    let r = http::request(&proxy, "GET", path, &[("Host", &host)], b"");
    assert_eq!(r.status, 303, "the link opens port 3000: {r}");

    // A public one needs no token and has none.
    let r = http::request(
        &api,
        "POST",
        "/v2/sandboxes",
        &[auth, ("Content-Type", "application/json")],
        br#"{"templateID": "base"}"#,
    );
    assert_eq!(r.status, 201, "{r}");
    let v = r.json();
    assert!(v["trafficAccessToken"].is_null(), "{v}");
    let open = v["sandboxID"].as_str().unwrap().to_string();
    let r = http::request(
        &proxy,
        "GET",
        "/",
        &[("Host", &format!("3000-{open}.{DOMAIN}"))],
        b"",
    );
    assert_eq!(r.status, 502, "public, nothing listening: {r}");
    for sb in [&id, &open] {
        let r = http::request(&api, "DELETE", &format!("/sandboxes/{sb}"), &[auth], b"");
        assert!(r.status < 300, "{r}");
    }
}

/// A proxied request wakes a sandbox its idle timeout paused (auto-resume
/// is on by default after a policy's pause) and is served; one a user
/// paused with auto-resume turned off stays asleep, and the request gets
/// the 503 page naming its state.
#[test]
fn a_proxied_request_wakes_a_policy_paused_sandbox() {
    if !can_run() {
        return;
    }
    let proxy = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(&[
        "--proxy-listen",
        &proxy,
        "--domain",
        DOMAIN,
        "--resync-secs",
        "1",
    ]);
    wait_listening(&proxy, 20);
    let id = d.create("web", &["--idle-timeout", "2s"]);
    d.ok(&[
        "exec",
        "-d",
        "web",
        "--",
        "python3",
        "-m",
        "http.server",
        "8080",
        "--bind",
        "127.0.0.1",
        "--directory",
        "/etc",
    ]);
    d.sh(
        "web",
        "for i in $(seq 100); do python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8080))\" 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
    );
    let token = json_of(&d, &["port", "web", "8080"])["token"]
        .as_str()
        .expect("a private port's token")
        .to_string();
    let hostname = d.sh("web", "cat /etc/hostname");
    let state = |d: &Daemon| d.inspect("web")["state"].as_str().unwrap().to_string();
    wait_for(15, "idle -> paused", || state(&d) == "paused");
    // No second idle pause between the calls below on a slow machine; the
    // pause stays the policy's.
    d.ok(&["update", "web", "--idle-timeout", "1h"]);
    assert_eq!(d.inspect("web")["wakes_on_use"], true);
    let host = format!("8080-{id}.{DOMAIN}");
    let proxied = || {
        http::request(
            &proxy,
            "GET",
            "/hostname",
            &[("Host", host.as_str()), ("X-Dwell-Token", token.as_str())],
            b"",
        )
    };
    let r = proxied();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.text(), hostname);
    assert_eq!(state(&d), "running");
    let events = d.ok(&["logs", "web"]);
    assert!(events.contains("woken by proxied request"), "{events}");

    // Paused by its user, auto-resume off: not woken.
    d.ok(&["pause", "web"]);
    d.ok(&["update", "web", "--auto-resume=false"]);
    let r = proxied();
    assert_eq!(r.status, 503, "{r}");
    assert!(
        r.text().contains("sandbox web is paused") && r.text().contains("does not wake on use"),
        "{r}"
    );
    assert_eq!(state(&d), "paused");
    assert_eq!(d.ok(&["logs", "web"]).matches("woken by").count(), 1);
}
