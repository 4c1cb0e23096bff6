//! End to end, without a browser: the web console's logins as HTTP sees
//! them. One-time login links (`dwell ui`) log in once; sessions are
//! HttpOnly SameSite=Strict cookies scoped to their tenant, refused
//! without their CSRF token or from another site's page, and end when
//! revoked, logged out, or when their API key is revoked. The console's
//! files are served without a key. (`console_browser.rs` drives the pages
//! in Chromium.)

mod common;

use common::*;

use common::console::Console;

impl Console {
    /// A login link's token, made by `dwell ui` with `key`.
    fn link(&self, key: &str, extra: &[&str]) -> String {
        let mut args = vec!["ui", "--json", "--no-open"];
        args.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_str(&self.ok(key, &args)).unwrap();
        let url = v["url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("http://{}/ui/login#token=dwl_", self.addr)),
            "{url}"
        );
        url.split("token=").nth(1).unwrap().to_string()
    }

    fn post_login(&self, body: &str, headers: &[(&str, &str)]) -> Response {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        http::request(
            &self.addr,
            "POST",
            "/v1/console/sessions",
            &h,
            body.as_bytes(),
        )
    }

    /// Logs in with `body`; the session's cookie and CSRF token.
    fn login(&self, body: &str) -> Session {
        let r = self.post_login(body, &[]);
        assert_eq!(r.status, 201, "{r}");
        let cookie = r
            .header("set-cookie")
            .expect("a session cookie")
            .to_string();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attr), "{cookie} lacks {attr}");
        }
        let value = cookie.split(';').next().unwrap().to_string();
        assert!(value.starts_with("dwell_session="), "{cookie}");
        let v = r.json();
        Session {
            cookie: value,
            csrf: v["csrf_token"].as_str().unwrap().to_string(),
            id: v["id"].as_str().unwrap().to_string(),
            key_id: v["key_id"].as_str().unwrap().to_string(),
        }
    }

    /// A request of `s` from the console's own page (same origin, CSRF
    /// token on state-changing methods).
    fn call(&self, s: &Session, method: &str, path: &str, body: &str) -> Response {
        let origin = format!("http://{}", self.addr);
        let mut h = vec![
            ("Cookie", s.cookie.as_str()),
            ("Origin", origin.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
            ("Content-Type", "application/json"),
        ];
        if method != "GET" {
            h.push(("X-Dwell-CSRF", s.csrf.as_str()));
        }
        http::request(&self.addr, method, path, &h, body.as_bytes())
    }
}

struct Session {
    cookie: String,
    csrf: String,
    id: String,
    key_id: String,
}

fn names(r: &Response) -> Vec<String> {
    assert_eq!(r.status, 200, "{r}");
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn login_links_work_once_and_sessions_see_only_their_tenant() {
    let Some(c) = Console::start() else { return };
    let acme = c.d.tenant_key("acme");
    let other = c.d.tenant_key("other");
    let out = c.run(
        &acme,
        &[
            "create", "--name", "mine", "--memory", "128M", "--disk", "256M",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // A link logs in once; again, or a made-up token, is refused.
    let token = c.link(&acme, &[]);
    let s = c.login(&format!(r#"{{"token":"{token}"}}"#));
    let again = c.post_login(&format!(r#"{{"token":"{token}"}}"#), &[]);
    assert_eq!(again.status, 401, "{again}");
    assert!(again.text().contains("already used"), "{again}");
    let wrong = c.post_login(&format!(r#"{{"token":"{token}x"}}"#), &[]);
    assert_eq!(wrong.status, 401, "{wrong}");
    assert!(wrong.text().contains("not valid"), "{wrong}");
    // An expired link.
    let old = c.link(&acme, &["--valid", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = c.post_login(&format!(r#"{{"token":"{old}"}}"#), &[]);
    assert_eq!(r.status, 401, "{r}");
    assert!(r.text().contains("expired"), "{r}");

    // The session acts for its tenant, and only for it.
    assert_eq!(
        names(&c.call(&s, "GET", "/v1/sandboxes?stats=true", "")),
        ["mine"]
    );
    let me = c.call(&s, "GET", "/v1/console/session", "");
    assert_eq!(me.status, 200, "{me}");
    assert_eq!(me.json()["tenant"], "acme");
    assert_eq!(me.json()["csrf_token"], s.csrf.as_str());
    let o = c.login(&format!(r#"{{"api_key":"{other}"}}"#));
    assert!(names(&c.call(&o, "GET", "/v1/sandboxes", "")).is_empty());
    let r = c.call(&o, "GET", "/v1/sandboxes/mine", "");
    assert_eq!(r.status, 404, "{r}");
    let r = c.call(&o, "POST", "/v1/sandboxes/mine/stop", "");
    assert_eq!(r.status, 404, "{r}");
    // A tenant's session cannot act for another tenant.
    let origin = format!("http://{}", c.addr);
    let r = http::request(
        &c.addr,
        "GET",
        "/v1/sandboxes",
        &[
            ("Cookie", &o.cookie),
            ("X-Dwell-Tenant", "acme"),
            ("Origin", &origin),
        ],
        b"",
    );
    assert_eq!(r.status, 403, "{r}");
    // The admin's session may, as `dwell --as-tenant` does.
    let admin = c.login(&format!(r#"{{"api_key":"{}"}}"#, c.d.admin_key()));
    let r = http::request(
        &c.addr,
        "GET",
        "/v1/sandboxes",
        &[("Cookie", &admin.cookie), ("X-Dwell-Tenant", "acme")],
        b"",
    );
    assert_eq!(names(&r), ["mine"]);

    // Wrong API keys and malformed logins.
    let r = c.post_login(r#"{"api_key":"dwk_nope"}"#, &[]);
    assert_eq!(r.status, 401, "{r}");
    let r = c.post_login(r#"{"api_key":"a","token":"b"}"#, &[]);
    assert_eq!(r.status, 400, "{r}");
    assert!(r.text().contains("exactly one"), "{r}");
    let r = http::request(
        &c.addr,
        "POST",
        "/v1/console/sessions",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("api_key={acme}").as_bytes(),
    );
    assert!(r.status >= 400 && r.header("set-cookie").is_none(), "{r}");

    // The sandbox's lifecycle through the session.
    let r = c.call(&s, "POST", "/v1/sandboxes/mine/pause", "");
    assert_eq!(r.status, 200, "{r}");
    let r = c.call(&s, "POST", "/v1/sandboxes/mine/resume", "");
    assert_eq!(r.status, 200, "{r}");
    // A page the sandbox wrote, fetched with the session (a browser that
    // opens the download URL): bytes, never a document of the console's
    // origin.
    let out = c.run(
        &acme,
        &[
            "exec",
            "mine",
            "--",
            "sh",
            "-c",
            "echo '<script>alert(1)</script>' > /root/evil.html",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r = c.call(
        &s,
        "GET",
        "/v1/sandboxes/mine/files?path=/root/evil.html",
        "",
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.header("content-type"),
        Some("application/octet-stream"),
        "{r}"
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{r}");
    assert!(
        r.header("content-security-policy")
            .is_some_and(|v| v.contains("sandbox")),
        "{r}"
    );
    let _ = c.run(&acme, &["rm", "-f", "mine"]);
}

#[test]
fn cross_site_requests_and_missing_csrf_tokens_are_refused() {
    let Some(c) = Console::start() else { return };
    let acme = c.d.tenant_key("acme");
    let out = c.run(
        &acme,
        &[
            "create", "--name", "target", "--memory", "128M", "--disk", "256M",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let s = c.login(&format!(r#"{{"api_key":"{acme}"}}"#));
    let evil = "http://evil.example";
    let refused = |r: Response, code: &str| {
        assert_eq!(r.status, 403, "{r}");
        assert!(r.text().contains(code), "{r}");
    };
    // A form another site's page posts: the browser sends the cookie (were
    // it not SameSite=Strict), but no CSRF header; the Origin is foreign.
    refused(
        http::request(
            &c.addr,
            "POST",
            "/v1/sandboxes/target/stop",
            &[
                ("Cookie", &s.cookie),
                ("Origin", evil),
                ("Sec-Fetch-Site", "cross-site"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            b"x=1",
        ),
        "cross_site",
    );
    // Without the browser's markers, the missing token alone refuses it.
    refused(
        http::request(
            &c.addr,
            "DELETE",
            "/v1/sandboxes/target?force=true",
            &[("Cookie", &s.cookie)],
            b"",
        ),
        "csrf",
    );
    // A wrong token.
    refused(
        http::request(
            &c.addr,
            "POST",
            "/v1/sandboxes/target/stop",
            &[("Cookie", &s.cookie), ("X-Dwell-CSRF", "0000")],
            b"",
        ),
        "csrf",
    );
    // The right token from a foreign Origin.
    refused(
        http::request(
            &c.addr,
            "POST",
            "/v1/sandboxes/target/stop",
            &[
                ("Cookie", &s.cookie),
                ("X-Dwell-CSRF", &s.csrf),
                ("Origin", evil),
            ],
            b"",
        ),
        "cross_site",
    );
    // A WebSocket another page opens (no CSRF header is possible there):
    // refused by its Origin, and without one.
    for origin in [Some(evil), None] {
        let mut h = vec![
            ("Cookie", s.cookie.as_str()),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        if let Some(o) = origin {
            h.push(("Origin", o));
        }
        refused(
            http::request(&c.addr, "GET", "/v1/sandboxes/target/exec", &h, b""),
            "cross_site",
        );
    }
    // A login posted by another site's page.
    refused(
        c.post_login(&format!(r#"{{"api_key":"{acme}"}}"#), &[("Origin", evil)]),
        "cross_site",
    );
    // A sibling page (a sandbox's preview on the same site) plants a
    // second session cookie ahead of the user's: neither is used.
    let planted = format!("dwell_session=0000; {}", s.cookie);
    let r = http::request(
        &c.addr,
        "GET",
        "/v1/sandboxes",
        &[("Cookie", &planted)],
        b"",
    );
    assert_eq!(r.status, 401, "{r}");
    assert!(r.text().contains("two dwell_session cookies"), "{r}");
    assert!(
        r.header("set-cookie")
            .is_some_and(|v| v.contains("Max-Age=0")),
        "{r}"
    );
    // A session cannot mint login links that would outlive it.
    let r = c.call(&s, "POST", "/v1/console/logins", "{}");
    assert_eq!(r.status, 403, "{r}");
    // None of it happened.
    let v: serde_json::Value =
        serde_json::from_str(&c.d.ok(&["--as-tenant", "acme", "inspect", "target", "--json"]))
            .unwrap();
    assert_eq!(v["state"], "running");
    let _ = c.run(&acme, &["rm", "-f", "target"]);
}

#[test]
fn sessions_end_on_logout_revocation_and_key_revocation() {
    let Some(c) = Console::start() else { return };
    let acme = c.d.tenant_key("acme");
    let a = c.login(&format!(r#"{{"api_key":"{acme}"}}"#));
    let b = c.login(&format!(r#"{{"token":"{}"}}"#, c.link(&acme, &[])));
    // `dwell ui sessions` lists both; `dwell ui revoke` ends one.
    let out = c.run(&acme, &["ui", "sessions", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&a.id.as_str()) && ids.contains(&b.id.as_str()),
        "{listed}"
    );
    let out = c.run(&acme, &["ui", "revoke", &b.id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = c.call(&b, "GET", "/v1/sandboxes", "");
    assert_eq!(r.status, 401, "{r}");
    assert!(r.text().contains("revoked"), "{r}");
    let out = c.run(&acme, &["ui", "revoke", &b.id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no live console session"),
        "{}",
        stderr(&out)
    );
    // Logging out clears the cookie and ends the session.
    let r = c.call(&a, "DELETE", "/v1/console/session", "");
    assert_eq!(r.status, 204, "{r}");
    assert!(
        r.header("set-cookie")
            .is_some_and(|v| v.contains("Max-Age=0")),
        "{r}"
    );
    assert_eq!(c.call(&a, "GET", "/v1/sandboxes", "").status, 401);
    // A session dies with the API key it was opened with.
    let out = c.d.run(&["tenant", "key", "acme"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key2 = stdout(&out).lines().next().unwrap().trim().to_string();
    let k = c.login(&format!(r#"{{"api_key":"{key2}"}}"#));
    assert_eq!(c.call(&k, "GET", "/v1/sandboxes", "").status, 200);
    c.d.ok(&["tenant", "key", "revoke", "acme", &k.key_id]);
    let r = c.call(&k, "GET", "/v1/sandboxes", "");
    assert_eq!(r.status, 401, "{r}");
    assert!(r.text().contains("revoked"), "{r}");
    // Another tenant's session ids are not this tenant's to revoke.
    let other = c.d.tenant_key("other");
    let o = c.login(&format!(r#"{{"api_key":"{other}"}}"#));
    let out = c.run(&acme, &["ui", "revoke", &o.id]);
    assert!(!out.status.success());
    assert_eq!(c.call(&o, "GET", "/v1/sandboxes", "").status, 200);
}

#[test]
fn the_console_is_served_without_a_key_and_ui_needs_a_tcp_listener() {
    let Some(c) = Console::start() else { return };
    let r = http::request(&c.addr, "GET", "/ui/", &[("Accept-Encoding", "gzip")], b"");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let csp = r.header("content-security-policy").unwrap_or("");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{r}"
    );
    let r = http::request(&c.addr, "GET", "/ui/sandboxes/web1/terminal", &[], b"");
    assert_eq!(r.status, 200, "{r}");
    assert!(r.text().contains("<div id=\"app\">"), "{r}");
    let r = http::request(&c.addr, "GET", "/ui/missing-file.js", &[], b"");
    assert_eq!(r.status, 404, "{r}");
    let r = http::request(&c.addr, "GET", "/", &[], b"");
    assert_eq!((r.status, r.header("location")), (303, Some("/ui/")), "{r}");
    // The API still needs a key (or a session).
    assert_eq!(
        http::request(&c.addr, "GET", "/v1/sandboxes", &[], b"").status,
        401
    );

    // Without a TCP listener, `dwell ui` says how to get one.
    let d = Daemon::start();
    let out = d.run(&["ui", "--no-open"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--listen"), "{}", stderr(&out));
}

/// Revoking an API key, or a console session, ends what is still open
/// with it within `--credential-recheck` (1 s here): a followed log (a
/// streamed answer), a terminal (a WebSocket) and an exec still running
/// (a request not yet answered) of the key; a followed log of the
/// session, which then ends without the stream's last chunk.
#[test]
fn revoking_a_key_or_a_session_ends_what_is_open_with_it() {
    use std::io::{Read, Write};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let Some(c) = Console::start_with(&["--credential-recheck", "1s"]) else {
        return;
    };
    let beta = c.d.tenant_key("beta");
    let tick = ["sh", "-c", "while true; do echo tick; sleep 0.2; done"];
    let mut args = vec![
        "create", "--name", "tick", "--memory", "128M", "--disk", "256M", "--",
    ];
    args.extend_from_slice(&tick);
    c.ok(&beta, &args);
    let spawn = |args: &[&str]| {
        KillOnDrop(
            c.d.cmd(args)
                .env("DWELL_HOST", &c.addr)
                .env("DWELL_API_KEY", &beta)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut open = vec![
        ("logs -f", spawn(&["logs", "tick", "-f"])),
        (
            "exec (WebSocket)",
            spawn(&["exec", "tick", "--", "sleep", "300"]),
        ),
        (
            "exec --json",
            spawn(&["exec", "--json", "tick", "--", "sleep", "300"]),
        ),
    ];
    // Still open after a few rechecks while the key holds.
    std::thread::sleep(Duration::from_secs(3));
    for (what, child) in &mut open {
        assert!(child.0.try_wait().unwrap().is_none(), "{what} ended early");
    }
    let key_id = c.login(&format!(r#"{{"api_key":"{beta}"}}"#)).key_id;
    c.d.ok(&["tenant", "key", "revoke", "beta", &key_id]);
    let deadline = Instant::now() + Duration::from_secs(20);
    for (what, child) in &mut open {
        let Some(status) = child.exit_by(deadline) else {
            panic!("{what} still open 20 s after its key was revoked");
        };
        assert!(!status.success(), "{what} ended as if all went well");
    }
    // The exec stopped while it ran is in the audit log, as a 401.
    let audit: serde_json::Value = serde_json::from_str(&c.d.ok(&["audit", "--json"])).unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["tenant"] == "beta"
                && e["method"] == "POST"
                && e["path"] == "/v1/sandboxes/tick/exec"
                && e["status"] == 401),
        "{audit:#}"
    );

    // A session's followed log, read raw: it breaks off (no last chunk).
    let acme = c.d.tenant_key("acme");
    let mut args = vec![
        "create", "--name", "tock", "--memory", "128M", "--disk", "256M", "--",
    ];
    args.extend_from_slice(&tick);
    c.ok(&acme, &args);
    let s = c.login(&format!(r#"{{"api_key":"{acme}"}}"#));
    let mut conn = std::net::TcpStream::connect(&c.addr).unwrap();
    write!(
        conn,
        "GET /v1/sandboxes/tock/service/logs?follow=true HTTP/1.1\r\nHost: {}\r\n\
         Cookie: {}\r\nOrigin: http://{}\r\nSec-Fetch-Site: same-origin\r\n\r\n",
        c.addr, s.cookie, c.addr
    )
    .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Bytes read; 0 at the end (a close or a reset). A stall (the read
    // timing out) fails: it is not a cut.
    let read = |conn: &mut std::net::TcpStream, got: &mut Vec<u8>, buf: &mut [u8]| {
        let n = match conn.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("reading the session's log stream: {e}"),
        };
        got.extend_from_slice(&buf[..n]);
        n
    };
    while !String::from_utf8_lossy(&got).contains("tick") {
        assert!(
            read(&mut conn, &mut got, &mut buf) > 0,
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    let head = String::from_utf8_lossy(&got).to_string();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("chunked"),
        "{head}"
    );
    c.ok(&acme, &["ui", "revoke", &s.id]);
    let t0 = Instant::now();
    while read(&mut conn, &mut got, &mut buf) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the session's log stream still flows 20 s after its revocation"
        );
    }
    assert!(
        !String::from_utf8_lossy(&got).ends_with("\r\n0\r\n\r\n"),
        "the cut stream ended as if complete"
    );
}
