//! End to end: the E2B envd data plane (`dwell serve --e2b-sandbox-listen`)
//! spoken on the wire as the E2B SDKs speak it — Connect JSON unary and
//! enveloped streaming RPCs, `/files` uploads (multipart, gzip
//! octet-stream) and downloads, signed URLs, watchers — against a real
//! sandbox created through the E2B control plane.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::http::request as http;
use common::*;
use serde_json::{json, Value};

/// One sandbox as an SDK addresses it: envd's address, the sandbox's id
/// and its access token.
#[derive(Clone)]
struct Sbx {
    envd: String,
    id: String,
    token: String,
}

impl Sbx {
    /// Creates a sandbox through the E2B control plane at `api` with
    /// tenant key `key` and request `body`.
    fn create(api: &str, key: &str, envd: String, body: &[u8]) -> Sbx {
        let r = http(
            api,
            "POST",
            "/v2/sandboxes",
            &[("X-API-KEY", key), ("Content-Type", "application/json")],
            body,
        );
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        Sbx {
            envd,
            id: v["sandboxID"].as_str().unwrap().to_string(),
            token: v["envdAccessToken"].as_str().unwrap().to_string(),
        }
    }

    fn hdrs<'b>(&'b self, ct: &'b str) -> Vec<(&'b str, &'b str)> {
        vec![
            ("E2b-Sandbox-Id", self.id.as_str()),
            ("X-Access-Token", self.token.as_str()),
            ("Content-Type", ct),
            ("Connect-Protocol-Version", "1"),
        ]
    }

    fn unary(&self, method: &str, req: Value) -> Response {
        http(
            &self.envd,
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
            &self.envd,
            "POST",
            &format!("/{method}"),
            &h,
            &envelope(&req),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("content-type"), Some("application/connect+json"));
        envelopes(&r.body)
    }

    /// An RPC as `user` (HTTP basic auth, as the SDKs send it): enveloped
    /// for Process.Start, plain JSON otherwise.
    fn as_user(&self, user: &str, method: &str, req: Value) -> Response {
        let basic = format!("Basic {}", b64(format!("{user}:").as_bytes()));
        let mut h = self.hdrs("application/connect+json");
        h.push(("Authorization", &basic));
        let body = if method.ends_with("Start") {
            envelope(&req)
        } else {
            h[2].1 = "application/json";
            serde_json::to_vec(&req).unwrap()
        };
        http(&self.envd, "POST", &format!("/{method}"), &h, &body)
    }
}

/// What a process wrote to stdout, from its stream's envelopes.
fn stdout_of(ev: &[(u8, Value)]) -> String {
    ev.iter()
        .filter_map(|(_, v)| v["event"]["data"]["stdout"].as_str())
        .map(|s| String::from_utf8_lossy(&unb64(s)).into_owned())
        .collect()
}

/// A daemon with both E2B listeners, a tenant's key, and one sandbox
/// created through the E2B control plane (removed with the daemon, even
/// when a case fails).
struct Fixture {
    api: String,
    key: String,
    sb: Sbx,
    _d: Daemon,
}

impl Fixture {
    fn start() -> Fixture {
        let (d, E2bListeners { api, envd }) = Daemon::start_e2b(&[]);
        let key = d.tenant_key("envd-t");
        // dwell's plain `host` image: no account `user`, so requests that
        // name none run as root (the `base` template's default user is
        // covered by the e2b scenarios).
        let sb = Sbx::create(
            &api,
            &key,
            envd,
            br#"{"templateID":"host","timeout":300,"metadata":{},"envVars":{}}"#,
        );
        Fixture {
            api,
            key,
            sb,
            _d: d,
        }
    }
}

/// The cases run in order on one sandbox: later ones read what earlier
/// ones wrote (the multipart upload's file, the gzip upload, the user).
#[test]
fn envd_wire_protocol_against_a_real_sandbox() {
    if !can_run() {
        return;
    }
    cases!(
        &Fixture::start();
        health_and_authentication,
        process_start_streams_output_then_the_exit,
        a_pty_process_takes_input_resizes_and_signals,
        multipart_upload_then_download,
        gzip_octet_stream_upload,
        filesystem_rpcs,
        polled_watcher,
        a_poll_reports_every_change_made_before_it,
        a_named_user_runs_as_itself_and_owns_what_it_makes,
        a_user_keeps_its_own_permissions,
        file_metadata_on_the_wire,
        watch_dir_streams_until_the_directory_goes,
        a_signed_download_url_routes_itself,
        a_signed_upload_url_writes_one_file_at_its_path,
        endless_account_files_are_ignored,
        a_paused_sandbox_is_not_found_until_connected,
        a_deleted_sandbox_is_unreachable
    );
}

/// Health and authentication, a codec other than JSON, a listing too deep,
/// an unknown sandbox, a wrong token, and routing by host name.
fn health_and_authentication(f: &Fixture) {
    let (sb, envd) = (&f.sb, f.sb.envd.as_str());
    // Health and authentication: without the sandbox's token a sandbox
    // looks like a missing one.
    let r = http(
        envd,
        "GET",
        "/health",
        &[("E2b-Sandbox-Id", &sb.id), ("X-Access-Token", &sb.token)],
        b"",
    );
    assert_eq!(r.status, 204);
    let r = http(envd, "GET", "/health", &[("E2b-Sandbox-Id", &sb.id)], b"");
    assert_eq!(r.status, 502);
    // A unary call in another codec: 415.
    let r = http(
        envd,
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
        envd,
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
        envd,
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
        envd,
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
}

/// Process.Start streams the start, stdout and stderr data, keepalives, the
/// end with the exit code, and the end-of-stream frame.
fn process_start_streams_output_then_the_exit(f: &Fixture) {
    let sb = &f.sb;
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

    // The call's deadline (Connect-Timeout-Ms, what the SDKs send for a
    // command's `timeout`) ends the stream with deadline_exceeded on time;
    // the process goes on and can be re-attached.
    let mut h = sb.hdrs("application/connect+json");
    h.push(("Connect-Timeout-Ms", "700"));
    let t0 = std::time::Instant::now();
    let r = http(
        &sb.envd,
        "POST",
        "/process.Process/Start",
        &h,
        &envelope(
            &json!({"process": {"cmd": "/bin/sh", "args": ["-c", "sleep 4; echo late"]}, "tag": "deadline", "stdin": false}),
        ),
    );
    let took = t0.elapsed();
    let ev = envelopes(&r.body);
    let last = ev.last().expect("an end frame");
    assert_eq!(last.0, 2, "{ev:?}");
    assert_eq!(last.1["error"]["code"], "deadline_exceeded", "{ev:?}");
    assert!(
        took >= std::time::Duration::from_millis(600) && took < std::time::Duration::from_secs(3),
        "the deadline fired after {took:?}"
    );
    let ev = sb.stream(
        "process.Process/Connect",
        json!({"process": {"tag": "deadline"}}),
    );
    assert_eq!(stdout_of(&ev), "late\n", "the process went on: {ev:?}");
}

/// A PTY process in the background: listed by tag, resized, fed input; a
/// signal to a missing process is 404.
fn a_pty_process_takes_input_resizes_and_signals(f: &Fixture) {
    let sb = &f.sb;
    let s = sb.clone();
    let bg = std::thread::spawn(move || {
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
}

/// A multipart upload (the SDK's default) is downloaded again, by absolute
/// and relative path; a missing file is 404.
fn multipart_upload_then_download(f: &Fixture) {
    let (sb, envd) = (&f.sb, f.sb.envd.as_str());
    // Files: multipart upload (the SDK's default), download, 404.
    let boundary = "b0undary";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/root/d/a.txt\"\r\nContent-Type: text/plain\r\n\r\npersist me\r\n--{boundary}--\r\n"
    );
    let ct = format!("multipart/form-data; boundary={boundary}");
    let mut h = sb.hdrs(&ct);
    h.retain(|(k, _)| *k != "Connect-Protocol-Version");
    let r = http(
        envd,
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
        envd,
        "GET",
        "/files?path=%2Froot%2Fd%2Fa.txt",
        &sb.hdrs(""),
        b"",
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"persist me".as_slice())
    );
    let r = http(envd, "GET", "/files?path=d%2Fa.txt", &sb.hdrs(""), b"");
    assert_eq!(
        r.body, b"persist me",
        "relative paths resolve against root's home"
    );
    let r = http(envd, "GET", "/files?path=%2Fnope", &sb.hdrs(""), b"");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], 404);
}

/// An octet-stream upload with gzip content encoding.
fn gzip_octet_stream_upload(f: &Fixture) {
    let (sb, envd) = (&f.sb, f.sb.envd.as_str());
    // Octet-stream with gzip.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&vec![b'z'; 100_000]).unwrap();
    let gz = gz.finish().unwrap();
    let mut h = sb.hdrs("application/octet-stream");
    h.push(("Content-Encoding", "gzip"));
    let r = http(envd, "POST", "/files?path=%2Ftmp%2Fz.bin", &h, &gz);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// Stat (of the gzip upload), MakeDir, Move, ListDir and Remove.
fn filesystem_rpcs(f: &Fixture) {
    let sb = &f.sb;
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
}

/// A polled watcher reports a creation and is gone once removed.
fn polled_watcher(f: &Fixture) {
    let sb = &f.sb;
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
}

/// A poll reports every change made before it, even in a directory made
/// just before (whose files may exist before the agent watches it): the
/// E2B suite's "recursive watch after a nested folder addition", 20 times;
/// and a `WatchDir` stream reports the same.
fn a_poll_reports_every_change_made_before_it(f: &Fixture) {
    let (sb, envd) = (&f.sb, f.sb.envd.as_str());
    for i in 0..20 {
        let dir = format!("/tmp/pw{i}");
        sb.unary("filesystem.Filesystem/MakeDir", json!({"path": dir}));
        let w = sb
            .unary(
                "filesystem.Filesystem/CreateWatcher",
                json!({"path": dir, "recursive": true}),
            )
            .json();
        let wid = w["watcherId"].as_str().unwrap().to_string();
        let r = sb.unary(
            "filesystem.Filesystem/MakeDir",
            json!({"path": format!("{dir}/sub")}),
        );
        assert_eq!(r.status, 200);
        let r = http(
            envd,
            "POST",
            &format!("/files?path=%2Ftmp%2Fpw{i}%2Fsub%2Ff.txt"),
            &sb.hdrs("application/octet-stream"),
            b"watched",
        );
        assert_eq!(r.status, 200);
        let e = sb
            .unary(
                "filesystem.Filesystem/GetWatcherEvents",
                json!({"watcherId": wid}),
            )
            .json();
        let events = e["events"].as_array().unwrap();
        let has =
            |name: &str, ty: &str| events.iter().any(|e| e["name"] == name && e["type"] == ty);
        assert!(has("sub", "EVENT_TYPE_CREATE"), "round {i}: {events:?}");
        assert!(
            has("sub/f.txt", "EVENT_TYPE_WRITE"),
            "round {i}: {events:?}"
        );
        let creates = events
            .iter()
            .filter(|e| e["name"] == "sub" && e["type"] == "EVENT_TYPE_CREATE")
            .count();
        assert_eq!(creates, 1, "round {i}: {events:?}");
        let r = sb.unary(
            "filesystem.Filesystem/RemoveWatcher",
            json!({"watcherId": wid}),
        );
        assert_eq!(r.status, 200);
        sb.unary("filesystem.Filesystem/Remove", json!({"path": dir}));
    }
    // The stream: a directory moved in whole reports what it holds.
    for i in 0..3 {
        let dir = format!("/tmp/pws{i}");
        sb.unary(
            "filesystem.Filesystem/MakeDir",
            json!({"path": format!("{dir}/w")}),
        );
        let r = http(
            envd,
            "POST",
            &format!("/files?path=%2Ftmp%2Fpws{i}%2Fout%2Fin%2Fg.txt"),
            &sb.hdrs("application/octet-stream"),
            b"moved",
        );
        assert_eq!(r.status, 200);
        let s = sb.clone();
        let wdir = format!("{dir}/w");
        let watch = std::thread::spawn(move || {
            s.stream(
                "filesystem.Filesystem/WatchDir",
                json!({"path": wdir, "recursive": true}),
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        let r = sb.unary(
            "filesystem.Filesystem/Move",
            json!({"source": format!("{dir}/out"), "destination": format!("{dir}/w/out")}),
        );
        assert_eq!(r.status, 200);
        std::thread::sleep(Duration::from_millis(300));
        sb.unary("filesystem.Filesystem/Remove", json!({"path": dir}));
        let ev = watch.join().unwrap();
        for (name, ty) in [
            ("out", "EVENT_TYPE_CREATE"),
            ("out/in", "EVENT_TYPE_CREATE"),
            ("out/in/g.txt", "EVENT_TYPE_CREATE"),
            ("out/in/g.txt", "EVENT_TYPE_WRITE"),
        ] {
            assert!(
                ev.contains(&(0, json!({"filesystem": {"name": name, "type": ty}}))),
                "round {i}: {name} {ty}: {ev:?}"
            );
        }
    }
}

/// A named user that exists runs as itself and owns what envd makes for
/// it; `user` (which old SDKs always name) falls back to root where the
/// image lacks it; any other unknown name is refused (401), never root.
fn a_named_user_runs_as_itself_and_owns_what_it_makes(f: &Fixture) {
    let (sb, envd) = (&f.sb, f.sb.envd.as_str());
    // Users: a named user that exists runs as itself and owns what envd
    // makes for it.
    let ev = sb.stream(
        "process.Process/Start",
        json!({"process": {"cmd": "useradd", "args": ["-m", "-u", "1500", "e2buser"]}}),
    );
    assert_eq!(ev[ev.len() - 2].1["event"]["end"]["exitCode"], 0, "{ev:?}");
    let r = sb.as_user(
        "e2buser",
        "process.Process/Start",
        json!({"process": {"cmd": "/bin/sh", "args": ["-c", "id -u; pwd"]}}),
    );
    let out = stdout_of(&envelopes(&r.body));
    assert_eq!(out, "1500\n/home/e2buser\n");
    let r = sb.as_user(
        "e2buser",
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
        envd,
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
        envd,
        "POST",
        "/process.Process/Start",
        &h,
        &envelope(&json!({"process": {"cmd": "whoami"}})),
    );
    let out = stdout_of(&envelopes(&r.body));
    assert_eq!(
        out, "root\n",
        "E2B's default `user` does not exist here: root"
    );
    let r = sb.as_user(
        "nosuchname",
        "filesystem.Filesystem/Stat",
        json!({"path": "/tmp"}),
    );
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("invalid username: 'nosuchname'"));
}

/// A user's own permissions apply: no writing where it may not, no taking
/// over root's files, no following its symlinks into them.
fn a_user_keeps_its_own_permissions(f: &Fixture) {
    let (sb, envd) = (&f.sb, f.sb.envd.as_str());
    let r = http(
        envd,
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
        envd,
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
    sb.as_user(
        "e2buser",
        "process.Process/Start",
        json!({"process": {"cmd": "ln", "args": ["-s", "/tmp/rootfile", "/home/e2buser/link"]}}),
    );
    let boundary = "zz";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"link\"\r\n\r\nvia link\r\n--{boundary}--\r\n"
    );
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = http(
        envd,
        "POST",
        "/files?username=e2buser",
        &sb.hdrs(&ct),
        form.as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let r = http(
        envd,
        "GET",
        "/files?path=%2Ftmp%2Frootfile",
        &sb.hdrs(""),
        b"",
    );
    assert_eq!(r.body, b"root\n");
    let r = sb.as_user(
        "e2buser",
        "filesystem.Filesystem/Remove",
        json!({"path": "/tmp/rootfile"}),
    );
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
}

/// Upload metadata (`X-Metadata-*`) on the wire: answered, in Stat and
/// ListDir, cleared by a plain overwrite; bad or too many keys are a 400
/// that leaves no file. Modes are E2B's (permission bits alone); removing
/// a missing path is no error.
fn file_metadata_on_the_wire(f: &Fixture) {
    let (sb, envd) = (&f.sb, f.sb.envd.as_str());
    let mut h = sb.hdrs("application/octet-stream");
    h.push(("X-Metadata-Owner", "me"));
    let r = http(envd, "POST", "/files?path=%2Ftmp%2Fmd%2Fmeta", &h, b"x");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()[0]["metadata"], json!({"owner": "me"}));
    let st = sb
        .unary(
            "filesystem.Filesystem/Stat",
            json!({"path": "/tmp/md/meta"}),
        )
        .json();
    assert_eq!(st["entry"]["metadata"], json!({"owner": "me"}));
    assert_eq!(st["entry"]["mode"], 0o644);
    let l = sb
        .unary("filesystem.Filesystem/ListDir", json!({"path": "/tmp"}))
        .json();
    let md = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "md")
        .unwrap()
        .clone();
    assert_eq!(
        (md["mode"].clone(), md.get("metadata")),
        (json!(0o755), None)
    );
    let r = http(
        envd,
        "POST",
        "/files?path=%2Ftmp%2Fmd%2Fmeta",
        &sb.hdrs("application/octet-stream"),
        b"y",
    );
    assert_eq!(r.json()[0].get("metadata"), None);
    let st = sb
        .unary(
            "filesystem.Filesystem/Stat",
            json!({"path": "/tmp/md/meta"}),
        )
        .json();
    assert_eq!(st["entry"].get("metadata"), None, "an overwrite clears it");
    let mut many = sb.hdrs("application/octet-stream");
    let keys: Vec<String> = (0..65).map(|i| format!("X-Metadata-K{i}")).collect();
    for k in &keys {
        many.push((k.as_str(), "v"));
    }
    let long = "v".repeat(5000);
    let mut big = sb.hdrs("application/octet-stream");
    big.push(("X-Metadata-Big", long.as_str()));
    for (what, h) in [("65 keys", many), ("a 5000-byte value", big)] {
        let r = http(envd, "POST", "/files?path=%2Ftmp%2Fmd%2Fno", &h, b"x");
        assert_eq!(
            r.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let r = sb.unary("filesystem.Filesystem/Stat", json!({"path": "/tmp/md/no"}));
    assert_eq!(r.status, 404, "a refused upload made no file");
    let r = sb.unary(
        "filesystem.Filesystem/Remove",
        json!({"path": "/tmp/md/no"}),
    );
    assert_eq!(r.status, 200, "removing a missing path is no error");
}

/// WatchDir streams `start`, then events, and ends (end-of-stream frame)
/// when the watched directory is removed.
fn watch_dir_streams_until_the_directory_goes(f: &Fixture) {
    let (sb, envd) = (&f.sb, f.sb.envd.as_str());
    sb.unary("filesystem.Filesystem/MakeDir", json!({"path": "/tmp/ws"}));
    let s = sb.clone();
    let watch = std::thread::spawn(move || {
        s.stream(
            "filesystem.Filesystem/WatchDir",
            json!({"path": "/tmp/ws", "recursive": false}),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let r = http(
        envd,
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
}

/// A signed download URL routes itself (no sandbox header, no token); a bad
/// signature is 401.
fn a_signed_download_url_routes_itself(f: &Fixture) {
    let (sb, envd) = (&f.sb, f.sb.envd.as_str());
    let sig = signature(&format!("/root/d/a.txt:read::{}", sb.token));
    let q = format!("/files?path=%2Froot%2Fd%2Fa.txt&signature={sig}");
    let r = http(envd, "GET", &q, &[], b"");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"persist me".as_slice())
    );
    let r = http(
        envd,
        "GET",
        "/files?path=%2Froot%2Fd%2Fa.txt&signature=v1_bad",
        &[],
        b"",
    );
    assert_eq!(r.status, 401);
}

/// A signed upload URL writes exactly one file, at its signed path.
fn a_signed_upload_url_writes_one_file_at_its_path(f: &Fixture) {
    let (sb, envd) = (&f.sb, f.sb.envd.as_str());
    let sig = signature(&format!("/tmp/signed.txt:write::{}", sb.token));
    let q = format!("/files?path=%2Ftmp%2Fsigned.txt&signature={sig}");
    let two = "--q\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/tmp/evil1\"\r\n\r\n1\r\n--q\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/etc/evil2\"\r\n\r\n2\r\n--q--\r\n";
    let mp = [("Content-Type", "multipart/form-data; boundary=q")];
    let r = http(envd, "POST", &q, &mp, two.as_bytes());
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let r = http(envd, "GET", "/files?path=%2Fetc%2Fevil2", &sb.hdrs(""), b"");
    assert_eq!(r.status, 404, "the second part was not written");
    let one = "--q\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/etc/evil3\"\r\n\r\nsigned\r\n--q--\r\n";
    let r = http(envd, "POST", &q, &mp, one.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()[0]["path"], "/tmp/signed.txt");
    let r = http(
        envd,
        "GET",
        "/files?path=%2Ftmp%2Fsigned.txt",
        &sb.hdrs(""),
        b"",
    );
    assert_eq!(r.body, b"signed");
}

/// Endless account files (a sandbox may point /etc/passwd anywhere) are
/// ignored, not read into the daemon.
fn endless_account_files_are_ignored(f: &Fixture) {
    let sb = &f.sb;
    sb.stream(
        "process.Process/Start",
        json!({"process": {"cmd": "/bin/sh", "args": ["-c", "cp /etc/passwd /tmp/passwd.bak && ln -sf /dev/zero /etc/passwd"]}}),
    );
    let r = sb.as_user(
        "e2buser",
        "filesystem.Filesystem/Stat",
        json!({"path": "/tmp"}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    sb.stream(
        "process.Process/Start",
        json!({"process": {"cmd": "/bin/sh", "args": ["-c", "rm /etc/passwd && cp /tmp/passwd.bak /etc/passwd"]}}),
    );
}

/// A paused sandbox is "not found" to envd (the SDK's SandboxNotRunning)
/// until it is connected (resumed) again.
fn a_paused_sandbox_is_not_found_until_connected(f: &Fixture) {
    let (sb, envd) = (&f.sb, f.sb.envd.as_str());
    let r = http(
        &f.api,
        "POST",
        &format!("/sandboxes/{}/pause", sb.id),
        &[("X-API-KEY", &f.key), ("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let r = http(envd, "GET", "/health", &sb.hdrs(""), b"");
    assert_eq!(r.status, 502);
    let r = sb.unary("process.Process/List", json!({}));
    assert_eq!(r.json()["code"], "unavailable");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("was not found"));
    let r = http(
        &f.api,
        "POST",
        &format!("/v2/sandboxes/{}/connect", sb.id),
        &[("X-API-KEY", &f.key), ("Content-Type", "application/json")],
        br#"{"timeout":300}"#,
    );
    assert!(
        r.status == 200 || r.status == 201,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = http(
        envd,
        "GET",
        "/files?path=%2Froot%2Fd%2Fa.txt",
        &sb.hdrs(""),
        b"",
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"persist me".as_slice())
    );
}

/// A sandbox deleted through the E2B API is unreachable through envd.
fn a_deleted_sandbox_is_unreachable(f: &Fixture) {
    let sb = &f.sb;
    let r = http(
        &f.api,
        "DELETE",
        &format!("/sandboxes/{}", sb.id),
        &[("X-API-KEY", &f.key)],
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

/// SIGTERM does not wait forever for envd streams that never end by
/// themselves (a running process's output stream): the listener drains for
/// a bounded time, then closes them.
#[test]
fn shutdown_is_not_held_by_open_envd_streams() {
    if !can_run() {
        return;
    }
    let (mut d, E2bListeners { api, envd }) = Daemon::start_e2b(&[]);
    let key = d.tenant_key("drain-t");
    let Sbx { id, token, .. } = Sbx::create(
        &api,
        &key,
        envd.clone(),
        br#"{"templateID":"base","timeout":300}"#,
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
    wait_listening(&api, 10);
    let r = http(
        &api,
        "DELETE",
        &format!("/sandboxes/{id}"),
        &[("X-API-KEY", &key)],
        b"",
    );
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
}

/// E2B's `autoResume: {enabled: true}` (the SDKs' `lifecycle.autoResume`)
/// is the sandbox's `auto_resume` policy: a data-plane request wakes the
/// paused sandbox and is served, as on E2B. Without it, E2B's default,
/// the sandbox stays paused until `connect`.
#[test]
fn an_auto_resume_sandbox_wakes_for_an_envd_request() {
    if !can_run() {
        return;
    }
    let (d, E2bListeners { api, envd }) = Daemon::start_e2b(&["--resync-secs", "1"]);
    let key = d.tenant_key("wake-t");
    let sb = Sbx::create(
        &api,
        &key,
        envd.clone(),
        br#"{"templateID":"base","timeout":300,"autoPause":true,"autoResume":{"enabled":true}}"#,
    );
    let plain = Sbx::create(&api, &key, envd, br#"{"templateID":"base","timeout":300}"#);
    let detail = |id: &str| {
        let r = http(
            &api,
            "GET",
            &format!("/sandboxes/{id}"),
            &[("X-API-KEY", &key)],
            b"",
        );
        assert_eq!(r.status, 200, "{r}");
        r.json()
    };
    assert_eq!(detail(&sb.id)["lifecycle"]["autoResume"], true);
    assert_eq!(detail(&sb.id)["lifecycle"]["onTimeout"], "pause");
    assert_eq!(detail(&plain.id)["lifecycle"]["autoResume"], false);
    for s in [&sb, &plain] {
        let r = http(
            &api,
            "POST",
            &format!("/sandboxes/{}/pause", s.id),
            &[("X-API-KEY", &key), ("Content-Type", "application/json")],
            b"{}",
        );
        assert_eq!(r.status, 204, "{r}");
    }
    let r = sb.unary("filesystem.Filesystem/Stat", json!({"path": "/root"}));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["entry"]["type"], "FILE_TYPE_DIRECTORY", "{r}");
    assert_eq!(detail(&sb.id)["state"], "running");
    assert!(d
        .ok(&["--as-tenant", "wake-t", "logs", &sb.id])
        .contains("woken by E2B envd request"));
    // Woken, it has a timeout again (its pausing TTL was kept through the
    // pause), not none.
    let info: Value =
        serde_json::from_str(&d.ok(&["--as-tenant", "wake-t", "inspect", &sb.id, "--json"]))
            .unwrap();
    assert!(
        info["schedule"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["policy"] == "ttl" && s["action"] == "pause"),
        "{info}"
    );
    let r = plain.unary("filesystem.Filesystem/Stat", json!({"path": "/root"}));
    assert_eq!(r.json()["code"], "unavailable", "{r}");
    assert_eq!(detail(&plain.id)["state"], "paused");

    // Paused by its timeout (autoPause), woken by a request: it gets a new
    // timeout of at least five minutes (E2B's rule), so the passed deadline
    // does not pause it again at once.
    let short = Sbx::create(
        &api,
        &key,
        sb.envd.clone(),
        br#"{"templateID":"base","timeout":1,"autoPause":true,"autoResume":{"enabled":true}}"#,
    );
    wait_for(20, "the timeout to pause it", || {
        detail(&short.id)["state"] == "paused"
    });
    let r = short.unary("filesystem.Filesystem/Stat", json!({"path": "/root"}));
    assert_eq!(r.status, 200, "{r}");
    let woke_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    std::thread::sleep(Duration::from_secs(3));
    let info: Value =
        serde_json::from_str(&d.ok(&["--as-tenant", "wake-t", "inspect", &short.id, "--json"]))
            .unwrap();
    assert_eq!(info["state"], "running", "re-paused: {info}");
    assert!(
        info["hold_until"].as_i64().unwrap() >= woke_at + 4 * 60 * 1000,
        "{info}"
    );
}
