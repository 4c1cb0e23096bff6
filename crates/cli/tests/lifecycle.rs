//! End to end: the lifecycle of persistent and ephemeral sandboxes, driven
//! through the real `dwell` binary against a real daemon.

mod common;

use common::*;

#[test]
fn persistent_files_survive_stop_start_and_daemon_restart() {
    if !can_run() {
        return;
    }
    let mut d = Daemon::start();
    let id = d.create("work", &["--persistent"]);
    d.sh("work", "echo hello > /root/notes.txt && mkdir -p /usr/local/lib/pkg && echo installed > /usr/local/lib/pkg/marker");
    // Writes to the image's /usr land in the sandbox's volume, never on the host.
    assert!(!std::path::Path::new("/usr/local/lib/pkg/marker").exists());
    assert!(d.ok(&["stop", "work"]).contains("stopped"));
    assert_eq!(d.inspect("work")["state"], "stopped");
    d.ok(&["start", "work"]);
    assert_eq!(
        d.sh("work", "cat /root/notes.txt /usr/local/lib/pkg/marker"),
        "hello\ninstalled\n"
    );
    // A stopped sandbox survives a daemon restart, and starts again.
    d.ok(&["stop", "work"]);
    d.restart();
    assert_eq!(d.inspect(&id)["state"], "stopped");
    d.ok(&["start", "work"]);
    assert_eq!(d.sh("work", "cat /root/notes.txt"), "hello\n");
    let events = d.ok(&["logs", "work"]);
    assert!(
        events.contains("stop requested") && events.contains("started on request"),
        "{events}"
    );
}

/// The sandbox's own hostname resolves (sudo and friends look it up), at
/// every start, and what a user put into /etc/hosts stays.
#[test]
fn the_sandbox_hostname_resolves_and_user_hosts_entries_stay() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("named-box", &["--persistent"]);
    assert_eq!(d.sh("named-box", "hostname"), "named-box\n");
    let got = d.sh("named-box", "getent hosts \"$(hostname)\"");
    assert!(
        got.split_whitespace().any(|w| w == "named-box")
            && got.starts_with("127.0.1.1")
            && got.lines().count() == 1,
        "{got:?}"
    );
    d.sh("named-box", "echo '192.0.2.7 mydb' >> /etc/hosts");
    d.ok(&["stop", "named-box"]);
    d.ok(&["start", "named-box"]);
    assert_eq!(
        d.sh(
            "named-box",
            "getent hosts mydb | awk '{print $1, $2}' && getent hosts named-box >/dev/null \
             && grep -c named-box /etc/hosts"
        ),
        "192.0.2.7 mydb\n1\n"
    );
}

/// A sandbox that puts a FIFO nobody writes to at /etc/hosts (or a link to
/// one) still starts and serves: the agent, as PID 1, leaves such a file
/// alone instead of waiting on it before it serves anything.
#[test]
fn a_fifo_at_etc_hosts_does_not_hold_the_next_start() {
    if !can_run() {
        return;
    }
    // The namespace runtime keeps a FIFO across a restart, and the agent
    // leaves it alone; gVisor's file system does not keep it (the agent then
    // finds no file and writes one): on both, what counts is the start.
    let keeps_fifos = isolation() != "gvisor";
    let d = Daemon::start();
    d.create("fifo-box", &["--persistent"]);
    let before = d.sh(
        "fifo-box",
        "rm -f /etc/hosts && mkfifo /etc/hosts && test -p /etc/hosts && echo fifo",
    );
    assert_eq!(before, "fifo\n");
    d.ok(&["stop", "fifo-box"]);
    let t = std::time::Instant::now();
    d.ok(&["start", "fifo-box"]);
    let after = d.sh(
        "fifo-box",
        "echo up; test -p /etc/hosts && echo still-a-fifo; true",
    );
    if keeps_fifos {
        assert_eq!(after, "up\nstill-a-fifo\n");
    } else {
        assert!(after.starts_with("up\n"), "{after:?}");
    }
    // A link to a FIFO elsewhere is left alone too.
    d.sh(
        "fifo-box",
        "rm -f /etc/hosts && mkfifo /root/pipe && ln -s /root/pipe /etc/hosts",
    );
    d.ok(&["stop", "fifo-box"]);
    d.ok(&["start", "fifo-box"]);
    let after = d.sh(
        "fifo-box",
        "echo up; readlink /etc/hosts; test -p /root/pipe && echo fifo; true",
    );
    if keeps_fifos {
        assert_eq!(after, "up\n/root/pipe\nfifo\n");
    } else {
        assert!(after.starts_with("up\n"), "{after:?}");
    }
    assert!(
        t.elapsed() < std::time::Duration::from_secs(60),
        "the starts took {:?}",
        t.elapsed()
    );
}

#[test]
fn ephemeral_sandbox_and_its_data_are_gone_after_stop() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let id = d.create("tmp", &["--ephemeral"]);
    d.sh("tmp", "echo secret > /root/data");
    let vol = d.data.join("volumes").join(&id);
    assert!(vol.exists());
    assert!(d.ok(&["stop", "tmp"]).contains("deleted"));
    assert!(
        !vol.exists(),
        "the volume of an ephemeral sandbox must be gone"
    );
    assert!(!d.data.join("sandboxes").join(&id).exists());
    let out = d.run(&["inspect", "tmp"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no sandbox named"),
        "{}",
        stderr(&out)
    );
    // The name is free again, and the new sandbox starts empty.
    d.create("tmp", &["--ephemeral"]);
    let out = d.run(&["exec", "tmp", "--", "cat", "/root/data"]);
    assert!(!out.status.success());
}

#[test]
fn daemon_sigkill_keeps_running_sandboxes_and_their_processes() {
    if !can_run() {
        return;
    }
    let mut d = Daemon::start();
    let id = d.create("live", &[]);
    let pid = d.ok(&[
        "exec",
        "-d",
        "--tag",
        "counter",
        "live",
        "--",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done",
    ]);
    let pid = pid.trim().to_string();
    let host_pid = d.host_pid(&id);
    d.kill9();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(pid_alive(host_pid), "PID 1 died with the daemon");
    d.restart();
    assert_eq!(d.inspect("live")["state"], "running");
    let a = common::counter::read_number(&d, "live", "/tmp/n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let b = common::counter::read_number(&d, "live", "/tmp/n");
    assert!(
        b > a,
        "the background process stopped counting ({a} -> {b})"
    );
    let ps = d.ok(&["ps", "live"]);
    assert!(ps.contains("counter") && ps.contains(&pid), "{ps}");
    assert_eq!(
        d.host_pid(&id),
        host_pid,
        "the sandbox was restarted instead of adopted"
    );
}

/// A second `dwell serve` on a data dir in use, or on a socket another
/// daemon serves, is refused with what to do, before it adopts (or
/// removes) anything: the first daemon and its sandbox go on untouched.
#[test]
fn a_second_daemon_on_the_same_data_dir_or_socket_is_refused() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let id = d.create("first", &[]);
    let host_pid = d.host_pid(&id);
    let other = tempfile::tempdir().unwrap();
    let serve = |data: &std::path::Path, socket: &std::path::Path| {
        let mut cmd = std::process::Command::new(dwell_testkit::daemon::dwell_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data)
            .arg("--socket")
            .arg(socket)
            .arg("--agent")
            .arg(dwell_testkit::daemon::agent_bin())
            .args(["--gvisor-pool", "0"])
            .stdin(std::process::Stdio::null());
        // A daemon that is not refused runs on: killed, and the test fails.
        let out = output_within(cmd, "a second dwell serve", String::new);
        assert!(!out.status.success(), "a second daemon started");
        stderr(&out)
    };
    let e = serve(&d.data, &other.path().join("s.sock"));
    assert!(
        e.contains("another dwell daemon (pid ")
            && e.contains("uses the data dir")
            && e.contains("--data-dir"),
        "{e}"
    );
    assert!(!other.path().join("s.sock").exists());
    let e = serve(&other.path().join("data"), &d.socket);
    assert!(
        e.contains("already serves") && e.contains("--socket"),
        "{e}"
    );
    assert!(d.socket.exists(), "the first daemon's socket was removed");
    assert_eq!(d.inspect("first")["state"], "running");
    assert_eq!(d.host_pid(&id), host_pid);
    assert!(pid_alive(host_pid));
}

#[test]
fn pause_freezes_and_resume_thaws_without_losing_anything() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("p", &[]);
    d.ok(&[
        "exec",
        "-d",
        "p",
        "--",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.02; done",
    ]);
    wait_for(5, "counter", || {
        d.run(&["exec", "p", "--", "test", "-s", "/tmp/n"])
            .status
            .success()
    });
    let before: u64 = common::counter::read_number(&d, "p", "/tmp/n");
    d.ok(&["pause", "p"]);
    assert_eq!(d.inspect("p")["state"], "paused");
    // Unfrozen, the counter would advance by about 50 in this time.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let out = d.run(&["exec", "p", "--", "true"]);
    assert!(
        !out.status.success() && stderr(&out).contains("paused"),
        "{}",
        stderr(&out)
    );
    d.ok(&["resume", "p"]);
    let a: u64 = common::counter::read_number(&d, "p", "/tmp/n");
    // What runs between the reads and the freeze/thaw (longer under gVisor,
    // where each runsc call takes tens of ms) is not the paused time.
    assert!(
        a - before < 25,
        "processes ran while paused ({before} -> {a})"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let b: u64 = common::counter::read_number(&d, "p", "/tmp/n");
    assert!(b > a);
}

#[test]
fn rm_leaves_no_mount_loop_device_cgroup_or_process() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let id = d.create("gone", &[]);
    d.ok(&["exec", "-d", "gone", "--", "sleep", "1000"]);
    let host_pid = d.host_pid(&id);
    let out = d.run(&["rm", "gone"]);
    assert!(
        !out.status.success() && stderr(&out).contains("rm -f"),
        "rm of a running sandbox needs -f: {}",
        stderr(&out)
    );
    d.ok(&["rm", "-f", "gone"]);
    assert!(!pid_alive(host_pid), "the sandbox's PID 1 still runs");
    assert!(leftovers(&d.data).is_empty(), "{:?}", leftovers(&d.data));
    let cgroups = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!cgroups.contains(&id));
    for root in [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
    ] {
        let found = walk_find(std::path::Path::new(root), &id, 3);
        assert!(found.is_none(), "cgroup left behind: {found:?}");
    }
    assert!(d.ok(&["ls", "-q"]).trim().is_empty());
}

fn walk_find(dir: &std::path::Path, name: &str, depth: u32) -> Option<std::path::PathBuf> {
    if depth == 0 {
        return None;
    }
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            if e.file_name().to_string_lossy() == name {
                return Some(e.path());
            }
            if let Some(p) = walk_find(&e.path(), name, depth - 1) {
                return Some(p);
            }
        }
    }
    None
}

#[test]
fn bad_input_gets_clear_errors_and_creates_nothing() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let out = d.run(&["create", "--name", "x", "--memory", "lots"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("512M"),
        "the error shows the accepted form: {}",
        stderr(&out)
    );
    let out = d.run(&["create", "--name", "Bad Name"]);
    assert_eq!(out.status.code(), Some(64));
    let out = d.run(&["create", "--name", "x", "--image", "nope"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    assert!(
        d.ok(&["ls", "-q"]).trim().is_empty(),
        "a failed create left a sandbox"
    );
    d.create("dup", &[]);
    let out = d.run(&["create", "--name", "dup"]);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let out = d.run(&["exec", "missing", "--", "true"]);
    assert!(
        stderr(&out).contains("no sandbox named"),
        "{}",
        stderr(&out)
    );
    d.ok(&["stop", "dup"]);
    let out = d.run(&["exec", "dup", "--", "true"]);
    assert!(stderr(&out).contains("dwell start dup"), "{}", stderr(&out));
    let out = d.run(&["pause", "dup"]);
    assert!(!out.status.success());
    // Without a daemon: a clear error and exit code 69.
    let out = std::process::Command::new(dwell_bin())
        .args(["ls"])
        .env("DWELL_SOCKET", d.dir.path().join("nothing.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    assert!(stderr(&out).contains("dwell serve"));
}

#[test]
fn imported_oci_image_runs_and_is_shared() {
    if !can_run() {
        return;
    }
    let busybox = std::path::Path::new("/bin/busybox");
    if !busybox.exists() {
        skip("/bin/busybox (package busybox-static) is needed to build a test image");
        return;
    }
    let d = Daemon::start();
    // A two-layer `docker save` tarball: busybox, then a file and a whiteout.
    let dir = d.dir.path().join("img");
    let script = r#"
set -e
cd "$1"
mkdir -p l1/bin l1/etc l2/etc
cp /bin/busybox l1/bin/busybox
for t in sh echo cat ls id; do ln -s busybox l1/bin/$t; done
echo old > l1/etc/old
echo 'root:x:0:0:root:/root:/bin/sh' > l1/etc/passwd
echo new > l2/etc/motd
touch l2/etc/.wh.old
mkdir -p out/a out/b
tar -C l1 -cf out/a/layer.tar .
tar -C l2 -cf out/b/layer.tar .
d1=$(sha256sum out/a/layer.tar | cut -d' ' -f1)
d2=$(sha256sum out/b/layer.tar | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","FROM_IMAGE=yes"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s","sha256:%s"]}}' $d1 $d2 > out/config.json
printf '[{"Config":"config.json","RepoTags":["tiny:1"],"Layers":["a/layer.tar","b/layer.tar"]}]' > out/manifest.json
tar -C out -cf image.tar manifest.json config.json a b
"#;
    std::fs::create_dir_all(&dir).unwrap();
    let st = std::process::Command::new("sh")
        .args(["-c", script, "sh", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    d.ok(&[
        "image",
        "import",
        "tiny",
        dir.join("image.tar").to_str().unwrap(),
    ]);
    assert!(d.ok(&["image", "ls"]).contains("tiny"));
    d.create("t1", &["--image", "tiny"]);
    d.create("t2", &["--image", "tiny"]);
    assert_eq!(d.ok(&["exec", "t1", "--", "cat", "/etc/motd"]), "new\n");
    assert_eq!(
        d.ok(&["exec", "t1", "--", "sh", "-c", "echo $FROM_IMAGE"]),
        "yes\n"
    );
    let out = d.run(&["exec", "t1", "--", "cat", "/etc/old"]);
    assert!(!out.status.success(), "the whiteout did not hide /etc/old");
    d.ok(&["exec", "t1", "--", "sh", "-c", "echo mine > /etc/motd"]);
    assert_eq!(
        d.ok(&["exec", "t2", "--", "cat", "/etc/motd"]),
        "new\n",
        "sandboxes share image layers read-only"
    );
    let bad = d.run(&["image", "import", "broken", d.dir.path().to_str().unwrap()]);
    assert!(!bad.status.success());
}

#[test]
fn policies_fire_in_real_time_and_keepalive_pushes_them() {
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(&["--resync-secs", "1"]);
    let id = d.create(
        "short",
        &[
            "--idle-timeout",
            "2s",
            "--pause-after",
            "2s",
            "--delete-after",
            "2s",
        ],
    );
    let text = d.ok(&["inspect", "short"]);
    assert!(
        text.contains("idle-timeout 2s") && text.contains("next:        idle_timeout"),
        "{text}"
    );
    let kept = d.create("kept", &["--idle-timeout", "2s"]);
    d.ok(&["keepalive", "kept", "30s"]);
    wait_for(10, "idle -> paused", || d.inspect(&id)["state"] == "paused");
    assert!(d.inspect(&id)["reason"]
        .as_str()
        .unwrap()
        .contains("idle_timeout"));
    // gVisor sandboxes paused too long hibernate instead of stopping.
    let after_pause = if isolation() == "gvisor" {
        "hibernated"
    } else {
        "stopped"
    };
    wait_for(10, "paused -> stopped", || {
        d.inspect(&id)["state"] == after_pause
    });
    wait_for(10, "stopped -> deleted", || {
        !d.run(&["inspect", &id]).status.success()
    });
    assert_eq!(
        d.inspect(&kept)["state"],
        "running",
        "the keepalive did not hold the idle timer"
    );
    d.ok(&["update", "kept", "--idle-timeout", "off"]);
    assert!(d.inspect(&kept)["schedule"].as_array().unwrap().is_empty());
    let events = d.ok(&["logs", &id]);
    assert!(events.contains("policy idle_timeout fired"), "{events}");
}

/// Sends SIGCONT to the stopped processes when dropped, so a failing test
/// leaves nothing frozen behind.
struct Frozen(Vec<i32>);

impl Drop for Frozen {
    fn drop(&mut self) {
        for &p in &self.0 {
            unsafe { libc::kill(p, libc::SIGCONT) };
        }
    }
}

#[test]
fn a_stalled_agent_does_not_delay_other_sandboxes_policies() {
    if !can_run() {
        return;
    }
    // A hostile sandbox's agent that never answers (here: stopped from the
    // host; PID 1 is the agent, or gVisor's sandbox process) must not hold
    // up the periodic pass that fires every tenant's policies.
    let d = Daemon::start_with(&["--resync-secs", "1"]);
    let mut stalled = Vec::new();
    for i in 0..3 {
        let name = format!("stall{i}");
        let id = d.create(&name, &["--entrypoint", "sleep", "--", "100000"]);
        stalled.push(id);
    }
    let frozen = Frozen(stalled.iter().map(|id| d.host_pid(id)).collect());
    for &p in &frozen.0 {
        assert_eq!(unsafe { libc::kill(p, libc::SIGSTOP) }, 0);
    }
    let t0 = std::time::Instant::now();
    let id = d.create("victim", &["--idle-timeout", "2s"]);
    wait_for(20, "idle -> paused", || d.inspect(&id)["state"] == "paused");
    let took = t0.elapsed();
    // Before the fix each stalled agent added 10 s to every pass.
    assert!(
        took < std::time::Duration::from_secs(8),
        "the idle timeout fired {took:?} after create: stalled agents held up the pass"
    );
    drop(frozen);
}

#[test]
fn a_daemon_killed_mid_create_or_mid_delete_finishes_the_work_on_restart() {
    if !can_run() {
        return;
    }
    let mut d = Daemon::start();
    // Killed after the sandbox started but before its record says so.
    d.env = vec![("DWELL_CRASH_AT".into(), "start:after-runtime".into())];
    d.restart();
    let out = d.run(&[
        "create", "--name", "c1", "--memory", "128M", "--disk", "256M",
    ]);
    assert!(
        !out.status.success(),
        "the daemon should have died mid-create"
    );
    d.wait_exit();
    d.env.clear();
    d.restart();
    wait_for(10, "c1 adopted", || d.inspect("c1")["state"] == "running");
    assert_eq!(d.sh("c1", "echo ok"), "ok\n");
    let id = d.inspect("c1")["id"].as_str().unwrap().to_string();

    // Killed after the processes stopped but before the volume was wiped.
    d.env = vec![("DWELL_CRASH_AT".into(), "delete:after-stop".into())];
    d.restart();
    let out = d.run(&["rm", "-f", "c1"]);
    assert!(
        !out.status.success(),
        "the daemon should have died mid-delete"
    );
    d.wait_exit();
    assert!(
        d.data.join("volumes").join(&id).exists(),
        "the crash point fired too late"
    );
    d.env.clear();
    d.restart();
    wait_for(10, "delete finished", || {
        !d.data.join("volumes").join(&id).exists()
    });
    assert!(!d.run(&["inspect", "c1"]).status.success());
    assert!(leftovers(&d.data).is_empty(), "{:?}", leftovers(&d.data));

    // A sandbox whose record is lost (as after a crash of the database):
    // the sweep finds its processes, cgroups, mount, loop device and volume.
    let orphan = d.create("orphan", &[]);
    let host_pid = d.host_pid(&orphan);
    d.kill9();
    let db = d.data.join("dwell.db");
    let st = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM sandboxes WHERE id=?', (sys.argv[2],)); c.commit()", db.to_str().unwrap(), &orphan])
        .status()
        .unwrap();
    assert!(st.success());
    d.restart();
    wait_for(15, "the sweep to clean the orphan", || {
        !pid_alive(host_pid)
            && !d.data.join("volumes").join(&orphan).exists()
            && leftovers(&d.data).is_empty()
    });
    assert!(
        d.log().contains("sweep:"),
        "the sweep must report what it cleaned"
    );
}

#[test]
fn diff_lists_packages_and_files_changed_from_the_image() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let id = d.create("drift", &[]);
    d.sh(
        "drift",
        "echo hello > /root/new.txt && echo changed >> /etc/issue && rm /etc/issue.net && mkdir -p /usr/local/share/tool && head -c 1000 /dev/zero > /usr/local/share/tool/data \
         && printf '\\nPackage: fake-tool\\nStatus: install ok installed\\nVersion: 1.2\\nArchitecture: amd64\\n' >> /var/lib/dpkg/status",
    );
    let check = |d: &Daemon| {
        let v: serde_json::Value =
            serde_json::from_str(&d.ok(&["diff", "drift", "--json"])).unwrap();
        let files = v["files"].as_array().unwrap();
        let change = |p: &str| {
            files
                .iter()
                .find(|f| f["path"] == p)
                .map(|f| f["change"].as_str().unwrap().to_string())
        };
        assert_eq!(change("/root/new.txt").as_deref(), Some("added"), "{v}");
        assert_eq!(change("/etc/issue").as_deref(), Some("changed"));
        assert_eq!(change("/etc/issue.net").as_deref(), Some("deleted"));
        assert_eq!(
            change("/usr/local/share/tool/data").as_deref(),
            Some("added")
        );
        assert_eq!(
            files
                .iter()
                .find(|f| f["path"] == "/usr/local/share/tool/data")
                .unwrap()["size"],
            1000
        );
        let installed = v["packages"]["installed"].as_array().unwrap();
        assert!(
            installed
                .iter()
                .any(|p| p["name"] == "fake-tool" && p["version"] == "1.2"),
            "{v}"
        );
    };
    check(&d);
    d.ok(&["stop", "drift"]);
    check(&d);
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&id),
        "diff left the stopped volume mounted"
    );
}

#[test]
fn snapshots_restore_in_place_and_fork_many() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("s1", &[]);
    d.sh("s1", "echo v1 > /root/state && head -c 3000000 /dev/urandom > /root/blob && sha256sum /root/blob > /root/blob.sum");
    d.ok(&[
        "exec",
        "-d",
        "s1",
        "--",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done",
    ]);
    let snap: serde_json::Value =
        serde_json::from_str(&d.ok(&["snapshot", "create", "s1", "--name", "before", "--json"]))
            .unwrap();
    assert!(snap["freeze_us"].as_u64().is_some(), "{snap}");
    assert!(snap["uploaded_bytes"].as_u64().unwrap() > 0);
    // The sandbox kept running through the capture.
    let a = common::counter::read_number(&d, "s1", "/tmp/n");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let b = common::counter::read_number(&d, "s1", "/tmp/n");
    assert!(b > a, "processes stayed frozen after the snapshot");
    // A second snapshot after a small change stores little.
    d.sh("s1", "echo v2 > /root/state");
    let snap2: serde_json::Value =
        serde_json::from_str(&d.ok(&["snapshot", "create", "s1", "--name", "after", "--json"]))
            .unwrap();
    assert!(
        snap2["uploaded_bytes"].as_u64().unwrap() < snap["uploaded_bytes"].as_u64().unwrap() / 2,
        "{snap2}"
    );
    // Roll back in place.
    d.ok(&["restore", "s1", "before"]);
    assert_eq!(d.inspect("s1")["state"], "running");
    assert_eq!(d.sh("s1", "cat /root/state"), "v1\n");
    d.sh("s1", "sha256sum -c /root/blob.sum >/dev/null");
    // Fork three independent sandboxes from it.
    d.ok(&[
        "create", "--from", "before", "--name", "w", "--count", "3", "--memory", "128M",
    ]);
    for i in 1..=3 {
        assert_eq!(d.sh(&format!("w-{i}"), "cat /root/state"), "v1\n");
    }
    d.sh("w-1", "echo mine > /root/state");
    assert_eq!(
        d.sh("w-2", "cat /root/state"),
        "v1\n",
        "forks must be independent"
    );
    let list = d.ok(&["snapshot", "ls"]);
    assert!(list.contains("before") && list.contains("after"), "{list}");
    let out = d.run(&["restore", "s1", "nope"]);
    assert!(stderr(&out).contains("no snapshot"), "{}", stderr(&out));
    d.ok(&["snapshot", "rm", "after", "before"]);
    assert!(!d.ok(&["snapshot", "ls"]).contains("before"));
}

/// Each start of a sandbox has a kernel boot id of its own: not the
/// host's, the same across a pause, new after a stop and start (as a VM's
/// would be), and read-only inside.
#[test]
fn each_start_has_its_own_boot_id() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("boots", &["--persistent"]);
    let read = || d.sh("boots", "cat /proc/sys/kernel/random/boot_id");
    let host = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let first = read();
    assert_eq!(first.trim().len(), 36, "a UUID: {first:?}");
    assert_ne!(first, host, "not the host's boot id");
    d.ok(&["pause", "boots"]);
    d.ok(&["resume", "boots"]);
    assert_eq!(read(), first, "a pause keeps the boot");
    d.ok(&["stop", "boots"]);
    d.ok(&["start", "boots"]);
    let second = read();
    assert_ne!(second, first, "a stop and start boots again");
    let out = d.run(&[
        "exec",
        "boots",
        "--",
        "sh",
        "-c",
        "echo x > /proc/sys/kernel/random/boot_id",
    ]);
    assert!(!out.status.success(), "the boot id is read-only");
    assert_eq!(read(), second);
}
