//! End to end with the gVisor warm pool (`dwell serve --gvisor-pool N`):
//! creates start warm (the pool's claim counter goes up), two pooled
//! sandboxes of different tenants see nothing of each other, a pooled
//! sandbox goes through exec, pause/resume, stop/start and
//! hibernate/resume, and after a daemon `kill -9` the next daemon adopts
//! the claimed sandboxes and removes the unclaimed pool sandboxes, leaving
//! nothing behind (runsc records, cgroups, mounts, directories). Skips with
//! a printed reason when runsc is missing.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::counter::{counter, start_counter};
use common::*;

/// The pool's status file (see dwell_runtime::gvisor::pool).
fn pool_status(d: &Daemon) -> serde_json::Value {
    std::fs::read(d.data.join("runsc-pool/status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Wait until the pool holds `n` ready sandboxes.
fn wait_ready(d: &Daemon, n: u64) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(120) {
        if pool_status(d)["ready"].as_u64() == Some(n) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the pool did not get {n} ready sandboxes: {}; log:\n{}",
        pool_status(d),
        tail(&d.log(), 30)
    );
}

fn claims(d: &Daemon) -> u64 {
    pool_status(d)["claimed_total"].as_u64().unwrap_or(0)
}

/// runsc container records in the daemon's runsc root.
fn runsc_records(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d.data.join("runsc"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".state"))
        .collect();
    v.sort();
    v
}

/// Cgroup directories named `gvpool.*` (for "gvpool.") or exactly one of
/// `names` under this daemon's gVisor cgroup parent, in any hierarchy.
fn gvisor_cgroups(d: &Daemon, names: &[&str]) -> Vec<String> {
    let log = d.log();
    let parent = log
        .split("cgroup parent ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("the daemon logs its cgroup parent")
        .to_string()
        + "-gvisor";
    let mut found = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for c in std::fs::read_dir(h.path().join(&parent))
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = c.file_name().to_string_lossy().into_owned();
            let hit = names
                .iter()
                .any(|w| n == *w || (*w == "gvpool." && n.starts_with(w)));
            if hit && c.path().is_dir() {
                found.push(c.path().display().to_string());
            }
        }
    }
    found
}

fn pooled_daemon(extra: &[&str]) -> Daemon {
    let mut args = vec!["--gvisor-pool", "2", "--gvisor-pool-memory", "256M"];
    args.extend_from_slice(extra);
    Daemon::start_with(&args)
}

#[test]
fn pooled_sandboxes_start_warm_are_isolated_and_go_through_the_lifecycle() {
    if !can_run_gvisor() {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let d = pooled_daemon(&["--listen", &addr]);
    wait_listening(&addr, 20);
    wait_ready(&d, 2);
    d.tenant_key("pa");
    d.tenant_key("pb");
    let as_tenant = |t: &str, args: &[&str]| {
        let mut c = d.cmd(args);
        c.env("DWELL_AS_TENANT", t);
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "dwell {args:?} as {t}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let create = |t: &str, name: &str| {
        as_tenant(
            t,
            &[
                "create",
                "--name",
                name,
                "--isolation",
                "gvisor",
                "--memory",
                "256M",
                "--disk",
                "512M",
            ],
        );
    };
    let before = claims(&d);
    create("pa", "wa");
    create("pb", "wb");
    assert_eq!(
        claims(&d) - before,
        2,
        "both creates came from the pool; log:\n{}",
        tail(&d.log(), 40)
    );
    // Each has its own hostname although the pool booted them alike.
    assert_eq!(
        as_tenant("pa", &["exec", "wa", "--", "hostname"]).trim(),
        "wa"
    );
    assert_eq!(
        as_tenant("pb", &["exec", "wb", "--", "hostname"]).trim(),
        "wb"
    );
    // What one tenant leaves in its sandbox the other cannot see: files,
    // processes, the pool's placeholder.
    as_tenant(
        "pa",
        &[
            "exec",
            "wa",
            "--",
            "sh",
            "-c",
            "echo secret-a > /root/secret; sleep 4242.5 >/dev/null 2>&1 &",
        ],
    );
    // The probe names neither (its own command line is among those read).
    let probe = as_tenant(
        "pb",
        &[
            "exec",
            "wb",
            "--",
            "sh",
            "-c",
            "T=secr; ls /root; cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '; echo; \
             grep -rl \"${T}et-a\" /root /tmp /var/tmp /run 2>/dev/null | head -3; ls -a /.dwell",
        ],
    );
    assert!(!probe.contains("secret"), "{probe}");
    assert!(!probe.contains("4242.5"), "{probe}");
    assert!(
        !probe.contains("--idle"),
        "the placeholder is visible: {probe}"
    );
    assert!(
        !probe.contains("ctl"),
        "the placeholder's socket dir is visible: {probe}"
    );
    // The sandbox's processes are in its own cgroup (stats, limits).
    let ids: Vec<String> = ["wa", "wb"]
        .iter()
        .map(|n| {
            let mut c = d.cmd(&["inspect", n, "--json"]);
            c.env("DWELL_AS_TENANT", if *n == "wa" { "pa" } else { "pb" });
            let v: serde_json::Value = serde_json::from_slice(&c.output().unwrap().stdout).unwrap();
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    for id in &ids {
        let procs = Path::new("/sys/fs/cgroup/memory")
            .read_dir()
            .into_iter()
            .flatten()
            .flatten()
            .filter(|p| p.file_name().to_string_lossy().ends_with("-gvisor"))
            .map(|p| p.path().join(id).join("cgroup.procs"))
            .find(|p| p.exists())
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default();
        assert!(!procs.trim().is_empty(), "no process in the cgroup of {id}");
    }
    // The lifecycle of a pooled sandbox.
    as_tenant("pa", &["pause", "wa"]);
    as_tenant("pa", &["resume", "wa"]);
    assert_eq!(
        as_tenant("pa", &["exec", "wa", "--", "cat", "/root/secret"]).trim(),
        "secret-a"
    );
    as_tenant("pa", &["stop", "wa"]);
    as_tenant("pa", &["start", "wa"]);
    assert_eq!(
        as_tenant("pa", &["exec", "wa", "--", "cat", "/root/secret"]).trim(),
        "secret-a"
    );
    assert_eq!(
        as_tenant("pa", &["exec", "wa", "--", "hostname"]).trim(),
        "wa"
    );
    // Hibernation of a pooled sandbox keeps its memory and processes (the
    // counter helpers act as the default tenant).
    let before = claims(&d);
    wait_ready(&d, 2);
    d.create("wc", &["--isolation", "gvisor"]);
    assert_eq!(claims(&d), before + 1);
    start_counter(&d, "wc");
    let n = counter(&d, "wc");
    d.ok(&["hibernate", "wc"]);
    d.ok(&["resume", "wc"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        counter(&d, "wc") > n,
        "the counter does not go on after resume"
    );
    assert_eq!(d.sh("wc", "hostname").trim(), "wc");
    // The pool's counters are in the metrics (wa's start after its stop
    // came from the pool too).
    assert!(claims(&d) >= 3);
    let bearer = format!("Bearer {}", d.admin_key());
    let metrics =
        http::request(&addr, "GET", "/metrics", &[("Authorization", &bearer)], b"").text();
    assert!(
        metrics.contains(&format!(
            "dwell_gvisor_pool_claims_total{{runtime=\"gvisor\"}} {}",
            claims(&d)
        )),
        "{metrics}"
    );
    assert!(metrics.contains("dwell_gvisor_pool_size{runtime=\"gvisor\"} 2"));
    assert!(metrics.contains("dwell_gvisor_pool_ready{runtime=\"gvisor\"}"));
    for (t, n) in [("pa", "wa"), ("pb", "wb")] {
        as_tenant(t, &["rm", "-f", n]);
    }
    d.ok(&["rm", "-f", "wc"]);
    for id in &ids {
        assert!(
            gvisor_cgroups(&d, &[id]).is_empty(),
            "{:?}",
            gvisor_cgroups(&d, &[id])
        );
    }
    // Only the two waiting pool sandboxes are left in runsc's root.
    let left = runsc_records(&d);
    assert!(
        left.iter().all(|r| r.starts_with("gvpool.")),
        "records of removed sandboxes left: {left:?}"
    );
}

#[test]
fn after_a_daemon_kill9_claimed_sandboxes_are_adopted_and_unclaimed_ones_removed() {
    if !can_run_gvisor() {
        return;
    }
    let mut d = pooled_daemon(&[]);
    wait_ready(&d, 2);
    let id = d.create("k", &["--isolation", "gvisor"]);
    assert_eq!(claims(&d), 1);
    d.sh("k", "echo kept > /root/f");
    wait_ready(&d, 2);
    d.kill9();
    // Two unclaimed pool sandboxes, one claimed (two records) are left.
    let records = runsc_records(&d);
    assert_eq!(records.len(), 4, "{records:?}");
    // The next daemon has no pool: every pool sandbox it finds unclaimed goes.
    d.set_args(&["--gvisor-pool", "0"]);
    d.restart();
    assert_eq!(d.sh("k", "cat /root/f").trim(), "kept");
    assert_eq!(d.sh("k", "hostname").trim(), "k");
    let t0 = Instant::now();
    loop {
        let records = runsc_records(&d);
        if records.len() == 2 && records.iter().any(|r| r.starts_with(&format!("{id}_"))) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "unclaimed pool sandboxes were not removed: {records:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    d.ok(&["stop", "k"]);
    assert!(runsc_records(&d).is_empty(), "{:?}", runsc_records(&d));
    assert!(
        gvisor_cgroups(&d, &[&id, "gvpool."]).is_empty(),
        "{:?}",
        gvisor_cgroups(&d, &[&id, "gvpool."])
    );
    d.ok(&["start", "k"]);
    assert_eq!(d.sh("k", "cat /root/f").trim(), "kept");
    d.ok(&["rm", "-f", "k"]);
    let pool_dirs: Vec<_> = std::fs::read_dir(d.data.join("runsc-pool"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("gvpool."))
        .map(|e| e.path())
        .collect();
    assert!(pool_dirs.is_empty(), "{pool_dirs:?}");
    assert!(leftovers(&d.data).is_empty(), "{:?}", leftovers(&d.data));
}

/// Whether gVisor sandbox `id`'s v1 freezer cgroup is frozen.
fn frozen(id: &str) -> bool {
    std::fs::read_dir("/sys/fs/cgroup/freezer")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path().join(id).join("freezer.state"))
                .is_ok_and(|s| s.trim() == "FROZEN")
        })
}

#[test]
fn a_pooled_sandbox_dozes_and_is_observed_paused_stopped_and_removed_without_asking_runsc() {
    if !can_run_gvisor() {
        return;
    }
    // `runsc state` of a frozen pooled sandbox hangs: the daemon must tell
    // its state from runsc's record, and thaw before every runsc call.
    let d = pooled_daemon(&["--doze-after", "500ms", "--resync-secs", "1"]);
    wait_ready(&d, 2);
    let id = d.create("pd", &["--isolation", "gvisor"]);
    assert_eq!(claims(&d), 1, "not served from the pool");
    wait_for(15, "the pooled sandbox to doze", || frozen(&id));
    // Several reconcile passes observe it while it dozes.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(d.inspect("pd")["state"], "running");
    assert_eq!(d.sh("pd", "echo awake").trim(), "awake");
    wait_for(15, "the pooled sandbox to doze again", || frozen(&id));
    let t0 = Instant::now();
    d.ok(&["pause", "pd"]);
    d.ok(&["resume", "pd"]);
    wait_for(15, "the pooled sandbox to doze after a resume", || {
        frozen(&id)
    });
    d.ok(&["stop", "pd"]);
    d.ok(&["rm", "-f", "pd"]);
    assert!(
        t0.elapsed() < Duration::from_secs(25),
        "pause, resume, stop and rm of a dozing pooled sandbox took {:?}",
        t0.elapsed()
    );
    assert!(host_processes_of(&id).is_empty());
    assert!(
        !d.log().contains("timed out"),
        "a runsc call timed out: {}",
        tail(&d.log(), 30)
    );
}
