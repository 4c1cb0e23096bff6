//! End to end: limits the kernel enforces and walls a sandbox cannot get
//! through. Every "escape" probe is harmless: it reads, or writes only to
//! paths made for the test, and checks the host afterwards.

mod common;

use common::*;

#[test]
fn memory_limit_oom_kills_a_hog_and_exec_says_so() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.ok(&[
        "create", "--name", "hog", "--memory", "64M", "--disk", "256M",
    ]);
    // Allocate and touch 512 MiB in 64 MiB steps.
    let out = d.run(&[
        "exec",
        "hog",
        "--",
        "python3",
        "-c",
        "b=[]\nfor i in range(8): b.append(bytearray(64<<20))",
    ]);
    assert_eq!(out.status.code(), Some(137), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("OOM"),
        "the CLI must say the kernel's OOM killer fired: {}",
        stderr(&out)
    );
    let out = d.run(&[
        "exec",
        "--json",
        "hog",
        "--",
        "python3",
        "-c",
        "b=bytearray(512<<20)\nfor i in range(0, len(b), 4096): b[i]=1",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exit"]["oom_killed"], true, "{v}");
    assert_eq!(v["exit"]["signal"], 9);
    // The sandbox itself is fine afterwards.
    assert_eq!(d.sh("hog", "echo alive"), "alive\n");
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.ok(&[
        "create", "--name", "forks", "--pids", "40", "--memory", "256M", "--disk", "256M",
    ]);
    // A bounded "bomb": try to start 100 sleepers; the limit must stop it.
    d.ok(&[
        "exec",
        "-d",
        "forks",
        "--",
        "sh",
        "-c",
        "for i in $(seq 100); do sleep 3 & done 2>/dev/null; wait",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let stats: serde_json::Value =
        serde_json::from_str(&d.ok(&["stats", "forks", "--json"])).unwrap();
    let n = stats["pids"].as_u64().unwrap();
    assert!(
        (30..=40).contains(&n),
        "the pids limit (40) did not hold: {n} tasks"
    );
    wait_for(20, "sleepers to end", || {
        d.run(&["exec", "forks", "--", "true"]).status.success()
    });
    let out = d.run(&[
        "exec",
        "forks",
        "--",
        "sh",
        "-c",
        "for i in $(seq 60); do sleep 2 & done; wait",
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("fork") || err.contains("Resource temporarily unavailable"),
        "the fork bomb was not stopped: {err}"
    );
    wait_for(10, "sandbox usable again", || {
        d.run(&["exec", "forks", "--", "true"]).status.success()
    });
}

#[test]
fn disk_limit_gives_enospc_and_breaks_nothing_else() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.ok(&[
        "create", "--name", "full", "--disk", "64M", "--memory", "256M",
    ]);
    let out = d.run(&[
        "exec",
        "full",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/root/big",
        "bs=1M",
        "count=100",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("No space left on device"),
        "{}",
        stderr(&out)
    );
    // Delete and write again: the sandbox recovers; the host never noticed.
    assert_eq!(
        d.sh(
            "full",
            "rm /root/big && echo ok > /root/small && cat /root/small"
        ),
        "ok\n"
    );
    let v = d.inspect("full");
    assert_eq!(v["volume"]["limit_enforced"], true);
    assert_eq!(v["volume"]["kind"], "loop");
}

#[test]
fn a_sandbox_cannot_see_host_processes_or_write_host_files() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("box", &[]);
    let procs = d.sh("box", "ls /proc | grep '^[0-9]' | wc -l");
    let n: u32 = procs.trim().parse().unwrap();
    assert!(n < 10, "the sandbox sees {n} processes");
    assert!(
        d.sh("box", "cat /proc/1/cmdline").contains("agent"),
        "PID 1 is not the agent"
    );
    let cmdlines = d.sh("box", "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '");
    assert!(
        !cmdlines.contains("dwell serve") && !cmdlines.contains("cargo"),
        "host processes visible: {cmdlines}"
    );
    // Writes to system dirs go to the sandbox's own layer.
    let marker = format!("dwell-escape-probe-{}", std::process::id());
    d.sh(
        "box",
        &format!("echo x > /usr/bin/{marker}; echo x > /etc/{marker}; echo x > /{marker}"),
    );
    for p in [
        format!("/usr/bin/{marker}"),
        format!("/etc/{marker}"),
        format!("/{marker}"),
    ] {
        assert!(
            !std::path::Path::new(&p).exists(),
            "{p} appeared on the host"
        );
    }
    // Host secrets are not in the image.
    let shadow = d.sh(
        "box",
        "cat /etc/shadow 2>/dev/null | cut -d: -f2 | sort -u | tr '\\n' ' '",
    );
    assert!(!shadow.contains('$'), "password hashes visible: {shadow}");
    // Host files outside the image are not visible at all.
    let probe = d.dir.path().join("host-only-file");
    std::fs::write(&probe, "HOST").unwrap();
    let out = d.run(&["exec", "box", "--", "cat", probe.to_str().unwrap()]);
    assert!(!out.status.success() && !stdout(&out).contains("HOST"));
}

#[test]
fn kernel_attack_surface_is_closed() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("k", &[]);
    // Syscalls the seccomp filter or dropped capabilities must refuse with EPERM:
    // init_module(175), finit_module(313), kexec_load(246), bpf(321),
    // perf_event_open(298), keyctl(250), userfaultfd(323), mount(165), unshare(272) of a user ns.
    let script = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def probe(name, nr, *args):
    r = libc.syscall(nr, *args)
    e = ctypes.get_errno()
    print(name, r, e)
probe("init_module", 175, 0, 0, 0)
probe("finit_module", 313, 0, 0, 0)
probe("kexec_load", 246, 0, 0, 0, 0)
probe("bpf", 321, 0, 0, 0)
probe("perf_event_open", 298, 0, 0, -1, -1, 0)
probe("keyctl", 250, 0, 0, 0, 0, 0)
probe("userfaultfd", 323, 0)
probe("mount", 165, b"tmpfs", b"/mnt", b"tmpfs", 0, 0)
probe("unshare_user", 272, 0x10000000)
"#;
    let out = d.ok(&["exec", "k", "--", "python3", "-c", script]);
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[1], "-1", "{} succeeded inside the sandbox", f[0]);
        assert!(
            f[2] == "1" || f[2] == "38",
            "{} failed with errno {} (want EPERM or ENOSYS)",
            f[0],
            f[2]
        );
    }
    // Dangerous capabilities are gone from the bounding set.
    let caps = d.sh("k", "grep CapBnd /proc/self/status | cut -f2");
    let bnd = u64::from_str_radix(caps.trim(), 16).unwrap();
    for (name, bit) in [
        ("SYS_ADMIN", 21),
        ("SYS_MODULE", 16),
        ("SYS_PTRACE", 19),
        ("NET_ADMIN", 12),
        ("SYS_RAWIO", 17),
        ("SYS_TIME", 25),
    ] {
        assert_eq!(bnd & (1 << bit), 0, "CAP_{name} is in the bounding set");
    }
    // In its user namespace a sandbox may run set-user-id binaries (sudo):
    // they give sandbox root, bounded by the bounding set checked above
    // (host_boundary's setuid tests try it).
    assert_eq!(
        d.sh("k", "grep NoNewPrivs /proc/self/status | cut -f2"),
        "0\n"
    );
    // Masked /proc paths read as empty; /proc/sys is read-only.
    // (Only paths this host's kernel has can be probed.)
    for p in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ] {
        if std::path::Path::new(p).exists() {
            let host_has_data = std::fs::read(p).map(|b| !b.is_empty()).unwrap_or(false);
            let inside = d.sh("k", &format!("cat {p} 2>/dev/null | wc -c"));
            assert_eq!(
                inside, "0\n",
                "{p} is readable inside (host has data: {host_has_data})"
            );
        }
    }
    let out = d.run(&[
        "exec",
        "k",
        "--",
        "sh",
        "-c",
        "echo 1 > /proc/sys/kernel/sysrq",
    ]);
    assert!(!out.status.success());
    let out = d.run(&[
        "exec",
        "k",
        "--",
        "sh",
        "-c",
        "echo 1 > /proc/sys/vm/drop_caches",
    ]);
    assert!(!out.status.success());
}

#[test]
fn sandboxes_cannot_reach_each_other_or_the_daemon() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("a", &[]);
    d.create("b", &[]);
    d.ok(&["exec", "-d", "a", "--", "python3", "-c", "import socket,time\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 18777)); s.listen(); time.sleep(60)"]);
    let probe = "import socket,sys\ntry:\n  socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1); print('open')\nexcept Exception as e: print('closed', e)";
    wait_for(10, "listener in a", || {
        d.run(&[
            "exec",
            "a",
            "--",
            "python3",
            "-c",
            probe,
            "127.0.0.1",
            "18777",
        ])
        .stdout
        .starts_with(b"open")
    });
    let from_b = d.ok(&[
        "exec",
        "b",
        "--",
        "python3",
        "-c",
        probe,
        "127.0.0.1",
        "18777",
    ]);
    assert!(
        from_b.starts_with("closed"),
        "b reached a's loopback service: {from_b}"
    );
    // Only loopback exists: no route anywhere.
    let ifaces = d.sh(
        "b",
        "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '",
    );
    assert_eq!(ifaces.trim(), "lo");
    // The daemon's socket is not in the sandbox's filesystem.
    let out = d.run(&["exec", "b", "--", "ls", d.socket.to_str().unwrap()]);
    assert!(!out.status.success());
}

#[test]
fn secret_env_reaches_processes_but_never_disk_inspect_or_logs() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let secret = format!("s3cr3t-{}-value", std::process::id());
    let out = d
        .cmd(&[
            "create",
            "--name",
            "sec",
            "--memory",
            "128M",
            "--disk",
            "256M",
            "--secret-env",
            "API_TOKEN",
            "--env",
            "PLAIN=1",
        ])
        .env("API_TOKEN", &secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        d.sh("sec", "echo $API_TOKEN $PLAIN"),
        format!("{secret} 1\n")
    );
    d.ok(&["stop", "sec"]);
    d.ok(&["start", "sec"]);
    assert_eq!(
        d.sh("sec", "echo $API_TOKEN"),
        format!("{secret}\n"),
        "secrets survive stop/start"
    );
    let inspect =
        d.ok(&["inspect", "sec", "--json"]) + &d.ok(&["inspect", "sec"]) + &d.ok(&["logs", "sec"]);
    assert!(!inspect.contains(&secret), "the secret is shown: {inspect}");
    assert!(inspect.contains("API_TOKEN"), "the name may be shown");
    assert!(
        !d.log().contains(&secret),
        "the secret is in the daemon log"
    );
    // Nothing under the data dir holds it in clear (database, WAL, configs),
    // except the sandbox's own volume where the process itself could write it.
    let hits = std::process::Command::new("grep")
        .args([
            "-rl",
            "--exclude-dir=volumes",
            &secret,
            d.data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        hits.stdout.is_empty(),
        "in clear on disk: {}",
        stdout(&hits)
    );
}
