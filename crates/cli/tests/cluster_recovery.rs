//! Losing a node of a cluster (three daemons on one PostgreSQL and one
//! moto bucket): a sandbox with a backup runs again on another node from
//! it, its reason saying what was lost; one without answers 503 naming its
//! node until that node comes back; the node that comes back stops its
//! stale copy of the recovered sandbox and keeps that copy's volume aside,
//! and runs the other one again. With `--on-node-loss keep`, even a
//! backed-up sandbox waits for its node.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::*;
use dwell_testkit::cluster::Cluster;

/// Polls `f` every 250 ms until it gives a value, for at most `within`.
fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The processes left in sandbox `id`'s cgroup (in any hierarchy, v1 or
/// v2) under the cgroup parent of the daemon whose log is `log`.
fn processes_left(log: &str, id: &str) -> Vec<String> {
    let parent = log
        .split("cgroup parent ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("the daemon logs its cgroup parent");
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(parent).join(id)];
    if let Ok(rd) = std::fs::read_dir(root) {
        dirs.extend(rd.flatten().map(|e| e.path().join(parent).join(id)));
    }
    let mut pids: Vec<String> = dirs
        .iter()
        .flat_map(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    pids.sort();
    pids.dedup();
    pids
}

#[test]
fn a_lost_nodes_backed_up_sandbox_runs_elsewhere_and_the_node_fences_its_copy() {
    if !can_run() {
        return;
    }
    // n3 is the big node: new sandboxes go there. Backups may be taken
    // every 2 s on these nodes.
    let Some(mut c) = Cluster::start(3, |i| {
        let mem = ["2G", "2G", "8G"][i];
        vec![
            "--node-capacity".into(),
            format!("vcpus=8,memory={mem},disk=50G"),
            "--min-backup-every".into(),
            "2s".into(),
        ]
    }) else {
        return;
    };
    let n1 = c.node(0);
    // Too often for the daemon's minimum: refused, saying so.
    let out = n1.run(&[
        "create",
        "--name",
        "often",
        "--backup-every",
        "1s",
        "--memory",
        "256M",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--min-backup-every"),
        "{}",
        stderr(&out)
    );
    // One backed up (its first backup within a tick of its start, the
    // next in an hour), one not. The backed-up one starts with /root/a
    // (from a snapshot): its first backup holds it, however soon it comes.
    let seed = n1.create("seed", &[]);
    n1.sh(&seed, "echo before > /root/a");
    n1.ok(&["snapshot", "create", &seed, "--name", "seeded"]);
    n1.ok(&["rm", "-f", &seed]);
    let backed = n1.create("backed", &["--backup-every", "1h", "--from", "seeded"]);
    let bare = n1.create("bare", &[]);
    assert_eq!(c.owner(0, "backed"), "n3");
    assert_eq!(c.owner(0, "bare"), "n3");
    n1.sh("bare", "echo mine > /root/u");
    let backup_at = wait_for(Duration::from_secs(30), "a first backup", || {
        n1.inspect("backed")["last_backup_at"].as_i64()
    });
    // Backups are the sandbox's, not in the tenant's snapshot list.
    assert!(
        !n1.ok(&["snapshot", "ls"]).contains(&backed),
        "a backup is listed as a snapshot"
    );
    assert!(
        !processes_left(&c.node(2).log(), &backed).is_empty(),
        "the check of processes finds those of a running sandbox"
    );
    // Written after the backup: lost with n3.
    n1.sh("backed", "echo after > /root/b");

    c.nodes[2].kill9();
    let killed = Instant::now();
    let n1 = c.node(0);
    // Declared lost once its 3 s lease ends; within 30 s of that the
    // backed-up sandbox runs on n1 or n2 from its backup.
    // (Until then, requests for it fail: n3 is unreachable, then lost.)
    let sb = wait_for(Duration::from_secs(40), "the recovered sandbox", || {
        let out = n1.run(&["inspect", "backed", "--json"]);
        let sb: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (sb["state"] == "running" && sb["node"] != "n3").then_some(sb)
    });
    assert!(killed.elapsed() < Duration::from_secs(33), "{sb}");
    assert_eq!(n1.sh("backed", "cat /root/a"), "before\n");
    assert_eq!(n1.sh("backed", "test -e /root/b || echo gone"), "gone\n");
    // Its reason names the lost node and the time of the backup.
    let reason = sb["reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("node n3 lost at "), "{reason}");
    let taken = reason
        .split("restored from the backup of ")
        .nth(1)
        .and_then(|s| s.split(": changes after it are lost").next())
        .unwrap_or_else(|| panic!("no backup time in {reason:?}"));
    let taken_ms = humantime::parse_rfc3339_weak(taken)
        .unwrap_or_else(|e| panic!("{taken:?}: {e}"))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        taken_ms <= backup_at && backup_at - taken_ms < 10_000,
        "backup of {taken} vs last_backup_at {backup_at}"
    );
    let events = n1.ok(&["logs", "backed", "--events"]);
    assert!(events.contains("taken over by node"), "{events}");
    // The one without a backup waits for n3: 503 naming it.
    let out = n1.run(&["exec", "bare", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("n3") && stderr(&out).contains("lost"),
        "{}",
        stderr(&out)
    );
    // Its record says why it waits (lists are served by any node).
    let all: serde_json::Value = serde_json::from_str(&n1.ok(&["ls", "--json"])).unwrap();
    let waits = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "bare")
        .unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        waits.starts_with("node n3 lost at ") && waits.contains("no backup"),
        "{waits}"
    );

    // n3 comes back: its stale copy of `backed` stops before it serves,
    // its volume kept aside; `bare` runs there again.
    c.nodes[2].restart();
    let (n1, n3) = (c.node(0), c.node(2));
    assert_eq!(n3.inspect("backed")["node"], sb["node"]);
    let left = processes_left(&n3.log(), &backed);
    assert!(left.is_empty(), "n3 still runs {backed}: {left:?}");
    let aside: Vec<String> = std::fs::read_dir(n3.data.join("fenced"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        aside.iter().any(|n| n.starts_with(&format!("{backed}-"))),
        "{aside:?}"
    );
    assert!(
        n1.ok(&["logs", "backed", "--events"])
            .contains("stopped its stale copy"),
        "the fencing is an event"
    );
    wait_for(Duration::from_secs(30), "bare running on n3 again", || {
        (n1.run(&["exec", "bare", "--", "true"]).status.success()).then_some(())
    });
    assert_eq!(c.owner(0, "bare"), "n3");
    assert_eq!(n1.sh("bare", "cat /root/u"), "mine\n");
    assert!(!processes_left(&n3.log(), &bare).is_empty());
    assert!(
        n1.inspect("bare")["reason"]
            .as_str()
            .unwrap()
            .starts_with("node n3 came back at "),
        "{}",
        n1.inspect("bare")
    );
    // The recovered one still runs where it went, from the same files.
    assert_eq!(n1.sh("backed", "cat /root/a"), "before\n");
}

#[test]
fn with_on_node_loss_keep_a_backed_up_sandbox_waits_for_its_node() {
    if !can_run() {
        return;
    }
    // n2 is the big node: the sandbox goes there.
    let Some(mut c) = Cluster::start(2, |i| {
        let mem = ["2G", "8G"][i];
        vec![
            "--node-capacity".into(),
            format!("vcpus=8,memory={mem},disk=50G"),
            "--min-backup-every".into(),
            "2s".into(),
            "--on-node-loss".into(),
            "keep".into(),
        ]
    }) else {
        return;
    };
    let n1 = c.node(0);
    n1.create("kept", &["--backup-every", "1h"]);
    assert_eq!(c.owner(0, "kept"), "n2");
    n1.sh("kept", "echo later > /root/k");
    wait_for(Duration::from_secs(30), "a first backup", || {
        n1.inspect("kept")["last_backup_at"].as_i64()
    });
    c.nodes[1].kill9();
    let n1 = c.node(0);
    // Declared lost, and kept with n2 although it has a backup.
    let reason = wait_for(Duration::from_secs(30), "n2 declared lost", || {
        let all: serde_json::Value = serde_json::from_str(&n1.ok(&["ls", "--json"])).ok()?;
        let sb = all
            .as_array()?
            .iter()
            .find(|s| s["name"] == "kept")?
            .clone();
        let r = sb["reason"].as_str()?.to_string();
        r.starts_with("node n2 lost").then_some((r, sb))
    });
    assert!(reason.0.contains("--on-node-loss keep"), "{}", reason.0);
    assert_eq!(reason.1["node"], "n2");
    // Still there a few heartbeats later.
    std::thread::sleep(Duration::from_secs(3));
    let out = n1.run(&["exec", "kept", "--", "true"]);
    assert!(
        stderr(&out).contains("n2") && stderr(&out).contains("lost"),
        "{}",
        stderr(&out)
    );
    // n2 comes back with it, files and all.
    c.nodes[1].restart();
    let n1 = c.node(0);
    wait_for(Duration::from_secs(30), "kept running on n2 again", || {
        n1.run(&["exec", "kept", "--", "true"])
            .status
            .success()
            .then_some(())
    });
    assert_eq!(n1.sh("kept", "cat /root/k"), "later\n");
    assert_eq!(c.owner(0, "kept"), "n2");
}
