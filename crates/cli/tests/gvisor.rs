//! End to end with `--isolation gvisor`: the lifecycle and exec through
//! the daemon, hibernation (nothing of the sandbox left on the host, the
//! background counter continuing, five rounds in a row, across a daemon
//! `kill -9`), memory-snapshot templates, the pause-too-long policy, and
//! the clear refusal to hibernate a namespace sandbox. The gVisor tests
//! skip with a printed reason when runsc is missing.
//!
//! The other end-to-end tests run against gVisor too with
//! `DWELL_TEST_ISOLATION=gvisor` (the harness passes it to the daemon as
//! `--default-isolation`).

mod common;

use std::time::Duration;

use common::counter::{counter, start_counter};
use common::*;

/// The CPU quota of gVisor sandbox `id`'s cgroup ("-1": unlimited), from
/// the v1 cpu controller or cgroup2's cpu.max.
fn cpu_quota(id: &str) -> String {
    for root in ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup"] {
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let dir = e.path().join(id);
            if let Ok(q) = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")) {
                return q.trim().to_string();
            }
            if let Ok(m) = std::fs::read_to_string(dir.join("cpu.max")) {
                return m
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .replace("max", "-1");
            }
        }
    }
    panic!("no cgroup of {id} with a cpu controller")
}

/// Hibernate `sb` and check it is fully off the host, with its saved
/// state's size shown.
fn hibernate_checked(d: &Daemon, sb: &str, id: &str) {
    d.ok(&["hibernate", sb]);
    let v = d.inspect(sb);
    assert_eq!(v["state"], "hibernated", "{v}");
    assert!(
        v["saved_state_bytes"].as_u64().unwrap_or(0) > 0,
        "no saved state size: {v}"
    );
    let procs = host_processes_of(id);
    assert!(
        procs.is_empty(),
        "processes of hibernated {sb} still run: {procs:?}"
    );
    let ls = d.ok(&["ls"]);
    assert!(ls.contains("hibernated ("), "{ls}");
}

#[test]
fn gvisor_sandbox_runs_exec_files_pause_stop_start_and_rm() {
    if !can_run_gvisor() {
        return;
    }
    let d = Daemon::start();
    let id = d.create("g", &["--isolation", "gvisor", "--cpus", "0.5"]);
    assert_eq!(d.inspect("g")["runtime"], "gvisor");
    // runsc starts it unthrottled; the runtime then applies the limit.
    assert_eq!(cpu_quota(&id), "50000");
    // The sandbox talks to gVisor's kernel, not the host's.
    let dmesg = d.sh("g", "dmesg 2>/dev/null | head -1; cat /proc/version");
    assert!(
        dmesg.to_lowercase().contains("gvisor") || dmesg.contains("4.4.0"),
        "{dmesg}"
    );
    assert_eq!(
        d.run(&["exec", "g", "--", "sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );
    let local = d.dir.path().join("in.txt");
    std::fs::write(&local, "payload\n").unwrap();
    d.ok(&["cp", local.to_str().unwrap(), "g:/root/"]);
    assert_eq!(d.sh("g", "cat /root/in.txt"), "payload\n");
    start_counter(&d, "g");
    d.ok(&["pause", "g"]);
    assert_eq!(d.inspect("g")["state"], "paused");
    let out = d.run(&["exec", "g", "--", "true"]);
    assert!(!out.status.success() && stderr(&out).contains("paused"));
    d.ok(&["resume", "g"]);
    let a = counter(&d, "g");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        counter(&d, "g") > a,
        "the counter does not run after resume"
    );
    d.ok(&["stop", "g"]);
    assert!(host_processes_of(&id).is_empty());
    d.ok(&["start", "g"]);
    assert_eq!(d.sh("g", "cat /root/in.txt"), "payload\n");
    d.ok(&["rm", "-f", "g"]);
    assert!(host_processes_of(&id).is_empty());
    assert!(leftovers(&d.data).is_empty(), "{:?}", leftovers(&d.data));
}

#[test]
fn hibernate_five_rounds_loses_nothing_and_survives_a_daemon_kill9() {
    if !can_run_gvisor() {
        return;
    }
    let mut d = Daemon::start();
    let id = d.create("h", &["--isolation", "gvisor"]);
    start_counter(&d, "h");
    let ps_before = d.ok(&["ps", "h"]);
    for round in 1..=5 {
        d.sh("h", &format!("echo {round} >> /root/rounds"));
        let before = counter(&d, "h");
        hibernate_checked(&d, "h", &id);
        if round == 3 {
            // The saved state outlives the daemon.
            d.kill9();
            d.restart();
            assert_eq!(d.inspect("h")["state"], "hibernated");
        }
        d.ok(&["resume", "h"]);
        assert_eq!(
            cpu_quota(&id),
            "100000",
            "round {round}: the CPU limit after resume"
        );
        let after = counter(&d, "h");
        assert!(
            after >= before && after < before + 100,
            "round {round}: the counter restarted or jumped ({before} -> {after})"
        );
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            counter(&d, "h") > after,
            "round {round}: the counter stopped"
        );
    }
    assert_eq!(d.sh("h", "cat /root/rounds"), "1\n2\n3\n4\n5\n");
    // The saved states were set aside at each resume and deleted in the
    // background: none is left to be restored again, none piles up.
    let state_dir = d.data.join("sandboxes").join(&id);
    let saved = || -> Vec<String> {
        std::fs::read_dir(&state_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("hibernate"))
            .collect()
    };
    wait_for(10, "the discarded saved states to be deleted", || {
        saved().is_empty()
    });
    // The same background process, not a new one.
    let pid_of = |ps: &str| {
        ps.lines()
            .find(|l| l.contains("counter"))
            .and_then(|l| l.split_whitespace().next())
            .map(String::from)
    };
    assert_eq!(pid_of(&d.ok(&["ps", "h"])), pid_of(&ps_before));
}

#[test]
fn a_hibernated_sandbox_is_a_template_for_warm_copies() {
    if !can_run_gvisor() {
        return;
    }
    let d = Daemon::start();
    d.create("tpl", &["--isolation", "gvisor"]);
    d.sh("tpl", "echo set-up-once > /root/state");
    start_counter(&d, "tpl");
    let at = counter(&d, "tpl");
    d.ok(&["hibernate", "tpl"]);
    let out = d.run(&[
        "create",
        "--name",
        "x",
        "--from",
        "tpl",
        "--isolation",
        "namespace",
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("gVisor"),
        "{}",
        stderr(&out)
    );
    // The memory fixes the network too: no NAT for a copy of a template
    // without it (and nothing half-made).
    let out = d.run(&["create", "--name", "x", "--from", "tpl", "--net"]);
    assert!(
        !out.status.success() && stderr(&out).contains("a copy keeps it"),
        "{}",
        stderr(&out)
    );
    assert!(!d.ok(&["ls"]).contains(" x "), "{}", d.ok(&["ls"]));
    for c in ["c1", "c2"] {
        d.ok(&["create", "--name", c, "--from", "tpl"]);
        let v = d.inspect(c);
        assert_eq!(v["runtime"], "gvisor");
        assert_eq!(v["image"], "host", "{v}");
        assert_eq!(d.sh(c, "cat /root/state"), "set-up-once\n");
        let n = counter(&d, c);
        assert!(
            n >= at && n < at + 100,
            "{c} did not start warm ({at} -> {n})"
        );
    }
    // Copies are independent of each other and of the template.
    d.sh("c1", "echo mine > /root/only-c1");
    assert!(!d
        .run(&["exec", "c2", "--", "test", "-e", "/root/only-c1"])
        .status
        .success());
    assert_eq!(d.inspect("tpl")["state"], "hibernated");
    d.ok(&["resume", "tpl"]);
    assert!(!d
        .run(&["exec", "tpl", "--", "test", "-e", "/root/only-c1"])
        .status
        .success());
    // A sandbox that is not hibernated is no template.
    let out = d.run(&["create", "--name", "y", "--from", "tpl"]);
    assert!(
        !out.status.success() && stderr(&out).contains("hibernate"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn paused_too_long_a_gvisor_sandbox_hibernates_instead_of_stopping() {
    if !can_run_gvisor() {
        return;
    }
    let d = Daemon::start_with(&["--resync-secs", "1"]);
    d.create("p", &["--isolation", "gvisor", "--pause-after", "1s"]);
    start_counter(&d, "p");
    d.ok(&["pause", "p"]);
    wait_for(20, "the policy to hibernate p", || {
        d.inspect("p")["state"] == "hibernated"
    });
    assert!(d.inspect("p")["reason"]
        .as_str()
        .unwrap()
        .contains("pause_after"));
    let out = d.run(&["exec", "p", "--", "true"]);
    assert!(
        !out.status.success() && stderr(&out).contains("dwell resume"),
        "{}",
        stderr(&out)
    );
    d.ok(&["resume", "p"]);
    let a = counter(&d, "p");
    std::thread::sleep(Duration::from_millis(300));
    assert!(counter(&d, "p") > a);
}

#[test]
fn namespace_sandboxes_refuse_to_hibernate_with_the_reason() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("n", &["--isolation", "namespace"]);
    let out = d.run(&["hibernate", "n"]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("CRIU") && e.contains("--isolation gvisor"),
        "{e}"
    );
    assert_eq!(d.inspect("n")["state"], "running");
    let out = d.run(&["create", "--name", "bad", "--isolation", "vm"]);
    assert!(!out.status.success() && stderr(&out).contains("namespace"));
}

#[test]
fn a_sandbox_near_its_memory_limit_hibernates_and_keeps_its_memory() {
    if !can_run_gvisor() {
        return;
    }
    let d = Daemon::start();
    // 160 MiB of random data in a 256 MiB sandbox: the checkpoint needs
    // memory beyond the limit (it was OOM-killed, and the sandbox lost).
    d.create("big", &["--isolation", "gvisor"]);
    let script = "import os, hashlib, time\n\
                  b = os.urandom(160 << 20)\n\
                  open('/root/h', 'w').write(hashlib.sha256(b).hexdigest())\n\
                  while True:\n\
                  \x20   time.sleep(0.2)\n\
                  \x20   open('/root/h2.tmp', 'w').write(hashlib.sha256(b).hexdigest() + ' ' + str(time.time()))\n\
                  \x20   os.rename('/root/h2.tmp', '/root/h2')\n";
    d.ok(&["exec", "-d", "big", "--", "python3", "-c", script]);
    wait_for(60, "the data", || {
        d.run(&["exec", "big", "--", "test", "-s", "/root/h2"])
            .status
            .success()
    });
    let h = d.sh("big", "cat /root/h");
    d.ok(&["hibernate", "big"]);
    let saved = d.inspect("big")["saved_state_bytes"].as_u64().unwrap();
    assert!(saved > 100 << 20, "only {saved} bytes saved");
    d.ok(&["resume", "big"]);
    let stamp = |d: &Daemon| -> (String, f64) {
        let s = d.sh("big", "cat /root/h2");
        let mut it = s.split_whitespace();
        (
            it.next().unwrap().to_string(),
            it.next().unwrap().parse().unwrap(),
        )
    };
    let (_, t0) = stamp(&d);
    wait_for(30, "a fresh hash after resume", || stamp(&d).1 > t0);
    assert_eq!(stamp(&d).0, h, "the memory changed across hibernation");
}

#[test]
fn a_daemon_killed_right_after_a_restore_keeps_no_stale_saved_state() {
    if !can_run_gvisor() {
        return;
    }
    let mut d = Daemon::start();
    let id = d.create("s", &["--isolation", "gvisor"]);
    start_counter(&d, "s");
    d.ok(&["hibernate", "s"]);
    // Killed after runsc restored it, before the saved state was dropped.
    d.env = vec![("DWELL_CRASH_AT".into(), "restore:after-runtime".into())];
    d.restart();
    assert!(
        !d.run(&["resume", "s"]).status.success(),
        "the crash point did not fire"
    );
    d.wait_exit();
    d.env.clear();
    d.restart();
    wait_for(20, "the restored sandbox to be adopted", || {
        d.inspect("s")["state"] == "running"
    });
    // The saved state is older than what runs now: it must go, or a later
    // start (or archive) would bring old memory back over newer files.
    let state_dir = d.data.join("sandboxes").join(&id);
    wait_for(10, "the stale saved state to be dropped", || {
        std::fs::read_dir(&state_dir)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("hibernate"))
    });
    let a = counter(&d, "s");
    std::thread::sleep(Duration::from_millis(200));
    assert!(counter(&d, "s") > a, "the adopted sandbox does not run");
}
