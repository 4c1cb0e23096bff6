//! End to end: the E2B envd data plane (`dwell serve --e2b-sandbox-listen`)
//! spoken on the wire as the E2B SDKs speak it — Connect JSON unary and
//! enveloped streaming RPCs, `/files` uploads (multipart, gzip
//! octet-stream) and downloads, signed URLs, watchers — against a real
//! sandbox created through the E2B control plane.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A response: status, lower-cased headers, de-chunked body.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// The Connect envelopes of a streaming response: (flags, JSON).
    fn envelopes(&self) -> Vec<(u8, Value)> {
        let mut out = Vec::new();
        let mut b = &self.body[..];
        while b.len() >= 5 {
            let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
            out.push((b[0], serde_json::from_slice(&b[5..5 + len]).unwrap()));
            b = &b[5 + len..];
        }
        assert!(b.is_empty(), "trailing bytes after the envelopes");
        out
    }
}

/// One HTTP/1.1 request with `Connection: close`.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut b = &body[..];
        loop {
            let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
            let n =
                usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
            b = &b[nl + 4 + n..];
        }
        body = out;
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn envelope(v: &Value) -> Vec<u8> {
    let p = serde_json::to_vec(v).unwrap();
    let mut b = vec![0u8];
    b.extend_from_slice(&(p.len() as u32).to_be_bytes());
    b.extend_from_slice(&p);
    b
}

fn b64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

struct Sbx<'a> {
    envd: &'a str,
    id: String,
    token: String,
}

impl Sbx<'_> {
    fn hdrs<'b>(&'b self, ct: &'b str) -> Vec<(&'b str, &'b str)> {
        vec![
            ("E2b-Sandbox-Id", self.id.as_str()),
            ("X-Access-Token", self.token.as_str()),
            ("Content-Type", ct),
            ("Connect-Protocol-Version", "1"),
        ]
    }

    fn unary(&self, method: &str, req: Value) -> Resp {
        http(
            self.envd,
            "POST",
            &format!("/{method}"),
            &self.hdrs("application/json"),
            &serde_json::to_vec(&req).unwrap(),
        )
    }

    fn stream(&self, method: &str, req: Value) -> Vec<(u8, Value)> {
        let mut h = self.hdrs("application/connect+json");
        h.push(("Keepalive-Ping-Interval", "1"));
        let r = http(
            self.envd,
            "POST",
            &format!("/{method}"),
            &h,
            &envelope(&req),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("content-type"), Some("application/connect+json"));
        r.envelopes()
    }
}

#[test]
fn envd_wire_protocol_against_a_real_sandbox() {
    if !can_run() {
        return;
    }
    let api = format!("127.0.0.1:{}", free_port());
    let envd = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(&["--e2b-listen", &api, "--e2b-sandbox-listen", &envd]);
    for _ in 0..200 {
        if TcpStream::connect(&api).is_ok() && TcpStream::connect(&envd).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let key = d
        .ok(&["tenant", "create", "envd-t"])
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    let r = http(
        &api,
        "POST",
        "/v2/sandboxes",
        &[("X-API-KEY", &key), ("Content-Type", "application/json")],
        br#"{"templateID":"base","timeout":300,"metadata":{},"envVars":{}}"#,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let sb = Sbx {
        envd: &envd,
        id: v["sandboxID"].as_str().unwrap().to_string(),
        token: v["envdAccessToken"].as_str().unwrap().to_string(),
    };

    // Health and authentication: without the sandbox's token a sandbox
    // looks like a missing one.
    let r = http(
        &envd,
        "GET",
        "/health",
        &[("E2b-Sandbox-Id", &sb.id), ("X-Access-Token", &sb.token)],
        b"",
    );
    assert_eq!(r.status, 204);
    let r = http(&envd, "GET", "/health", &[("E2b-Sandbox-Id", &sb.id)], b"");
    assert_eq!(r.status, 502);
    // A unary call in another codec: 415.
    let r = http(
        &envd,
        "POST",
        "/process.Process/List",
        &sb.hdrs("application/proto"),
        b"",
    );
    assert_eq!(r.status, 415);
    // A ListDir too deep is refused up front.
    let r = sb.unary(
        "filesystem.Filesystem/ListDir",
        json!({"path": "/", "depth": 100000}),
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let r = http(
        &envd,
        "GET",
        "/health",
        &[("E2b-Sandbox-Id", "nosuchsandbox")],
        b"",
    );
    assert_eq!(r.status, 502);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("was not found"));
    let r = http(
        &envd,
        "POST",
        "/process.Process/List",
        &[
            ("E2b-Sandbox-Id", &sb.id),
            ("X-Access-Token", "wrong"),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    );
    assert_eq!(r.status, 401);
    // Host-name routing: 49983-{id}.{domain}.
    let host = format!("49983-{}.dwell.test", sb.id);
    let r = http(
        &envd,
        "POST",
        "/process.Process/List",
        &[
            ("Host", &host),
            ("X-Access-Token", &sb.token),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Process.Start: start, stdout/stderr data, end with the exit code, end frame.
    let ev = sb.stream(
        "process.Process/Start",
        json!({"process": {"cmd": "/bin/sh", "args": ["-c", "echo hi; echo oops >&2; sleep 1.5; exit 3"], "envs": {"A": "1"}}, "stdin": false}),
    );
    assert!(
        ev[0].1["event"]["start"]["pid"].as_u64().unwrap() > 1,
        "{ev:?}"
    );
    let all: Vec<&Value> = ev.iter().map(|(_, v)| v).collect();
    assert!(
        all.iter().any(|v| v["event"]["data"]["stdout"] == "aGkK"),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|v| v["event"]["data"]["stderr"] == b64(b"oops\n")),
        "{all:?}"
    );
    assert!(
        all.iter().any(|v| v["event"].get("keepalive").is_some()),
        "keepalive at 1 s: {all:?}"
    );
    let end = &ev[ev.len() - 2].1["event"]["end"];
    assert_eq!(end["exitCode"], 3);
    assert_eq!(end["status"], "exit status 3");
    assert_eq!(ev.last().unwrap(), &(2u8, json!({})));

    // A PTY process in the background: input, resize, list, signal.
    let envd2 = envd.clone();
    let id2 = sb.id.clone();
    let tok2 = sb.token.clone();
    let bg = std::thread::spawn(move || {
        let s = Sbx {
            envd: &envd2,
            id: id2,
            token: tok2,
        };
        s.stream(
            "process.Process/Start",
            json!({"process": {"cmd": "/bin/sh", "args": []}, "pty": {"size": {"cols": 80, "rows": 24}}, "tag": "shell"}),
        )
    });
    let mut pid = 0;
    for _ in 0..100 {
        let l = sb.unary("process.Process/List", json!({})).json();
        if let Some(p) = l["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["tag"] == "shell")
        {
            pid = p["pid"].as_u64().unwrap();
            assert_eq!(p["config"]["cmd"], "/bin/sh");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pid > 0, "the tagged pty process is listed");
    let r = sb.unary(
        "process.Process/Update",
        json!({"process": {"pid": pid}, "pty": {"size": {"cols": 100, "rows": 30}}}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = sb.unary(
        "process.Process/SendInput",
        json!({"process": {"tag": "shell"}, "input": {"pty": b64(b"stty size; exit 7\n")}}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let ev = bg.join().unwrap();
    let out: String = ev
        .iter()
        .filter_map(|(_, v)| v["event"]["data"]["pty"].as_str())
        .map(|s| String::from_utf8_lossy(&unb64(s)).into_owned())
        .collect();
    assert!(
        out.contains("30 100"),
        "stty size after the resize: {out:?}"
    );
    assert_eq!(ev[ev.len() - 2].1["event"]["end"]["exitCode"], 7);
    let r = sb.unary(
        "process.Process/SendSignal",
        json!({"process": {"pid": 999999}, "signal": "SIGNAL_SIGKILL"}),
    );
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], "not_found");

    // Files: multipart upload (the SDK's default), download, 404.
    let boundary = "b0undary";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/root/d/a.txt\"\r\nContent-Type: text/plain\r\n\r\npersist me\r\n--{boundary}--\r\n"
    );
    let ct = format!("multipart/form-data; boundary={boundary}");
    let mut h = sb.hdrs(&ct);
    h.retain(|(k, _)| *k != "Connect-Protocol-Version");
    let r = http(
        &envd,
        "POST",
        "/files?path=%2Froot%2Fd%2Fa.txt",
        &h,
        form.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json(),
        json!([{"name": "a.txt", "type": "file", "path": "/root/d/a.txt"}])
    );
    let r = http(
        &envd,
        "GET",
        "/files?path=%2Froot%2Fd%2Fa.txt",
        &sb.hdrs(""),
        b"",
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"persist me".as_slice())
    );
    let r = http(&envd, "GET", "/files?path=d%2Fa.txt", &sb.hdrs(""), b"");
    assert_eq!(
        r.body, b"persist me",
        "relative paths resolve against root's home"
    );
    let r = http(&envd, "GET", "/files?path=%2Fnope", &sb.hdrs(""), b"");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], 404);

    // Octet-stream with gzip.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&vec![b'z'; 100_000]).unwrap();
    let gz = gz.finish().unwrap();
    let mut h = sb.hdrs("application/octet-stream");
    h.push(("Content-Encoding", "gzip"));
    let r = http(&envd, "POST", "/files?path=%2Ftmp%2Fz.bin", &h, &gz);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Filesystem RPCs.
    let st = sb
        .unary("filesystem.Filesystem/Stat", json!({"path": "/tmp/z.bin"}))
        .json();
    assert_eq!(st["entry"]["size"], "100000");
    assert_eq!(st["entry"]["type"], "FILE_TYPE_FILE");
    assert_eq!(st["entry"]["permissions"], "-rw-r--r--");
    assert_eq!(st["entry"]["owner"], "root");
    let r = sb.unary("filesystem.Filesystem/MakeDir", json!({"path": "/tmp/m/n"}));
    assert_eq!(r.json()["entry"]["type"], "FILE_TYPE_DIRECTORY");
    let r = sb.unary("filesystem.Filesystem/MakeDir", json!({"path": "/tmp/m/n"}));
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (409, json!("already_exists"))
    );
    let r = sb.unary(
        "filesystem.Filesystem/Move",
        json!({"source": "/tmp/z.bin", "destination": "/tmp/m/n/o/z2.bin"}),
    );
    assert_eq!(r.json()["entry"]["path"], "/tmp/m/n/o/z2.bin");
    let l = sb
        .unary(
            "filesystem.Filesystem/ListDir",
            json!({"path": "/tmp/m", "depth": 3}),
        )
        .json();
    let paths: Vec<&str> = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/tmp/m/n", "/tmp/m/n/o", "/tmp/m/n/o/z2.bin"]);
    let r = sb.unary("filesystem.Filesystem/Remove", json!({"path": "/tmp/m"}));
    assert_eq!(r.status, 200);
    let r = sb.unary("filesystem.Filesystem/Stat", json!({"path": "/tmp/m"}));
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (404, json!("not_found"))
    );

    // Polled watcher.
    sb.unary("filesystem.Filesystem/MakeDir", json!({"path": "/tmp/w"}));
    let w = sb
        .unary(
            "filesystem.Filesystem/CreateWatcher",
            json!({"path": "/tmp/w", "recursive": true, "includeEntry": true}),
        )
        .json();
    let wid = w["watcherId"].as_str().unwrap().to_string();
    let r = sb.unary(
        "filesystem.Filesystem/MakeDir",
        json!({"path": "/tmp/w/sub"}),
    );
    assert_eq!(r.status, 200);
    let mut events = Vec::new();
    for _ in 0..50 {
        let e = sb
            .unary(
                "filesystem.Filesystem/GetWatcherEvents",
                json!({"watcherId": wid}),
            )
            .json();
        events.extend(e["events"].as_array().unwrap().clone());
        if !events.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(events[0]["name"], "sub", "{events:?}");
    assert_eq!(events[0]["type"], "EVENT_TYPE_CREATE");
    assert_eq!(events[0]["entry"]["type"], "FILE_TYPE_DIRECTORY");
    let r = sb.unary(
        "filesystem.Filesystem/RemoveWatcher",
        json!({"watcherId": wid}),
    );
    assert_eq!(r.status, 200);
    let r = sb.unary(
        "filesystem.Filesystem/GetWatcherEvents",
        json!({"watcherId": wid}),
    );
    assert_eq!(r.status, 404);

    // Users: a named user that exists runs as itself and owns what envd
    // makes for it; an unknown one falls back to root.
    let ev = sb.stream(
        "process.Process/Start",
        json!({"process": {"cmd": "useradd", "args": ["-m", "-u", "1500", "e2buser"]}}),
    );
    assert_eq!(ev[ev.len() - 2].1["event"]["end"]["exitCode"], 0, "{ev:?}");
    let basic = format!("Basic {}", b64(b"e2buser:"));
    let as_user = |method: &str, req: Value| {
        let mut h = sb.hdrs("application/connect+json");
        h.push(("Authorization", &basic));
        let body = if method.ends_with("Start") {
            envelope(&req)
        } else {
            h[2].1 = "application/json";
            serde_json::to_vec(&req).unwrap()
        };
        http(&envd, "POST", &format!("/{method}"), &h, &body)
    };
    let r = as_user(
        "process.Process/Start",
        json!({"process": {"cmd": "/bin/sh", "args": ["-c", "id -u; pwd"]}}),
    );
    let out: String = r
        .envelopes()
        .iter()
        .filter_map(|(_, v)| v["event"]["data"]["stdout"].as_str())
        .map(|s| String::from_utf8_lossy(&unb64(s)).into_owned())
        .collect();
    assert_eq!(out, "1500\n/home/e2buser\n");
    let r = as_user(
        "filesystem.Filesystem/MakeDir",
        json!({"path": "made/deep"}),
    );
    assert_eq!(r.json()["entry"]["path"], "/home/e2buser/made/deep");
    assert_eq!(r.json()["entry"]["owner"], "e2buser");
    let st = sb
        .unary(
            "filesystem.Filesystem/Stat",
            json!({"path": "/home/e2buser/made"}),
        )
        .json();
    assert_eq!(
        st["entry"]["owner"], "e2buser",
        "created parents belong to the user too"
    );
    let r = http(
        &envd,
        "POST",
        "/files?path=up%2Fu.txt&username=e2buser",
        &sb.hdrs("application/octet-stream"),
        b"mine",
    );
    assert_eq!(r.json()[0]["path"], "/home/e2buser/up/u.txt");
    let st = sb
        .unary(
            "filesystem.Filesystem/Stat",
            json!({"path": "/home/e2buser/up/u.txt"}),
        )
        .json();
    assert_eq!(
        (st["entry"]["owner"].as_str(), st["entry"]["group"].as_str()),
        (Some("e2buser"), Some("e2buser"))
    );
    let mut h = sb.hdrs("application/connect+json");
    let nobody = format!("Basic {}", b64(b"user:"));
    h.push(("Authorization", &nobody));
    let r = http(
        &envd,
        "POST",
        "/process.Process/Start",
        &h,
        &envelope(&json!({"process": {"cmd": "whoami"}})),
    );
    let out: String = r
        .envelopes()
        .iter()
        .filter_map(|(_, v)| v["event"]["data"]["stdout"].as_str())
        .map(|s| String::from_utf8_lossy(&unb64(s)).into_owned())
        .collect();
    assert_eq!(
        out, "root\n",
        "E2B's default `user` does not exist here: root"
    );
    // The user's own permissions apply: no writing where it may not, no
    // taking over root's files, no following its symlinks into them.
    let r = http(
        &envd,
        "POST",
        "/files?path=%2Fetc%2Fplanted&username=e2buser",
        &sb.hdrs("application/octet-stream"),
        b"x",
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    sb.stream(
        "process.Process/Start",
        json!({"process": {"cmd": "/bin/sh", "args": ["-c", "echo root > /tmp/rootfile; chmod 644 /tmp/rootfile"]}}),
    );
    let r = http(
        &envd,
        "POST",
        "/files?path=%2Ftmp%2Frootfile&username=e2buser",
        &sb.hdrs("application/octet-stream"),
        b"mine now",
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let st = sb
        .unary(
            "filesystem.Filesystem/Stat",
            json!({"path": "/tmp/rootfile"}),
        )
        .json();
    assert_eq!(st["entry"]["owner"], "root", "{st}");
    as_user(
        "process.Process/Start",
        json!({"process": {"cmd": "ln", "args": ["-s", "/tmp/rootfile", "/home/e2buser/link"]}}),
    );
    let boundary = "zz";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"link\"\r\n\r\nvia link\r\n--{boundary}--\r\n"
    );
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = http(
        &envd,
        "POST",
        "/files?username=e2buser",
        &sb.hdrs(&ct),
        form.as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let r = http(
        &envd,
        "GET",
        "/files?path=%2Ftmp%2Frootfile",
        &sb.hdrs(""),
        b"",
    );
    assert_eq!(r.body, b"root\n");
    let r = as_user(
        "filesystem.Filesystem/Remove",
        json!({"path": "/tmp/rootfile"}),
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));

    let mut h = sb.hdrs("application/octet-stream");
    h.push(("X-Metadata-Owner", "me"));
    let r = http(&envd, "POST", "/files?path=%2Ftmp%2Fmeta", &h, b"x");
    assert_eq!(r.status, 400, "file metadata is refused");

    // WatchDir streams `start`, then events, and ends (end-of-stream frame)
    // when the watched directory is removed.
    sb.unary("filesystem.Filesystem/MakeDir", json!({"path": "/tmp/ws"}));
    let (envd3, id3, tok3) = (envd.clone(), sb.id.clone(), sb.token.clone());
    let watch = std::thread::spawn(move || {
        let s = Sbx {
            envd: &envd3,
            id: id3,
            token: tok3,
        };
        s.stream(
            "filesystem.Filesystem/WatchDir",
            json!({"path": "/tmp/ws", "recursive": false}),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let r = http(
        &envd,
        "POST",
        "/files?path=%2Ftmp%2Fws%2Fn.txt",
        &sb.hdrs("application/octet-stream"),
        b"n",
    );
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(300));
    sb.unary("filesystem.Filesystem/Remove", json!({"path": "/tmp/ws"}));
    let ev = watch.join().unwrap();
    assert_eq!(ev[0], (0, json!({"start": {}})));
    assert!(
        ev.contains(&(
            0,
            json!({"filesystem": {"name": "n.txt", "type": "EVENT_TYPE_CREATE"}})
        )),
        "{ev:?}"
    );
    assert_eq!(ev.last().unwrap(), &(2u8, json!({})));

    // A signed download URL routes itself (no sandbox header, no token).
    let sig = {
        use sha2::Digest;
        let raw = format!("/root/d/a.txt:read::{}", sb.token);
        let d = sha2::Sha256::digest(raw.as_bytes());
        format!("v1_{}", b64(&d).trim_end_matches('='))
    };
    let q = format!(
        "/files?path=%2Froot%2Fd%2Fa.txt&signature={}",
        sig.replace('/', "%2F").replace('+', "%2B")
    );
    let r = http(&envd, "GET", &q, &[], b"");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"persist me".as_slice())
    );
    let r = http(
        &envd,
        "GET",
        "/files?path=%2Froot%2Fd%2Fa.txt&signature=v1_bad",
        &[],
        b"",
    );
    assert_eq!(r.status, 401);

    // A signed upload URL writes exactly one file, at its signed path.
    let sig = {
        use sha2::Digest;
        let raw = format!("/tmp/signed.txt:write::{}", sb.token);
        let d = sha2::Sha256::digest(raw.as_bytes());
        format!("v1_{}", b64(&d).trim_end_matches('='))
    };
    let q = format!(
        "/files?path=%2Ftmp%2Fsigned.txt&signature={}",
        sig.replace('/', "%2F").replace('+', "%2B")
    );
    let two = "--q\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/tmp/evil1\"\r\n\r\n1\r\n--q\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/etc/evil2\"\r\n\r\n2\r\n--q--\r\n";
    let mp = [("Content-Type", "multipart/form-data; boundary=q")];
    let r = http(&envd, "POST", &q, &mp, two.as_bytes());
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let r = http(
        &envd,
        "GET",
        "/files?path=%2Fetc%2Fevil2",
        &sb.hdrs(""),
        b"",
    );
    assert_eq!(r.status, 404, "the second part was not written");
    let one = "--q\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/etc/evil3\"\r\n\r\nsigned\r\n--q--\r\n";
    let r = http(&envd, "POST", &q, &mp, one.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()[0]["path"], "/tmp/signed.txt");
    let r = http(
        &envd,
        "GET",
        "/files?path=%2Ftmp%2Fsigned.txt",
        &sb.hdrs(""),
        b"",
    );
    assert_eq!(r.body, b"signed");

    // Endless account files (a sandbox may point /etc/passwd anywhere) are
    // ignored, not read into the daemon.
    sb.stream(
        "process.Process/Start",
        json!({"process": {"cmd": "/bin/sh", "args": ["-c", "cp /etc/passwd /tmp/passwd.bak && ln -sf /dev/zero /etc/passwd"]}}),
    );
    let r = as_user("filesystem.Filesystem/Stat", json!({"path": "/tmp"}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    sb.stream(
        "process.Process/Start",
        json!({"process": {"cmd": "/bin/sh", "args": ["-c", "rm /etc/passwd && cp /tmp/passwd.bak /etc/passwd"]}}),
    );

    // A paused sandbox is "not found" to envd (the SDK's SandboxNotRunning)
    // until it is connected (resumed) again.
    let r = http(
        &api,
        "POST",
        &format!("/sandboxes/{}/pause", sb.id),
        &[("X-API-KEY", &key), ("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let r = http(&envd, "GET", "/health", &sb.hdrs(""), b"");
    assert_eq!(r.status, 502);
    let r = sb.unary("process.Process/List", json!({}));
    assert_eq!(r.json()["code"], "unavailable");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("was not found"));
    let r = http(
        &api,
        "POST",
        &format!("/v2/sandboxes/{}/connect", sb.id),
        &[("X-API-KEY", &key), ("Content-Type", "application/json")],
        br#"{"timeout":300}"#,
    );
    assert!(
        r.status == 200 || r.status == 201,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = http(
        &envd,
        "GET",
        "/files?path=%2Froot%2Fd%2Fa.txt",
        &sb.hdrs(""),
        b"",
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"persist me".as_slice())
    );

    let r = http(
        &api,
        "DELETE",
        &format!("/sandboxes/{}", sb.id),
        &[("X-API-KEY", &key)],
        b"",
    );
    assert_eq!(r.status, 204);
    let r = sb.unary("process.Process/List", json!({}));
    assert!(
        r.status >= 500,
        "a deleted sandbox is not reachable: {}",
        r.status
    );
}

fn unb64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    let mut out = Vec::new();
    for c in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &v) in c.iter().enumerate() {
            n |= (v as u32) << (18 - 6 * i);
        }
        for i in 0..c.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// SIGTERM does not wait forever for envd streams that never end by
/// themselves (a running process's output stream): the listener drains for
/// a bounded time, then closes them.
#[test]
fn shutdown_is_not_held_by_open_envd_streams() {
    if !can_run() {
        return;
    }
    let api = format!("127.0.0.1:{}", free_port());
    let envd = format!("127.0.0.1:{}", free_port());
    let mut d = Daemon::start_with(&["--e2b-listen", &api, "--e2b-sandbox-listen", &envd]);
    wait_for(10, "the E2B listeners", || {
        TcpStream::connect(&api).is_ok() && TcpStream::connect(&envd).is_ok()
    });
    let key = d
        .ok(&["tenant", "create", "drain-t"])
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    let r = http(
        &api,
        "POST",
        "/v2/sandboxes",
        &[("X-API-KEY", &key), ("Content-Type", "application/json")],
        br#"{"templateID":"base","timeout":300}"#,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let (id, token) = (
        v["sandboxID"].as_str().unwrap().to_string(),
        v["envdAccessToken"].as_str().unwrap().to_string(),
    );
    // A stream that stays open: `sleep 600`'s output.
    let mut s = TcpStream::connect(&envd).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = envelope(&json!({"process": {"cmd": "sleep", "args": ["600"]}}));
    let head = format!(
        "POST /process.Process/Start HTTP/1.1\r\nHost: {envd}\r\nE2b-Sandbox-Id: {id}\r\nX-Access-Token: {token}\r\nContent-Type: application/connect+json\r\nConnect-Protocol-Version: 1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut first = [0u8; 64];
    let n = s.read(&mut first).unwrap();
    assert!(
        n > 0 && first.starts_with(b"HTTP/1.1 200"),
        "the stream started"
    );

    let t0 = std::time::Instant::now();
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(d.pid().unwrap() as i32, libc::SIGTERM) };
    d.wait_exit();
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "the daemon took {took:?} to stop with an open envd stream"
    );
    // The stream was closed by the daemon.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);

    // Back up to delete the other tenant's sandbox (the harness only
    // cleans up the local tenant's).
    d.restart();
    wait_for(10, "the E2B API", || TcpStream::connect(&api).is_ok());
    let r = http(
        &api,
        "DELETE",
        &format!("/sandboxes/{id}"),
        &[("X-API-KEY", &key)],
        b"",
    );
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
}
