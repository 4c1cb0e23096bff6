//! End to end: the official E2B Python SDK (PyPI `e2b`, installed by
//! scripts/install-deps.sh) against a real `dwell serve --e2b-listen
//! --e2b-sandbox-listen`. Each test runs one scenario script of
//! `tests/e2b/` with E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY set to a
//! fresh tenant's key (E2B_API_KEY_OTHER: a second tenant's).
//!
//! Tests skip with a reason when python3 or the `e2b` package is missing.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// One scenario at a time: they measure timeouts, and 2 cores are shared.
static SERIAL: Mutex<()> = Mutex::new(());

/// The SDK's version the scenarios were written against.
const SDK_VERSION: &str = "2.63.0";

fn sdk_present() -> bool {
    match Command::new("python3")
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('e2b'))",
        ])
        .output()
    {
        Err(e) => {
            skip(&format!(
                "python3 is not runnable ({e}); install it (scripts/install-deps.sh)"
            ));
            false
        }
        Ok(o) if !o.status.success() => {
            skip(&format!("the Python package `e2b` is missing; install it with scripts/install-deps.sh (pip install e2b=={SDK_VERSION})"));
            false
        }
        Ok(o) => {
            let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if v != SDK_VERSION {
                eprintln!(
                    "note: e2b {v} is installed; the scenarios were written against {SDK_VERSION}"
                );
            }
            true
        }
    }
}

/// A daemon with both E2B listeners and two tenants' API keys.
struct E2b {
    api: String,
    envd: String,
    keys: [String; 2],
    /// Last so it drops last: the sandboxes go before the daemon.
    d: Daemon,
}

impl E2b {
    fn start() -> E2b {
        Self::start_with(&[])
    }

    /// [`E2b::start`] with more flags of `dwell serve`; a 1 s sweep unless
    /// they set `--resync-secs` themselves.
    fn start_with(extra: &[&str]) -> E2b {
        let mut args = vec![];
        if !extra.contains(&"--resync-secs") {
            args.extend_from_slice(&["--resync-secs", "1"]);
        }
        args.extend_from_slice(extra);
        let (d, E2bListeners { api, envd }) = Daemon::start_e2b(&args);
        // The E2B form of the keys (`e2b_HEX`): the SDKs refuse any other.
        let e2b = |k: String| format!("e2b_{}", k.strip_prefix("dwk_").expect("a dwell key"));
        let keys = [e2b(d.tenant_key("e2b-a")), e2b(d.tenant_key("e2b-b"))];
        E2b { api, envd, keys, d }
    }

    /// Run `tests/e2b/<name>.py`; panics with its output if it fails.
    fn scenario(&self, name: &str) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/e2b")
            .join(format!("{name}.py"));
        self.run_script("python3", &script, &format!("{name}.py"));
    }

    /// Run `PROGRAM SCRIPT` with the E2B variables set; panics with its
    /// output if it fails.
    fn run_script(&self, program: &str, script: &std::path::Path, name: &str) {
        self.run_script_with(program, script, name, &[]);
    }

    /// [`E2b::run_script`] with more environment variables (an empty value
    /// removes the variable).
    fn run_script_with(
        &self,
        program: &str,
        script: &std::path::Path,
        name: &str,
        env: &[(&str, &str)],
    ) {
        let mut cmd = Command::new(program);
        cmd.arg(script)
            .env("E2B_API_URL", format!("http://{}", self.api))
            .env("E2B_SANDBOX_URL", format!("http://{}", self.envd))
            .env("E2B_API_KEY", &self.keys[0])
            .env("E2B_API_KEY_OTHER", &self.keys[1])
            .env_remove("E2B_DOMAIN")
            .env_remove("E2B_DEBUG")
            .envs(env.iter().copied().filter(|(_, v)| !v.is_empty()));
        for (k, _) in env.iter().filter(|(_, v)| v.is_empty()) {
            cmd.env_remove(k);
        }
        let out_name = format!("{}.out", name.replace(['/', '.'], "-"));
        common::script::run_scenario(cmd, name, &out_name, &self.d, Duration::from_secs(240));
    }

    /// Kill every sandbox of both tenants through the E2B API.
    fn cleanup(&self) {
        for key in &self.keys {
            let auth = [("X-API-KEY", key.as_str())];
            let list = http::try_request(&self.api, "GET", "/v2/sandboxes?limit=1000", &auth, b"");
            let v: serde_json::Value = list
                .ok()
                .and_then(|r| serde_json::from_slice(&r.body).ok())
                .unwrap_or_default();
            for sb in v.as_array().into_iter().flatten() {
                if let Some(id) = sb["sandboxID"].as_str() {
                    let path = format!("/sandboxes/{id}");
                    let _ = http::try_request(&self.api, "DELETE", &path, &auth, b"");
                }
            }
        }
    }
}

impl Drop for E2b {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A GET with API key `key`.
fn get(addr: &str, path: &str, key: &str) -> Response {
    http::request(addr, "GET", path, &[("X-API-KEY", key)], b"")
}

fn run(name: &str) {
    if !can_run() || !sdk_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = E2b::start();
    e.scenario(name);
}

#[test]
fn e2b_quickstart() {
    run("quickstart");
}

#[test]
fn e2b_control_plane() {
    run("control");
}

#[test]
fn e2b_tenants_are_isolated() {
    run("tenants");
}

#[test]
fn e2b_commands() {
    run("commands");
}

#[test]
fn e2b_pty() {
    run("pty");
}

#[test]
fn e2b_files() {
    run("files");
}

/// The file API details of E2B's own suite (entry info, metadata, gzip,
/// signed URL expiry, watch, early refusals): `tests/e2b/files2.py`.
#[test]
fn e2b_files2() {
    run("files2");
}

/// The same with the npm SDK: `tests/e2b/js/files2.mjs`.
#[test]
fn e2b_files2_npm_sdk() {
    node_scenario("files2.mjs");
}

#[test]
fn e2b_pause_connect_cycles_keep_data() {
    run("persistence");
}

/// The sandbox lifecycle (tests/e2b/lifecycle.py): paging over running
/// and paused sandboxes, connect, timeouts on time, metrics ranges,
/// lifecycle options, fork, MCP, a kill under a command. The daemon sweeps
/// only every minute: timeouts must fire by the deadline timer.
#[test]
fn e2b_lifecycle() {
    if !can_run() || !sdk_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = E2b::start_with(&["--resync-secs", "60"]);
    e.scenario("lifecycle");
}

/// `tests/e2b/js`, when Node and the npm SDK (installed there by
/// scripts/install-deps.sh) are there.
fn npm_sdk_dir() -> Option<PathBuf> {
    if !can_run() {
        return None;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2b/js");
    if Command::new("node").arg("--version").output().is_err() {
        skip("node is not installed; the npm SDK scenario needs Node 18 or later");
        return None;
    }
    if !dir.join("node_modules/e2b/package.json").exists() {
        skip(&format!(
            "the npm package `e2b` is not installed in {}; run scripts/install-deps.sh (npm install there)",
            dir.display()
        ));
        return None;
    }
    Some(dir)
}

/// Runs `tests/e2b/js/<script>` with Node against a fresh daemon (skips
/// without Node or the npm SDK).
fn node_scenario(script: &str) {
    let Some(dir) = npm_sdk_dir() else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = E2b::start();
    e.run_script("node", &dir.join(script), &format!("js/{script}"));
}

/// The npm SDK for one scenario, when Node and the SDK are there.
#[test]
fn e2b_npm_sdk() {
    node_scenario("scenario.mjs");
}

/// The Node SDK's side of the lifecycle (tests/e2b/js/lifecycle.mjs):
/// listing newest first, timeouts on time (the sweep is a minute away),
/// a kill under a command, fork, metrics ranges.
#[test]
fn e2b_npm_lifecycle() {
    let Some(dir) = npm_sdk_dir() else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = E2b::start_with(&["--resync-secs", "60"]);
    e.run_script("node", &dir.join("lifecycle.mjs"), "js/lifecycle.mjs");
}

/// The default account: `user` with its home and passwordless sudo, files
/// it writes are its own, the base template exists, a wildcard copy goes
/// into a directory.
#[test]
fn e2b_default_account() {
    run("account");
}

/// [`e2b_default_account`] with the npm SDK.
#[test]
fn e2b_npm_default_account() {
    if !can_run() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2b/js");
    if Command::new("node").arg("--version").output().is_err() {
        skip("node is not installed; the npm SDK scenario needs Node 18 or later");
        return;
    }
    if !dir.join("node_modules/e2b/package.json").exists() {
        skip(&format!(
            "the npm package `e2b` is not installed in {}; run scripts/install-deps.sh (npm install there)",
            dir.display()
        ));
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = E2b::start();
    e.run_script("node", &dir.join("account.mjs"), "js/account.mjs");
}

#[test]
fn e2b_api_errors_have_e2b_shape() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = E2b::start();
    let r = get(&e.api, "/v2/sandboxes", "dwk_wrong");
    assert_eq!(r.status, 401, "{r}");
    assert!(
        r.text().contains("\"code\":401") && r.text().contains("\"message\""),
        "{r}"
    );
    let r = get(&e.api, "/sandboxes/nosuchsandbox", &e.keys[0]);
    assert!(r.status == 404 && r.text().contains("\"code\":404"), "{r}");
    let r = get(&e.api, "/v2/sandboxes?state=sleeping", &e.keys[0]);
    assert!(
        r.status == 400 && r.text().contains("running, paused"),
        "{r}"
    );
    let r = get(&e.api, "/v2/sandboxes?nextToken=zzz", &e.keys[0]);
    assert!(r.status == 400 && r.text().contains("X-Next-Token"), "{r}");
}

/// Keys work in both spellings (`e2b_HEX`, which the SDKs insist on, and
/// dwell's `dwk_HEX`), a near miss in either is refused, and the create
/// route of SDKs before v2 (`POST /sandboxes`) creates as `/v2` does.
#[test]
fn e2b_key_forms_and_the_pre_v2_create_route() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = E2b::start();
    let e2b_form = e.keys[0].clone();
    let dwk_form = format!("dwk_{}", &e2b_form["e2b_".len()..]);
    assert_eq!(get(&e.api, "/v2/sandboxes", &dwk_form).status, 200);
    let mut wrong = e2b_form.clone().into_bytes();
    let last = wrong.len() - 1;
    wrong[last] = if wrong[last] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let r = get(&e.api, "/v2/sandboxes", &wrong);
    assert_eq!(r.status, 401, "{r}");
    let (status, body) = http_json(
        &e.api,
        "POST",
        "/sandboxes",
        &e2b_form,
        r#"{"templateID":"base","timeout":60,"metadata":{"route":"v1"}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["sandboxID"].as_str().expect("a sandbox id").to_string();
    let r = get(&e.api, &format!("/sandboxes/{id}"), &e2b_form);
    assert!(
        r.status == 200 && r.text().contains("\"route\":\"v1\""),
        "{r}"
    );
    // The other tenant does not see it in either spelling of its key.
    let other = format!("dwk_{}", &e.keys[1]["e2b_".len()..]);
    assert_eq!(get(&e.api, &format!("/sandboxes/{id}"), &other).status, 404);
}

/// One request with API key `key` and a JSON body; (status, body).
fn http_json(addr: &str, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
    let headers = [("X-API-KEY", key), ("Content-Type", "application/json")];
    let r = http::request(addr, method, path, &headers, body.as_bytes());
    (r.status, r.text())
}

/// Setting an E2B timeout on a persistent sandbox made with `dwell create`
/// (no TTL action) keeps the mode's default, stop, instead of scheduling a
/// delete; the E2B API shows that as `onTimeout: pause`.
#[test]
fn e2b_timeout_on_a_dwell_sandbox_stops_it_instead_of_deleting() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = E2b::start();
    let id = e.d.create("keepme", &[]);
    // Sandboxes made on the unix socket belong to the tenant `default`.
    let key = e.d.tenant_key("default");
    let (st, body) = http_json(
        &e.api,
        "POST",
        &format!("/sandboxes/{id}/timeout"),
        &key,
        r#"{"timeout": 600}"#,
    );
    assert_eq!(st, 204, "{body}");
    let (st, body) = http_json(&e.api, "GET", &format!("/sandboxes/{id}"), &key, "");
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["lifecycle"]["onTimeout"], "pause", "{v}");
    let info = e.d.inspect(&id);
    let ttl = info["schedule"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["policy"] == "ttl")
        .unwrap_or_else(|| panic!("a ttl is scheduled: {info}"))
        .clone();
    assert_eq!(ttl["action"], "stop", "{info}");
    // Connect with a longer timeout keeps it too.
    let (st, body) = http_json(
        &e.api,
        "POST",
        &format!("/v2/sandboxes/{id}/connect"),
        &key,
        r#"{"timeout": 1200}"#,
    );
    assert!(st == 200 || st == 201, "{st} {body}");
    let info = e.d.inspect(&id);
    assert!(
        info["schedule"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["action"] != "delete"),
        "{info}"
    );
}

/// The Template SDK's build flow end to end (tests/e2b/templates.py):
/// build, status and logs, exists, tags, a sandbox from the template with
/// its start command serving, a cached rebuild, a failing run_cmd.
#[test]
fn e2b_templates() {
    run("templates");
}

/// The template routes' errors: an unknown template or build is 404,
/// another tenant's template is 404 too, a bad step list is 400 naming
/// the step, an upload URL works once.
#[test]
fn e2b_template_route_errors() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = E2b::start();
    let (a, b) = (&e.keys[0], &e.keys[1]);
    let (s, body) = http_json(&e.api, "GET", "/templates/nosuch/builds/x/status", a, "");
    assert!(s == 404 && body.contains("\"code\":404"), "{s} {body}");
    let (s, body) = http_json(&e.api, "GET", "/templates/aliases/nosuch", a, "");
    assert_eq!(s, 404, "{body}");
    let (s, body) = http_json(&e.api, "POST", "/v3/templates", a, "{}");
    assert!(s == 400 && body.contains("no template name"), "{s} {body}");
    let (s, body) = http_json(&e.api, "POST", "/v3/templates", a, r#"{"name":"base"}"#);
    assert!(s == 400 && body.contains("built-in"), "{s} {body}");
    let (s, body) = http_json(&e.api, "POST", "/v3/templates", a, r#"{"name":"bad name"}"#);
    assert!(s == 400 && body.contains("not valid"), "{s} {body}");

    let (s, body) = http_json(&e.api, "POST", "/v3/templates", a, r#"{"name":"errs:v1"}"#);
    assert_eq!(s, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (tid, bid) = (
        v["templateID"].as_str().unwrap(),
        v["buildID"].as_str().unwrap(),
    );
    assert_eq!(v["tags"], serde_json::json!(["v1"]), "{body}");
    let (s, body) = http_json(&e.api, "GET", "/templates", a, "");
    assert!(s == 200 && body.contains("\"names\":[\"errs\"]"), "{body}");
    let (_, body) = http_json(&e.api, "GET", "/templates", b, "");
    assert_eq!(body, "[]", "another tenant lists none");
    let start = format!("/v2/templates/{tid}/builds/{bid}");
    let status = format!("/templates/{tid}/builds/{bid}/status");

    // Another tenant: every route answers 404 for the template.
    let hash = "ab".repeat(32);
    for (method, path) in [
        ("GET", status.clone()),
        ("GET", format!("/templates/{tid}/files/{hash}")),
        ("GET", format!("/templates/{tid}/tags")),
        ("GET", "/templates/aliases/errs".to_string()),
        ("DELETE", format!("/templates/{tid}")),
    ] {
        let (s, body) = http_json(&e.api, method, &path, b, "");
        assert_eq!(s, 404, "{method} {path} by another tenant: {body}");
    }
    let (s, body) = http_json(
        &e.api,
        "POST",
        &start,
        b,
        r#"{"fromImage":"host","steps":[]}"#,
    );
    assert_eq!(s, 404, "start by another tenant: {body}");
    let (s, body) = http_json(
        &e.api,
        "POST",
        "/v2/sandboxes",
        b,
        r#"{"templateID":"errs"}"#,
    );
    assert_eq!(s, 404, "a sandbox from another tenant's template: {body}");

    // Bad step lists: 400 naming the step; the build stays waiting.
    for (spec, want) in [
        (
            r#"{"fromImage":"host","steps":[{"type":"ADD","args":["x"]}]}"#,
            "step 1 has type",
        ),
        (
            r#"{"fromImage":"host","steps":[{"type":"RUN","args":["true"]},{"type":"ENV","args":["A"]}]}"#,
            "step 2 (ENV)",
        ),
        (
            r#"{"fromImage":"host","steps":[{"type":"COPY","args":["../x","/y"],"filesHash":"HASH"}]}"#,
            "leaves",
        ),
        (
            r#"{"fromImage":"host","steps":[{"type":"COPY","args":["x","/y"],"filesHash":"HASH"}]}"#,
            "not uploaded",
        ),
        (r#"{"steps":[]}"#, "no base"),
        (r#"{"fromImage":"host","steps":"nope"}"#, "not valid JSON"),
        (r#"{"fromTemplate":"nosuch","steps":[]}"#, "not found"),
    ] {
        let spec = spec.replace("HASH", &hash);
        let (s, body) = http_json(&e.api, "POST", &start, a, &spec);
        assert!(s == 400 || s == 404, "{spec}: {s} {body}");
        assert!(body.contains(want), "{spec}: {body}");
    }
    let (s, body) = http_json(&e.api, "GET", &status, a, "");
    assert!(
        s == 200 && body.contains("\"status\":\"waiting\""),
        "{body}"
    );
    let (s, body) = http_json(
        &e.api,
        "GET",
        &format!("/templates/{tid}/builds/nosuch/status"),
        a,
        "",
    );
    assert_eq!(s, 404, "{body}");
    let (s, body) = http_json(&e.api, "GET", &format!("{status}?limit=1000"), a, "");
    assert!(s == 400 && body.contains("limit"), "{body}");

    // An upload URL takes one upload; its files are then present.
    let (s, body) = http_json(
        &e.api,
        "GET",
        &format!("/templates/{tid}/files/{hash}"),
        a,
        "",
    );
    assert_eq!(s, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["present"], false, "{body}");
    let url = v["url"].as_str().unwrap();
    let path = &url[url.find("/templates/").unwrap()..];
    let tar = {
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, "x", &b"hi"[..]).unwrap();
        t.into_inner().unwrap()
    };
    let r = http::request(&e.api, "PUT", path, &[], &tar);
    assert_eq!(r.status, 200, "{r}");
    let r = http::request(&e.api, "PUT", path, &[], &tar);
    assert_eq!(r.status, 404, "an upload URL works once: {r}");
    let (_, body) = http_json(
        &e.api,
        "GET",
        &format!("/templates/{tid}/files/{hash}"),
        a,
        "",
    );
    assert!(body.contains("\"present\":true"), "{body}");
    let (_, body) = http_json(
        &e.api,
        "GET",
        &format!("/templates/{tid}/files/{hash}"),
        b,
        "",
    );
    assert!(body.contains("404"), "another tenant: {body}");

    // Deleting the template: gone for its owner too.
    let (s, body) = http_json(&e.api, "DELETE", &format!("/templates/{tid}"), a, "");
    assert_eq!(s, 204, "{body}");
    let (s, _) = http_json(&e.api, "GET", &status, a, "");
    assert_eq!(s, 404);
}

/// A template build the daemon was killed in is marked failed when it
/// comes back (nothing resumes it), its context directory is gone, and a
/// new build of the template works.
#[test]
fn e2b_template_build_killed_midway_fails_cleanly() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut e = E2b::start();
    let a = e.keys[0].clone();
    let (s, body) = http_json(&e.api, "POST", "/v3/templates", &a, r#"{"name":"killed"}"#);
    assert_eq!(s, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (tid, bid) = (
        v["templateID"].as_str().unwrap(),
        v["buildID"].as_str().unwrap(),
    );
    let spec =
        r#"{"fromImage":"host","steps":[{"type":"RUN","args":["echo started; sleep 300"]}]}"#;
    let (s, body) = http_json(
        &e.api,
        "POST",
        &format!("/v2/templates/{tid}/builds/{bid}"),
        &a,
        spec,
    );
    assert_eq!(s, 202, "{body}");
    let status = format!("/templates/{tid}/builds/{bid}/status");
    let t0 = Instant::now();
    loop {
        let (_, body) = http_json(&e.api, "GET", &status, &a, "");
        if body.contains("started") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the RUN step never started: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let contexts = e.d.data.join("e2b-templates/builds");
    assert!(
        contexts.join(bid).is_dir(),
        "the build has its context meanwhile"
    );
    e.d.restart();
    http::wait_listening(&e.api, 30);
    let (s, body) = http_json(&e.api, "GET", &status, &a, "");
    assert!(s == 200 && body.contains("\"status\":\"error\""), "{body}");
    assert!(body.contains("restarted during the build"), "{body}");
    assert!(
        !contexts.join(bid).exists(),
        "the context is removed at start"
    );

    // The template builds again.
    let (s, body) = http_json(&e.api, "POST", "/v3/templates", &a, r#"{"name":"killed"}"#);
    assert_eq!(s, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["templateID"].as_str(), Some(tid), "same template");
    let bid2 = v["buildID"].as_str().unwrap();
    let spec = r#"{"fromImage":"host","steps":[{"type":"RUN","args":["echo ok > /tmp/ok"]}]}"#;
    let (s, body) = http_json(
        &e.api,
        "POST",
        &format!("/v2/templates/{tid}/builds/{bid2}"),
        &a,
        spec,
    );
    assert_eq!(s, 202, "{body}");
    let status2 = format!("/templates/{tid}/builds/{bid2}/status");
    let t0 = Instant::now();
    loop {
        let (_, body) = http_json(&e.api, "GET", &status2, &a, "");
        if body.contains("\"status\":\"ready\"") {
            break;
        }
        assert!(!body.contains("\"status\":\"error\""), "{body}");
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no ready build: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An OCI layout in `dir` of a busybox image (sh, cat, echo, sleep, pwd)
/// with /hello.txt; returns nothing, the layout is complete.
fn busybox_layout(dir: &std::path::Path) {
    use sha2::{Digest, Sha256};
    let sha = |b: &[u8]| {
        let h: String = Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        format!("sha256:{h}")
    };
    let put = |data: &[u8]| {
        let d = sha(data);
        let p = dir.join("blobs/sha256");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join(&d[7..]), data).unwrap();
        d
    };
    let mut b = tar::Builder::new(Vec::new());
    let entry = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    };
    for (d, mode) in [("bin/", 0o755), ("etc/", 0o755), ("tmp/", 0o1777)] {
        b.append_data(&mut entry(tar::EntryType::Directory, mode, 0), d, &[][..])
            .unwrap();
    }
    let bb = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    b.append_data(
        &mut entry(tar::EntryType::Regular, 0o755, bb.len() as u64),
        "bin/busybox",
        &bb[..],
    )
    .unwrap();
    for app in [
        "sh", "cat", "echo", "sleep", "pwd", "mkdir", "ls", "whoami", "chown",
    ] {
        let mut h = entry(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("bin/{app}"), "busybox")
            .unwrap();
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    b.append_data(
        &mut entry(tar::EntryType::Regular, 0o644, passwd.len() as u64),
        "etc/passwd",
        &passwd[..],
    )
    .unwrap();
    let hello = b"hello from the registry image\n";
    b.append_data(
        &mut entry(tar::EntryType::Regular, 0o644, hello.len() as u64),
        "hello.txt",
        &hello[..],
    )
    .unwrap();
    let layer = b.into_inner().unwrap();
    let diff_id = sha(&layer);
    let ld = put(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}
    }))
    .unwrap();
    let cd = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}]
    }))
    .unwrap();
    let md = put(&manifest);
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len()}
        ]}))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A template from an image in a registry (a local `docker-registry` fed
/// with a busybox image): the build pulls it and a sandbox starts from the
/// result (tests/e2b/templates_registry.py).
#[test]
fn e2b_template_from_a_registry_image() {
    if !can_run() || !sdk_present() {
        return;
    }
    let Some(reg) = dwell_testkit::registry::Registry::start(None) else {
        return;
    };
    let layout = tempfile::Builder::new()
        .prefix("dwell-e2b-layout-")
        .tempdir_in("/var/tmp")
        .unwrap();
    busybox_layout(layout.path());
    reg.push_layout(layout.path(), "busy:1");
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = E2b::start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2b/templates_registry.py");
    let image = format!("{}/busy:1", reg.host());
    e.run_script_with(
        "python3",
        &script,
        "templates_registry.py",
        &[("REGISTRY_IMAGE", &image)],
    );
}

/// Environment variables of a scenario.
type Env = Vec<(String, String)>;

/// A daemon whose TLS port proxy serves `dwell.test` (a CA and certificate
/// made for the test), and the environment that makes the SDKs reach it
/// as they reach E2B: by host name over https, with neither
/// E2B_API_URL nor E2B_SANDBOX_URL.
fn https_hosts() -> Option<(E2b, common::tls::TestCa, Env)> {
    if !common::tls::have_openssl() {
        skip("the openssl command is missing (Debian package openssl): it makes the test CA");
        return None;
    }
    let domain = "dwell.test";
    let ca = common::tls::TestCa::make(domain);
    let proxy = format!("127.0.0.1:{}", free_port());
    let e = E2b::start_with(&[
        "--proxy-listen",
        &proxy,
        "--domain",
        domain,
        "--proxy-e2b-api",
        "--proxy-tls-cert",
        ca.cert.to_str().unwrap(),
        "--proxy-tls-key",
        ca.key.to_str().unwrap(),
    ]);
    wait_listening(&proxy, 20);
    let port = proxy.rsplit(':').next().unwrap();
    let ca_file = ca.ca.to_str().unwrap().to_string();
    let env = vec![
        ("E2B_API_URL".into(), String::new()),
        ("E2B_SANDBOX_URL".into(), String::new()),
        ("E2B_DOMAIN".into(), format!("{domain}:{port}")),
        ("SSL_CERT_FILE".into(), ca_file.clone()),
        ("NODE_EXTRA_CA_CERTS".into(), ca_file),
    ];
    Some((e, ca, env))
}

/// The Python SDK over HTTPS by host name through the TLS proxy
/// (tests/e2b/hosts.py): api.D, envd at 49983-ID.D and sandbox.D,
/// get_host(port), refused tokens, auto-resume by an https request.
#[test]
fn e2b_https_hosts() {
    if !can_run() || !sdk_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some((e, _ca, env)) = https_hosts() else {
        return;
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2b/hosts.py");
    e.run_script_with("python3", &script, "hosts.py", &env);
}

/// The npm SDK's counterpart (tests/e2b/js/hosts.mjs).
#[test]
fn e2b_npm_sdk_https_hosts() {
    if !can_run() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2b/js");
    if Command::new("node").arg("--version").output().is_err()
        || !dir.join("node_modules/e2b/package.json").exists()
    {
        skip(
            "node or the npm package `e2b` (tests/e2b/js) is missing; run scripts/install-deps.sh",
        );
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some((e, _ca, env)) = https_hosts() else {
        return;
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    e.run_script_with("node", &dir.join("hosts.mjs"), "js/hosts.mjs", &env);
}
