//! Idle sandboxes cost no CPU, on every runtime: a namespace sandbox's
//! agent sleeps in the host kernel; a gVisor sandbox dozes (its cgroup is
//! frozen once only its agent runs and nobody has called it for
//! `--doze-after`), because runsc's sentry otherwise polls every 400 µs.
//! A dozing sandbox stays `running` and answers every kind of call (exec,
//! files, several at once, after a daemon `kill -9`), stops, pauses and
//! hibernates; a sandbox with a process of its own (a background job that
//! only sleeps between steps) is never frozen.

mod common;

use std::time::{Duration, Instant};

use common::counter::{counter, start_counter};
use common::*;

/// The CPU time sandbox `sb` has used, ns (its cgroup's, via `dwell stats`).
fn cpu_ns(d: &Daemon, sb: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["stats", sb, "--json"])).unwrap();
    v["cpu_usage_ns"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cpu_usage_ns in {v}"))
}

/// The freezer state of gVisor sandbox `id`'s cgroup ("" when not found).
fn freezer_state(id: &str) -> String {
    for root in ["/sys/fs/cgroup/freezer", "/sys/fs/cgroup"] {
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let dir = e.path().join(id);
            if let Ok(s) = std::fs::read_to_string(dir.join("freezer.state")) {
                return s.trim().to_string();
            }
            if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.events")) {
                let frozen = s.lines().any(|l| l == "frozen 1");
                return if frozen { "FROZEN" } else { "THAWED" }.to_string();
            }
        }
    }
    String::new()
}

fn wait_dozing(id: &str) {
    wait_for(15, "the idle gVisor sandbox to doze", || {
        freezer_state(id) == "FROZEN"
    });
}

/// Most CPU an idle sandbox may use over the 10 s window (the bar is
/// 2 ms; a few ms leave room for the stats call's own read).
const IDLE_CPU_BUDGET_NS: u64 = 5_000_000;

#[test]
fn an_idle_sandbox_uses_at_most_a_few_ms_of_cpu_over_10_s_on_every_runtime() {
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(&["--doze-after", "1s"]);
    let rts = runtimes();
    let mut sbs = Vec::new();
    for rt in &rts {
        let name = format!("idle-{rt}");
        let id = d.create(&name, &["--isolation", rt]);
        // Used once, as a client would, then left alone.
        assert_eq!(d.sh(&name, "echo ready").trim(), "ready");
        sbs.push((name, id, *rt));
    }
    for (_, id, rt) in &sbs {
        if *rt == "gvisor" {
            wait_dozing(id);
        }
    }
    // Settle, then measure every sandbox over the same 10 s.
    std::thread::sleep(Duration::from_secs(1));
    let before: Vec<u64> = sbs.iter().map(|(n, _, _)| cpu_ns(&d, n)).collect();
    std::thread::sleep(Duration::from_secs(10));
    for ((name, _, rt), b) in sbs.iter().zip(before) {
        let used = cpu_ns(&d, name) - b;
        assert!(
            used <= IDLE_CPU_BUDGET_NS,
            "the idle {rt} sandbox used {:.2} ms of CPU in 10 s (at most {} ms)",
            used as f64 / 1e6,
            IDLE_CPU_BUDGET_NS / 1_000_000
        );
        println!("idle {rt}: {:.3} ms CPU over 10 s", used as f64 / 1e6);
    }
    // Still running, and the next call answers at once.
    for (name, _, rt) in &sbs {
        assert_eq!(d.inspect(name)["state"], "running");
        let t0 = Instant::now();
        assert_eq!(d.sh(name, "echo awake").trim(), "awake");
        println!("first exec after idling on {rt}: {:?}", t0.elapsed());
    }
}

#[test]
fn a_dozing_gvisor_sandbox_answers_every_call_and_every_lifecycle_operation() {
    if !can_run_gvisor() {
        return;
    }
    let mut d = Daemon::start_with(&["--doze-after", "500ms"]);
    let id = d.create("dz", &["--isolation", "gvisor"]);
    d.ok(&["exec", "dz", "--", "sh", "-c", "echo kept > /root/f"]);
    // Several calls at once on a dozing sandbox, ten times over: every
    // one is answered (none reaches a frozen agent).
    for round in 0..10 {
        wait_dozing(&id);
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let cmd = d.cmd(&["exec", "dz", "--", "sh", "-c", &format!("echo {round}-{i}")]);
                std::thread::spawn(move || {
                    let mut cmd = cmd;
                    cmd.output().unwrap()
                })
            })
            .collect();
        for (i, h) in hs.into_iter().enumerate() {
            let out = h.join().unwrap();
            assert!(out.status.success(), "round {round}: {out:?}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                format!("{round}-{i}")
            );
        }
    }
    // Files through the agent.
    wait_dozing(&id);
    let local = d.dir.path().join("f");
    d.ok(&["cp", "dz:/root/f", local.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&local).unwrap().trim(), "kept");
    // Pause and resume, hibernate and resume, from a doze. Resumed and
    // left alone, it dozes again without a call.
    wait_dozing(&id);
    d.ok(&["pause", "dz"]);
    assert_eq!(
        freezer_state(&id),
        "FROZEN",
        "a paused gVisor sandbox is frozen too"
    );
    d.ok(&["resume", "dz"]);
    wait_dozing(&id);
    assert_eq!(d.sh("dz", "cat /root/f").trim(), "kept");
    wait_dozing(&id);
    d.ok(&["hibernate", "dz"]);
    d.ok(&["resume", "dz"]);
    assert_eq!(d.sh("dz", "cat /root/f").trim(), "kept");
    // The daemon dies while the sandbox dozes: the next daemon reaches it.
    wait_dozing(&id);
    d.kill9();
    d.restart();
    assert_eq!(d.sh("dz", "cat /root/f").trim(), "kept");
    // A new connection dozes it again; stop and rm work from a doze.
    wait_dozing(&id);
    d.ok(&["stop", "dz"]);
    assert_eq!(d.inspect("dz")["state"], "stopped");
    d.ok(&["start", "dz"]);
    wait_dozing(&id);
    d.ok(&["rm", "-f", "dz"]);
    assert!(
        host_processes_of(&id).is_empty(),
        "processes of the removed sandbox are left"
    );
}

#[test]
fn a_gvisor_sandbox_with_a_process_of_its_own_never_dozes() {
    if !can_run_gvisor() {
        return;
    }
    let d = Daemon::start_with(&["--doze-after", "500ms"]);
    let id = d.create("busy", &["--isolation", "gvisor"]);
    start_counter(&d, "busy");
    let v0 = counter(&d, "busy");
    // No call for 4 s: the counter (asleep between its steps most of the
    // time) must keep counting, every 50 ms.
    std::thread::sleep(Duration::from_secs(4));
    assert_ne!(freezer_state(&id), "FROZEN");
    let v1 = counter(&d, "busy");
    assert!(
        v1 >= v0 + 20,
        "the background counter went from {v0} to {v1} in 4 s: it was held up"
    );
    // Once it ends, the sandbox dozes.
    d.ok(&["exec", "busy", "--", "pkill", "-f", "while true"]);
    wait_dozing(&id);
}

#[test]
fn on_ptrace_a_gvisor_sandbox_with_a_sleeping_process_costs_nothing_while_idle() {
    if !can_run_gvisor() {
        return;
    }
    let d = Daemon::start_with(&["--gvisor-platform", "ptrace"]);
    let id = d.create("pt", &["--isolation", "gvisor"]);
    // A process of its own: the sandbox never dozes.
    d.ok(&["exec", "-d", "pt", "--", "sleep", "1000"]);
    let sentry = host_processes_of(&id).into_iter().any(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--platform=ptrace"))
    });
    assert!(sentry, "no process of {id} runs with --platform=ptrace");
    std::thread::sleep(Duration::from_secs(3));
    assert_ne!(freezer_state(&id), "FROZEN");
    let before = cpu_ns(&d, "pt");
    std::thread::sleep(Duration::from_secs(10));
    let used = cpu_ns(&d, "pt") - before;
    assert!(
        used <= IDLE_CPU_BUDGET_NS,
        "an idle ptrace sandbox with a sleeping process used {:.2} ms of CPU in 10 s",
        used as f64 / 1e6
    );
    assert_eq!(d.sh("pt", "echo still").trim(), "still");
}
