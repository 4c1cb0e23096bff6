//! The sandbox's service end to end: an image's start command runs under
//! the agent from create, restarted by its policy, with its output in
//! `dwell logs` and its state in `inspect`; the image's env, WORKDIR and
//! USER apply to execs. Runs on the isolation `DWELL_TEST_ISOLATION` names.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dwell_testkit::{can_run, isolation, skip, Daemon};
use serde_json::Value;

/// Builds a `docker save` tarball of a busybox image whose config has an
/// entrypoint + cmd (a small TCP server, "postgres-like": it says it is
/// ready, then serves connections on the port its cmd names), WORKDIR,
/// USER, env, labels and an exposed port. `user` is the config's USER.
fn server_image(dir: &Path, user: &str) -> std::path::PathBuf {
    let script = r#"
set -e
cd "$1"
mkdir -p l1/bin l1/etc l1/srv l1/home/app l1/tmp
cp /bin/busybox l1/bin/busybox
for t in sh echo cat ls id pwd kill sleep nc env; do ln -s busybox l1/bin/$t; done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n' > l1/etc/passwd
printf 'root:x:0:\napp:x:1000:\n' > l1/etc/group
cat > l1/bin/server <<'EOF'
#!/bin/sh
echo "server: uid $(id -u) cwd $(pwd) mode=$MODE"
echo "ready to accept connections on $1"
exec nc -ll -p "$1" -e /bin/hello
EOF
cat > l1/bin/hello <<'EOF'
#!/bin/sh
echo "connection served" >&2
echo "hello from the server"
EOF
chmod 755 l1/bin/server l1/bin/hello
chown 1000:1000 l1/home/app
mkdir -p out/a
tar -C l1 -cf out/a/layer.tar .
d1=$(sha256sum out/a/layer.tar | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","MODE=image"],"Entrypoint":["/bin/server"],"Cmd":["5432"],"WorkingDir":"/srv","User":"%s","Labels":{"org.example.kind":"db"},"ExposedPorts":{"5432/tcp":{}}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$2" $d1 > out/config.json
printf '[{"Config":"config.json","RepoTags":["srv:1"],"Layers":["a/layer.tar"]}]' > out/manifest.json
tar -C out -cf image.tar manifest.json config.json a
"#;
    std::fs::create_dir_all(dir).unwrap();
    let st = std::process::Command::new("sh")
        .args(["-c", script, "sh", dir.to_str().unwrap(), user])
        .status()
        .unwrap();
    assert!(st.success(), "building the test image failed");
    dir.join("image.tar")
}

fn has_busybox() -> bool {
    if Path::new("/bin/busybox").exists() {
        return true;
    }
    skip("/bin/busybox (package busybox-static) is needed to build a test image");
    false
}

/// Polls `inspect --json` until `ok` holds (or fails the test after 30 s).
fn wait_for(d: &Daemon, sb: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let v = d.inspect(sb);
        if ok(&v) {
            return v;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            panic!(
                "{sb}: {what} did not happen in 30 s; last inspect:\n{:#}",
                v
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn service(v: &Value) -> &Value {
    &v["service"]
}

fn state(v: &Value) -> &str {
    service(v)["state"].as_str().unwrap_or("")
}

/// A `dwell logs -f` running in the background; killed on drop.
struct Follower {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Follower {
    fn start(d: &Daemon, sb: &str) -> Follower {
        let mut child = d
            .cmd(&["logs", sb, "-f"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let o = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    return;
                }
                o.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Follower { child, out }
    }

    fn wait_for(&self, text: &str, times: usize) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.out.lock().unwrap().clone();
            if s.matches(text).count() >= times {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "`dwell logs -f` did not show {text:?} {times} times; it showed:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_image_start_command_runs_as_a_restarting_service_and_its_config_applies() {
    if !can_run() || !has_busybox() {
        return;
    }
    let d = Daemon::start();
    let tar = server_image(&d.dir.path().join("img"), "app");
    d.ok(&["image", "import", "srv", tar.to_str().unwrap()]);
    d.create("db", &["--image", "srv", "--restart", "on-failure"]);

    // The image's env, WORKDIR and USER are every exec's defaults; the
    // create's --env wins over the image's.
    assert_eq!(d.ok(&["exec", "db", "--", "id", "-u"]), "1000\n");
    assert_eq!(d.ok(&["exec", "db", "--", "pwd"]), "/srv\n");
    assert_eq!(d.sh("db", "echo $MODE"), "image\n");
    assert_eq!(
        d.ok(&["exec", "db", "--user", "root", "--", "id", "-u"]),
        "0\n",
        "an exec naming a user still gets it"
    );

    // The service runs from create, as the image's user in its WORKDIR.
    let v = wait_for(&d, "db", "the service running", |v| state(v) == "running");
    assert_eq!(
        v["spec"]["service"]["command"],
        serde_json::json!(["/bin/server", "5432"])
    );
    assert_eq!(v["image_config"]["labels"]["org.example.kind"], "db");
    assert_eq!(
        v["image_config"]["exposed_ports"],
        serde_json::json!(["5432/tcp"])
    );
    assert!(
        v["spec"]["labels"].get("org.example.kind").is_none(),
        "image labels are shown apart"
    );
    let text = d.ok(&["inspect", "db"]);
    assert!(text.contains("service:     running"), "{text}");
    assert!(text.contains("image ports: 5432/tcp"), "{text}");
    let pid = service(&v)["pid"].as_u64().unwrap();

    // It serves; its output is in `dwell logs`, and `-f` follows it.
    let follow = Follower::start(&d, "db");
    follow.wait_for("ready to accept connections on 5432", 1);
    assert_eq!(
        d.sh("db", "nc 127.0.0.1 5432 </dev/null"),
        "hello from the server\n"
    );
    follow.wait_for("connection served", 1);
    let logs = d.ok(&["logs", "db"]);
    assert!(
        logs.contains("server: uid 1000 cwd /srv mode=image"),
        "{logs}"
    );
    assert!(logs.contains("connection served"), "{logs}");
    assert_eq!(d.ok(&["logs", "db", "--tail", "1"]), "connection served\n");

    // A crash (kill -9) is restarted (on-failure), and inspect counts it.
    d.ok(&["exec", "db", "--", "kill", "-9", &pid.to_string()]);
    let v = wait_for(&d, "db", "a restart after kill -9", |v| {
        state(v) == "running" && service(v)["restarts"].as_u64() >= Some(1)
    });
    assert_ne!(service(&v)["pid"].as_u64().unwrap(), pid);
    assert_eq!(service(&v)["last_exit"]["signal"], 9);
    // The follower saw the second start too; the old output is kept.
    follow.wait_for("ready to accept connections on 5432", 2);
    assert_eq!(
        d.sh("db", "nc 127.0.0.1 5432 </dev/null"),
        "hello from the server\n"
    );
    drop(follow);
    // The timeline records the exit and the restart; `--events` shows it.
    let t0 = Instant::now();
    loop {
        let events = d.ok(&["logs", "db", "--events"]);
        if events.contains("service") && events.contains("exited") {
            assert!(events.contains("restarting"), "{events}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{events}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // `service stop` stops it for good; `service start` starts it again.
    let out = d.ok(&["service", "stop", "db", "--json"]);
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["state"], "stopped");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(&d.inspect("db")), "stopped");
    let out = d.ok(&["service", "start", "db", "--json"]);
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["state"], "running");

    // --no-service: no service, and `logs` shows the events.
    d.create("plain", &["--image", "srv", "--no-service"]);
    let v = d.inspect("plain");
    assert!(v["spec"].get("service").is_none(), "{v:#}");
    assert!(d.ok(&["logs", "plain"]).contains("created"));
    let out = d.run(&["service", "status", "plain"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service"));
}

#[test]
fn an_image_user_that_does_not_exist_fails_the_create() {
    if !can_run() || !has_busybox() {
        return;
    }
    let d = Daemon::start();
    let tar = server_image(&d.dir.path().join("img"), "ghost");
    d.ok(&["image", "import", "ghostly", tar.to_str().unwrap()]);
    let out = d.run(&[
        "create", "--name", "g", "--image", "ghostly", "--memory", "256M",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ghost") && err.contains("/etc/passwd"),
        "{err}"
    );
    let all: Value = serde_json::from_str(&d.ok(&["ls", "--json"])).unwrap();
    assert_eq!(
        all.as_array().unwrap().len(),
        0,
        "a failed create leaves nothing: {all:#}"
    );
}

#[test]
fn restart_policies_backoff_and_health_checks() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    // `no`: it stays exited, with its code.
    d.create(
        "once",
        &[
            "--entrypoint",
            "sh",
            "--restart",
            "no",
            "--",
            "-c",
            "echo ran once; exit 3",
        ],
    );
    let v = wait_for(&d, "once", "the exit", |v| state(v) == "exited");
    assert_eq!(service(&v)["last_exit"]["code"], 3);
    assert_eq!(service(&v)["restarts"], 0);
    assert_eq!(d.ok(&["logs", "once"]), "ran once\n");
    assert!(d.ok(&["inspect", "once"]).contains("last exit code 3"));

    // `always`: restarted even after exit 0, with a growing delay.
    d.create(
        "loop",
        &[
            "--entrypoint",
            "sh",
            "--cmd",
            "-c 'echo tick'",
            "--restart",
            "always",
        ],
    );
    let t0 = Instant::now();
    let v = wait_for(&d, "loop", "three restarts", |v| {
        service(v)["restarts"].as_u64() >= Some(3)
    });
    // 100 + 200 + 400 ms of backoff at least.
    assert!(t0.elapsed() >= Duration::from_millis(700), "{v:#}");
    assert!(d.ok(&["logs", "loop"]).matches("tick").count() >= 3);

    // `on-failure:2`: two restarts, then it gives up.
    d.create(
        "flaky",
        &[
            "--entrypoint",
            "sh",
            "--cmd",
            "-c 'exit 7'",
            "--restart",
            "on-failure:2",
        ],
    );
    let v = wait_for(&d, "flaky", "giving up", |v| {
        state(v) == "exited" && service(v)["restarts"] == 2
    });
    assert_eq!(service(&v)["last_exit"]["code"], 7);

    // A failing health check makes it unhealthy; a passing one healthy.
    d.create(
        "sick",
        &[
            "--entrypoint",
            "sleep",
            "--cmd",
            "100000",
            "--health-cmd",
            "exit 1",
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
        ],
    );
    let v = wait_for(&d, "sick", "unhealthy", |v| {
        service(v)["health"] == "unhealthy"
    });
    assert_eq!(state(&v), "running", "health does not restart it");
    d.create(
        "well",
        &[
            "--entrypoint",
            "sleep",
            "--cmd",
            "100000",
            "--health-cmd",
            "true",
            "--health-interval",
            "200ms",
        ],
    );
    wait_for(&d, "well", "healthy", |v| service(v)["health"] == "healthy");

    // Bad flags fail before anything is made.
    let out = d.run(&[
        "create",
        "--name",
        "bad",
        "--entrypoint",
        "sh",
        "--restart",
        "sometimes",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("restart policy"));
    let out = d.run(&["create", "--name", "bad2", "--restart", "always"]);
    assert!(!out.status.success(), "the host image has no start command");
}

/// How many processes the agent runs with the tag `service`.
fn service_processes(d: &Daemon, sb: &str) -> usize {
    let v: Value = serde_json::from_str(&d.ok(&["ps", sb, "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|p| p["tag"] == "service" && p["running"] == true)
        .count()
}

#[test]
fn the_service_survives_pause_daemon_restarts_and_stop_start() {
    if !can_run() {
        return;
    }
    let mut d = Daemon::start_with(&["--resync-secs", "1"]);
    d.create(
        "svc",
        &[
            "--persistent",
            "--entrypoint",
            "sh",
            "--restart",
            "on-failure",
            "--",
            "-c",
            "echo up; exec sleep 100000",
        ],
    );
    let v = wait_for(&d, "svc", "running", |v| state(v) == "running");
    let pid = service(&v)["pid"].as_u64().unwrap();

    // Pause/resume: the same process, no restart.
    d.ok(&["pause", "svc"]);
    d.ok(&["resume", "svc"]);
    let v = wait_for(&d, "svc", "running after resume", |v| state(v) == "running");
    assert_eq!(service(&v)["pid"].as_u64(), Some(pid));
    assert_eq!(service(&v)["restarts"], 0);

    // A daemon SIGKILL + restart resends the definition; the agent keeps
    // the one it runs, so there is no second copy.
    d.restart();
    std::thread::sleep(Duration::from_secs(3));
    let v = wait_for(&d, "svc", "running after a daemon restart", |v| {
        state(v) == "running"
    });
    assert_eq!(service(&v)["pid"].as_u64(), Some(pid));
    assert_eq!(service(&v)["restarts"], 0);
    assert_eq!(service_processes(&d, "svc"), 1);

    // Hibernation (gVisor) keeps it too.
    if isolation() == "gvisor" {
        d.ok(&["hibernate", "svc"]);
        d.ok(&["resume", "svc"]);
        let v = wait_for(&d, "svc", "running after hibernation", |v| {
            state(v) == "running"
        });
        assert_eq!(service(&v)["pid"].as_u64(), Some(pid));
        assert_eq!(service_processes(&d, "svc"), 1);
    }

    // Stop/start of a persistent sandbox starts it again.
    d.ok(&["stop", "svc"]);
    d.ok(&["start", "svc"]);
    wait_for(&d, "svc", "running after start", |v| state(v) == "running");
    assert_eq!(service_processes(&d, "svc"), 1);
    let logs = d.ok(&["logs", "svc"]);
    assert_eq!(logs, "up\n", "the new start's output");
}
