//! End to end: wake on use (auto-resume). A sandbox a policy paused or
//! hibernated is resumed by the exec or file operation that reaches it,
//! with its processes and memory as they were; one a user paused stays
//! asleep with a clear error unless its `auto_resume` policy is on; many
//! requests at once wake it once.

mod common;

use common::*;

/// Start a background process that counts in memory (and writes the count
/// to /tmp/n every 100 ms); returns its pid inside the sandbox.
fn start_counter(d: &Daemon, sb: &str) -> String {
    let pid = d.ok(&[
        "exec",
        "-d",
        sb,
        "--",
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done",
    ]);
    let pid = pid.trim().to_string();
    assert!(pid.parse::<u32>().is_ok(), "exec -d printed {pid:?}");
    wait_for(10, "the counter to count", || {
        d.run(&["exec", sb, "--", "sh", "-c", "test \"$(cat /tmp/n)\" -gt 2"])
            .status
            .success()
    });
    pid
}

/// The counter's last value.
fn count(d: &Daemon, sb: &str) -> u64 {
    d.ok(&["exec", sb, "--", "cat", "/tmp/n"])
        .trim()
        .parse()
        .unwrap()
}

fn state(d: &Daemon, sb: &str) -> String {
    d.inspect(sb)["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Widen the idle timeout of a sandbox its short one just paused, so that
/// no second idle pause falls between the CLI calls of a slow test run.
/// It changes no state and no reason: the pause stays the policy's and it
/// still wakes on use.
fn keep_awake_once_woken(d: &Daemon, sb: &str) {
    let before = d.inspect(sb);
    d.ok(&["update", sb, "--idle-timeout", "1h"]);
    let after = d.inspect(sb);
    for field in ["state", "wakes_on_use", "state_changed_at"] {
        assert_eq!(before[field], after[field], "{field}: {before} -> {after}");
    }
}

/// Milliseconds since the epoch (the daemon's clock is the host's).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// How many times the sandbox's events say it was woken.
fn wakes(d: &Daemon, sb: &str) -> usize {
    d.ok(&["logs", sb]).matches("woken by").count()
}

/// After an idle timeout paused it, `dwell exec` resumes the sandbox and
/// runs: the state is `running` afterwards, the background process is the
/// same one and its count carried on from where it stopped (memory kept),
/// and the wake is in the events and the metrics.
#[test]
fn an_idle_paused_sandbox_wakes_for_exec_with_its_memory() {
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(&["--resync-secs", "1"]);
    d.create("web", &["--idle-timeout", "2s"]);
    let pid = start_counter(&d, "web");
    let t0 = now_ms();
    let n0 = count(&d, "web");
    wait_for(15, "idle -> paused", || state(&d, "web") == "paused");
    keep_awake_once_woken(&d, "web");
    let info = d.inspect("web");
    assert_eq!(info["wakes_on_use"], true, "{info}");
    assert!(
        d.ok(&["inspect", "web"]).contains("auto-resume: on"),
        "inspect says it wakes on use"
    );
    // Asleep for a while: a counter left running would count on meanwhile.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let paused_at = info["state_changed_at"].as_i64().unwrap();
    let t1 = now_ms();
    let before = d
        .ok(&[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            &format!("kill -0 {pid} && cat /tmp/n"),
        ])
        .trim()
        .parse::<u64>()
        .unwrap();
    let t2 = now_ms();
    // The same process (kill -0) with its count from before the pause, and
    // it did not count while asleep: at most 10 a second (a slow machine
    // counts fewer, never more) while it ran, before the pause and after
    // the wake, plus one in progress.
    let awake_ms = (paused_at - t0) + (t2 - t1);
    let most = n0 + (awake_ms.max(0) as u64).div_ceil(100) + 1;
    assert!(
        (n0..=most).contains(&before),
        "the count went from {n0} to {before} (at most {most} unless it counted while paused)"
    );
    assert_eq!(state(&d, "web"), "running", "the exec woke it");
    // Thawed: it counts on from there.
    wait_for(10, "the counter to count on after the wake", || {
        count(&d, "web") > before
    });
    let events = d.ok(&["logs", "web"]);
    assert!(events.contains("woken by exec"), "{events}");
    assert_eq!(wakes(&d, "web"), 1, "{events}");
    // Woken means active: the idle timeout counts from the wake.
    let last = d.inspect("web")["last_activity_at"].as_i64().unwrap();
    assert!(
        last >= info["state_changed_at"].as_i64().unwrap(),
        "activity recorded"
    );
    let metrics = unix_get(&d, "/metrics");
    assert_eq!(metrics.status, 200, "{metrics}");
    assert!(
        metrics
            .text()
            .contains("dwell_wakes_total{tenant=\"default\",from=\"paused\"} 1"),
        "{metrics}"
    );
}

/// GET `path` on the daemon's unix socket (where the caller is the admin).
fn unix_get(d: &Daemon, path: &str) -> Response {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    http::parse(&raw)
}

/// A gVisor sandbox an idle timeout paused and `pause_after` then
/// hibernated (memory saved to disk) is restored by an exec, with its
/// process and count.
#[test]
fn a_hibernated_gvisor_sandbox_wakes_for_exec_with_its_memory() {
    if !can_run_gvisor() {
        return;
    }
    let d = Daemon::start_with(&["--resync-secs", "1"]);
    d.create(
        "hib",
        &[
            "--isolation",
            "gvisor",
            "--idle-timeout",
            "2s",
            "--pause-after",
            "1s",
        ],
    );
    let pid = start_counter(&d, "hib");
    let n0 = count(&d, "hib");
    wait_for(60, "idle -> paused -> hibernated", || {
        state(&d, "hib") == "hibernated"
    });
    keep_awake_once_woken(&d, "hib");
    assert_eq!(d.inspect("hib")["wakes_on_use"], true);
    let out = d.ok(&[
        "exec",
        "hib",
        "--",
        "sh",
        "-c",
        &format!("kill -0 {pid} && cat /tmp/n"),
    ]);
    let n1: u64 = out.trim().parse().unwrap();
    assert!(n1 >= n0, "the counter went on from {n0}: {n1}");
    assert_eq!(state(&d, "hib"), "running");
    let events = d.ok(&["logs", "hib"]);
    assert!(
        events.contains("woken by exec") && events.contains("resumed from hibernation"),
        "{events}"
    );
}

/// A sandbox its user paused does not wake on use: exec and cp fail with
/// the state and the way out, exit code 75, and nothing is resumed. With
/// `--auto-resume` set it wakes; `--auto-resume=false` keeps even a
/// policy-paused sandbox asleep.
#[test]
fn a_user_paused_sandbox_stays_asleep_unless_auto_resume_is_set() {
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(&["--resync-secs", "1"]);
    d.create("web", &[]);
    d.ok(&["pause", "web"]);
    assert_eq!(d.inspect("web")["wakes_on_use"], false);
    let out = d.run(&["exec", "web", "--", "true"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains("sandbox web is paused")
            && err.contains("dwell resume web")
            && err.contains("--auto-resume"),
        "{err}"
    );
    let dst = d.dir.path().join("x");
    let out = d.run(&["cp", "web:/etc/hostname", dst.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert_eq!(state(&d, "web"), "paused", "nothing woke it");
    assert_eq!(wakes(&d, "web"), 0);
    // Turned on, the same request wakes it.
    d.ok(&["update", "web", "--auto-resume"]);
    assert_eq!(d.inspect("web")["spec"]["policies"]["auto_resume"], true);
    assert_eq!(d.ok(&["exec", "web", "--", "echo", "up"]), "up\n");
    assert_eq!(state(&d, "web"), "running");
    // Off keeps a sandbox a policy paused asleep too.
    d.create("off", &["--idle-timeout", "2s", "--auto-resume=false"]);
    wait_for(15, "idle -> paused", || state(&d, "off") == "paused");
    keep_awake_once_woken(&d, "off");
    let out = d.run(&["exec", "off", "--", "true"]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(d.ok(&["inspect", "off"]).contains("auto-resume: off"));
    d.ok(&["resume", "off"]);
    assert_eq!(d.ok(&["exec", "off", "--", "echo", "ok"]), "ok\n");
}

/// Many execs reaching a paused sandbox at once all run, and it is woken
/// once.
#[test]
fn concurrent_execs_wake_a_sandbox_once() {
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(&["--resync-secs", "1"]);
    d.create("busy", &["--idle-timeout", "2s"]);
    wait_for(15, "idle -> paused", || state(&d, "busy") == "paused");
    keep_awake_once_woken(&d, "busy");
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|i| {
                let d = &d;
                s.spawn(move || d.run(&["exec", "busy", "--", "echo", &format!("n{i}")]))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "exec {i}: {}", stderr(o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), format!("n{i}\n"));
    }
    assert_eq!(state(&d, "busy"), "running");
    let events = d.ok(&["logs", "busy"]);
    assert_eq!(wakes(&d, "busy"), 1, "{events}");
    assert_eq!(events.matches("thawing processes").count(), 1, "{events}");
}

/// A file read (`dwell cp` out of the sandbox) wakes it as an exec does.
#[test]
fn a_file_read_wakes_a_paused_sandbox() {
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(&["--resync-secs", "1"]);
    d.create("files", &["--idle-timeout", "2s"]);
    d.sh("files", "echo kept > /root/f");
    wait_for(15, "idle -> paused", || state(&d, "files") == "paused");
    keep_awake_once_woken(&d, "files");
    let dst = d.dir.path().join("f");
    d.ok(&["cp", "files:/root/f", dst.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "kept\n");
    assert_eq!(state(&d, "files"), "running");
    let events = d.ok(&["logs", "files"]);
    assert!(events.contains("woken by file read"), "{events}");
}

/// `--default-auto-resume` gives a tenant's new sandboxes the policy (and
/// `dwell update` changes it on one).
#[test]
fn tenant_defaults_carry_auto_resume() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.ok(&["tenant", "create", "acme", "--default-auto-resume=false"]);
    let out = d.ok(&[
        "--as-tenant",
        "acme",
        "create",
        "--name",
        "a",
        "--memory",
        "256M",
        "--disk",
        "512M",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["spec"]["policies"]["auto_resume"], false, "{v}");
    d.ok(&["--as-tenant", "acme", "update", "a", "--auto-resume"]);
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["--as-tenant", "acme", "inspect", "a", "--json"])).unwrap();
    assert_eq!(v["spec"]["policies"]["auto_resume"], true, "{v}");
}
