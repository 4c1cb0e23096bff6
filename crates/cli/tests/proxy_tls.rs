//! End to end: the port proxy over TLS (`dwell serve --proxy-listen ADDR
//! --domain D --proxy-tls-cert PEM --proxy-tls-key PEM`), as the E2B SDKs
//! reach it on E2B: the control plane at `api.D`, envd at `49983-ID.D` and
//! at `sandbox.D` routed by the `E2b-Sandbox-Id`/`E2b-Sandbox-Port`
//! headers, exposed ports at `PORT-ID.D`. A CA and a wildcard certificate
//! are made for the test with `openssl`; every request goes to 127.0.0.1
//! with the host name in SNI and `Host`, no DNS. Wrong and missing envd
//! tokens are refused the same way for sandboxes that exist and ids that
//! do not; a client that never finishes its handshake is dropped, one over
//! the per-address cap gets the 503 that says so over TLS; a renewed
//! certificate is taken on SIGHUP (a broken one is not); bad certificate
//! flags stop the daemon with a message naming the problem.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tls::{have_openssl, presented, TestCa};
use common::*;

const DOMAIN: &str = "dwell.test";

fn https(
    ca: &TestCa,
    proxy: &str,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    common::tls::request(ca, proxy, host, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} https://{host}{path}: {e}"))
}

fn usable() -> bool {
    if !can_run() {
        return false;
    }
    if !have_openssl() {
        skip("the openssl command is missing (Debian package openssl): it makes the test CA");
        return false;
    }
    true
}

#[test]
fn tls_proxy_serves_ports_envd_and_the_api_by_host_name() {
    if !usable() {
        return;
    }
    let ca = TestCa::make(DOMAIN);
    let proxy = format!("127.0.0.1:{}", free_port());
    let port = proxy.rsplit(':').next().unwrap().to_string();
    let (d, _e2b) = Daemon::start_e2b(&[
        "--proxy-listen",
        &proxy,
        "--domain",
        DOMAIN,
        "--proxy-e2b-api",
        "--proxy-tls-cert",
        ca.cert.to_str().unwrap(),
        "--proxy-tls-key",
        ca.key.to_str().unwrap(),
        "--proxy-max-per-ip",
        "3",
    ]);
    wait_listening(&proxy, 20);
    assert!(
        d.log().contains(&format!(
            "exposed ports are https://PORT-ID.{DOMAIN}:{port}/"
        )),
        "the daemon prints https URLs"
    );
    // A client that connects and never starts its handshake is dropped
    // (checked at the end; the limit is 10 s).
    let mut idle = TcpStream::connect(&proxy).unwrap();
    let idle_since = Instant::now();

    // The control plane at api.D (a key of the tenant `default`, so that
    // the CLI on the socket reaches the sandbox too).
    let key = format!(
        "e2b_{}",
        d.tenant_key("default").strip_prefix("dwk_").unwrap()
    );
    let api = format!("api.{DOMAIN}");
    let r = https(&ca, &proxy, &api, "GET", "/v2/sandboxes", &[], b"");
    assert_eq!(r.status, 401, "no API key: {r}");
    let r = https(
        &ca,
        &proxy,
        &api,
        "POST",
        "/v2/sandboxes",
        &[("X-API-KEY", &key), ("Content-Type", "application/json")],
        br#"{"templateID":"base","timeout":300}"#,
    );
    assert_eq!(r.status, 201, "create through api.D: {r}");
    let v = r.json();
    let id = v["sandboxID"].as_str().unwrap().to_string();
    let token = v["envdAccessToken"].as_str().unwrap().to_string();
    assert_eq!(v["domain"], format!("{DOMAIN}:{port}"), "{v}");

    // URLs the control plane hands out through api.D are https ones.
    let r = https(
        &ca,
        &proxy,
        &api,
        "POST",
        "/v3/templates",
        &[("X-API-KEY", &key), ("Content-Type", "application/json")],
        br#"{"name":"tls-upload"}"#,
    );
    assert_eq!(r.status, 202, "{r}");
    let tid = r.json()["templateID"].as_str().unwrap().to_string();
    let r = https(
        &ca,
        &proxy,
        &api,
        "GET",
        &format!("/templates/{tid}/files/{}", "ab".repeat(32)),
        &[("X-API-KEY", &key)],
        b"",
    );
    assert_eq!(r.status, 201, "{r}");
    let upload = r.json()["url"].as_str().unwrap().to_string();
    assert!(
        upload.starts_with(&format!(
            "https://api.{DOMAIN}:{port}/templates/files/upload/"
        )),
        "{upload}"
    );

    // A server on a port: PORT-ID.D over https (E2B sandboxes' ports are
    // public unless made otherwise).
    d.sh(
        &id,
        "mkdir -p /tmp/site && echo hello-tls > /tmp/site/hello.txt",
    );
    d.ok(&[
        "exec",
        "-d",
        &id,
        "--",
        "python3",
        "-m",
        "http.server",
        "8080",
        "--bind",
        "127.0.0.1",
        "--directory",
        "/tmp/site",
    ]);
    let host = format!("8080-{id}.{DOMAIN}");
    let mut last = None;
    wait_for(30, "the server to answer through the TLS proxy", || {
        let r = https(&ca, &proxy, &host, "GET", "/hello.txt", &[], b"");
        let ok = r.status == 200;
        last = Some(r);
        ok
    });
    assert_eq!(last.unwrap().text(), "hello-tls\n");

    // envd at sandbox.D, routed by E2B's headers.
    let sbx = format!("sandbox.{DOMAIN}");
    let routed = [
        ("E2b-Sandbox-Id", id.as_str()),
        ("E2b-Sandbox-Port", "49983"),
        ("X-Access-Token", token.as_str()),
    ];
    let r = https(&ca, &proxy, &sbx, "GET", "/health", &routed, b"");
    assert_eq!(r.status, 204, "health through sandbox.D: {r}");
    let file = "/files?path=%2Ftmp%2Fsite%2Fhello.txt";
    let r = https(&ca, &proxy, &sbx, "GET", file, &routed, b"");
    assert_eq!(r.status, 200, "a file through sandbox.D: {r}");
    assert_eq!(r.text(), "hello-tls\n");
    // ... and at 49983-ID.D.
    let envd_host = format!("49983-{id}.{DOMAIN}");
    let r = https(&ca, &proxy, &envd_host, "GET", file, &routed[2..], b"");
    assert_eq!(r.status, 200, "a file through 49983-ID.D: {r}");
    // Missing and wrong tokens, and an id that does not exist: the same
    // 401 on both hosts, so nothing tells which ids exist.
    let zero = "0".repeat(64);
    let nobody = "a".repeat(20);
    let mut refusals = Vec::new();
    for (sid, tok) in [(&id, None), (&id, Some(zero.as_str())), (&nobody, None)] {
        let mut h = vec![("E2b-Sandbox-Id", sid.as_str())];
        if let Some(t) = tok {
            h.push(("X-Access-Token", t));
        }
        let r = https(&ca, &proxy, &sbx, "GET", file, &h, b"");
        assert_eq!(r.status, 401, "sandbox.D {sid} {tok:?}: {r}");
        assert!(!r.text().contains("hello-tls"));
        refusals.push(r.text().replace(sid.as_str(), "ID"));
        let other = format!("49983-{sid}.{DOMAIN}");
        let h: Vec<_> = h.into_iter().skip(1).collect();
        let r = https(&ca, &proxy, &other, "GET", file, &h, b"");
        assert_eq!(r.status, 401, "49983-{sid}.D {tok:?}: {r}");
    }
    let r = https(
        &ca,
        &proxy,
        &sbx,
        "GET",
        file,
        &[("E2b-Sandbox-Id", &nobody), ("X-Access-Token", &zero)],
        b"",
    );
    assert_eq!(
        r.text().replace(&nobody, "ID"),
        refusals[1],
        "an unknown id is refused as a wrong token is"
    );
    // sandbox.D to another port: that port, by id only.
    let to_8080 = [
        ("E2b-Sandbox-Id", id.as_str()),
        ("E2b-Sandbox-Port", "8080"),
    ];
    let r = https(&ca, &proxy, &sbx, "GET", "/hello.txt", &to_8080, b"");
    assert_eq!(r.status, 200, "port 8080 through sandbox.D: {r}");
    assert_eq!(r.text(), "hello-tls\n");
    let by_name = [("E2b-Sandbox-Id", "web"), ("E2b-Sandbox-Port", "8080")];
    let r = https(&ca, &proxy, &sbx, "GET", "/hello.txt", &by_name, b"");
    assert_eq!(r.status, 404, "names are not routed on sandbox.D: {r}");
    let r = https(&ca, &proxy, &sbx, "GET", "/health", &[], b"");
    assert!(
        r.status == 400 && r.text().contains("E2b-Sandbox-Id"),
        "sandbox.D without headers says what to send: {r}"
    );
    let bad_port = [("E2b-Sandbox-Id", id.as_str()), ("E2b-Sandbox-Port", "x")];
    let r = https(&ca, &proxy, &sbx, "GET", "/health", &bad_port, b"");
    assert_eq!(r.status, 400, "{r}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let r = http::try_request(&proxy, "GET", "/", &[("Host", &host)], b"");
    assert!(
        !matches!(&r, Ok(r) if r.status == 200),
        "plain HTTP is not served on the TLS port: {r:?}"
    );

    // The idle client has been dropped by now, or is within seconds.
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut b = [0u8; 16];
    let n = idle.read(&mut b);
    assert!(
        matches!(n, Ok(0))
            || matches!(&n, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "a client without a handshake is closed: {n:?}"
    );
    assert!(
        idle_since.elapsed() < Duration::from_secs(25),
        "within the handshake limit"
    );

    // Over the per-address cap, a TLS client still gets the 503 that says
    // why (after the handshake), not just a closed connection.
    std::thread::sleep(Duration::from_millis(300));
    let cfg = ca.client(&[b"http/1.1"]);
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..5 {
        let mut c = common::tls::connect(cfg.clone(), &proxy, &host).unwrap();
        c.sock
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        if !got.is_empty() {
            refused = Some(http::parse(&got));
            break;
        }
        c.sock
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        held.push(c);
    }
    let refused = refused.expect("a connection over --proxy-max-per-ip 3 is refused");
    assert!(
        refused.status == 503 && refused.text().contains("--proxy-max-per-ip"),
        "{refused}"
    );
    assert!(held.len() >= 2, "{} held before the refusal", held.len());
    drop(held);

    // A renewed certificate is presented to new connections after SIGHUP;
    // files that do not load leave the one in use.
    let hup = || {
        let pid = d.pid().expect("the daemon runs") as i32;
        // SAFETY: kill with a pid and a signal number only.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    };
    let first = presented(&ca, &proxy, &host);
    ca.reissue();
    hup();
    wait_for(20, "the renewed certificate", || {
        presented(&ca, &proxy, &host) != first
    });
    let second = presented(&ca, &proxy, &host);
    assert!(d
        .log()
        .contains("SIGHUP: reloaded the port proxy's certificate"));
    std::fs::write(&ca.key, "not a key\n").unwrap();
    hup();
    wait_for(20, "the failed reload to be logged", || {
        d.log()
            .contains("cannot reload the port proxy's certificate")
    });
    assert_eq!(presented(&ca, &proxy, &host), second, "the old one stays");
    let r = https(&ca, &proxy, &host, "GET", "/hello.txt", &[], b"");
    assert_eq!(r.status, 200, "still served: {r}");

    let r = http::request(
        &_e2b.api,
        "DELETE",
        &format!("/sandboxes/{id}"),
        &[("X-API-KEY", &key)],
        b"",
    );
    assert_eq!(r.status, 204, "{r}");
}

/// `dwell serve` with the given extra flags; it must fail at once with a
/// message containing `want`.
fn serve_fails(args: &[String], want: &str) {
    let dir = tempfile::Builder::new()
        .prefix("dwell-tls-bad-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut cmd = Command::new(dwell_bin());
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--agent")
        .arg(agent_bin())
        .args(args);
    let out = output_within(cmd, "dwell serve with bad TLS flags", String::new);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} must fail: {err}");
    assert!(err.contains(want), "{args:?}: wanted {want:?} in: {err}");
}

#[test]
fn bad_tls_flags_stop_the_daemon_with_the_reason() {
    if !usable() {
        return;
    }
    let ca = TestCa::make(DOMAIN);
    let (cert, key) = (ca.cert.to_str().unwrap(), ca.key.to_str().unwrap());
    let other_key = ca.dir.path().join("other.key");
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .arg("-out")
        .arg(&other_key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let other_key = other_key.to_str().unwrap();
    let missing = ca.dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let proxy = format!("127.0.0.1:{}", free_port());
    let base = ["--proxy-listen", &proxy, "--domain", DOMAIN];
    let with = |more: &[&'_ str]| -> Vec<String> {
        base.iter().chain(more).map(|s| s.to_string()).collect()
    };
    serve_fails(
        &with(&["--proxy-tls-cert", cert]),
        "--proxy-tls-cert needs --proxy-tls-key",
    );
    serve_fails(
        &with(&["--proxy-tls-key", key]),
        "--proxy-tls-key needs --proxy-tls-cert",
    );
    serve_fails(
        &with(&["--proxy-tls-cert", missing, "--proxy-tls-key", key]),
        &format!("cannot read --proxy-tls-cert {missing}"),
    );
    serve_fails(
        &with(&["--proxy-tls-cert", cert, "--proxy-tls-key", other_key]),
        "does not go with the certificate",
    );
    serve_fails(
        &with(&["--proxy-tls-cert", key, "--proxy-tls-key", key]),
        "holds no certificate",
    );
    serve_fails(
        &with(&["--proxy-tls-cert", cert, "--proxy-tls-key", cert]),
        "holds no usable private key",
    );
    serve_fails(
        &["--proxy-tls-cert", cert, "--proxy-tls-key", key].map(String::from),
        "give --proxy-listen ADDR too",
    );
    // The control plane goes on the proxy only with --e2b-listen.
    serve_fails(&with(&["--proxy-e2b-api"]), "give --e2b-listen ADDR too");
}

/// A TCP connection to `dst` from the local address `src` (another
/// loopback address stands for another client).
fn connect_from(src: std::net::Ipv4Addr, dst: &str) -> TcpStream {
    use std::os::fd::FromRawFd;
    let dst: std::net::SocketAddrV4 = dst.parse().unwrap();
    let sin = |a: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket, bound and connected with valid sockaddr_in
    // values of the given length; the descriptor is owned by the stream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let a = sin(src, 0);
        let r = libc::bind(fd, &a as *const _ as *const libc::sockaddr, len);
        assert_eq!(r, 0, "bind {src}: {}", std::io::Error::last_os_error());
        let b = sin(*dst.ip(), dst.port());
        let r = libc::connect(fd, &b as *const _ as *const libc::sockaddr, len);
        assert_eq!(r, 0, "connect {dst}: {}", std::io::Error::last_os_error());
        stream
    }
}

/// One address holding many idle connections (no TLS handshake started)
/// over its --proxy-max-per-ip cap takes no connection slots from other
/// clients: another address is served at once, and the idle ones are
/// closed.
#[test]
fn idle_tls_connections_over_the_per_address_cap_do_not_lock_others_out() {
    if !usable() {
        return;
    }
    let ca = TestCa::make(DOMAIN);
    let proxy = format!("127.0.0.1:{}", free_port());
    let (_d, _e2b) = Daemon::start_e2b(&[
        "--proxy-listen",
        &proxy,
        "--domain",
        DOMAIN,
        "--proxy-e2b-api",
        "--proxy-tls-cert",
        ca.cert.to_str().unwrap(),
        "--proxy-tls-key",
        ca.key.to_str().unwrap(),
        "--proxy-max-per-ip",
        "2",
        "--max-connections",
        "8",
    ]);
    wait_listening(&proxy, 20);
    let attacker = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let idle: Vec<TcpStream> = (0..40).map(|_| connect_from(attacker, &proxy)).collect();
    std::thread::sleep(Duration::from_millis(300));

    let api = format!("api.{DOMAIN}");
    let start = Instant::now();
    let r = https(&ca, &proxy, &api, "GET", "/v2/sandboxes", &[], b"");
    assert_eq!(r.status, 401, "another client is answered: {r}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "another client waited {:?} behind idle connections over the cap",
        start.elapsed()
    );

    // The ones over the cap are closed within a few seconds (the two
    // within it have the 10 s handshake limit).
    let mut closed = 0;
    for mut s in idle.into_iter().skip(2) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            other => panic!("an idle connection over the cap: {other:?}"),
        }
    }
    assert_eq!(closed, 38);
}
