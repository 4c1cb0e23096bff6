//! Moving sandboxes between the nodes of a cluster (three daemons on one
//! PostgreSQL and one moto bucket): a running sandbox moves with its files
//! and runs on its new node, a stopped one stays stopped, a warm move of a
//! gVisor sandbox keeps its processes counting, a drain moves every
//! sandbox off a node (and says what could not move), and the refusals
//! change nothing. Also the `#[ignore]`d measure of a cold move of 1 GiB
//! against a raw upload of the same bytes to the same endpoint.

mod common;

use std::time::{Duration, Instant};

use common::counter::{counter, start_counter};
use common::*;
use dwell_testkit::cluster::Cluster;

/// n1 and n3 of 4 GiB (zone a), n2 of 8 GiB (zone b): placement puts new
/// sandboxes on n2 first.
fn three() -> Option<Cluster> {
    Cluster::start(3, |i| {
        let (mem, zone) = [("4G", "a"), ("8G", "b"), ("4G", "a")][i];
        vec![
            "--node-capacity".into(),
            format!("vcpus=8,memory={mem},disk=50G"),
            "--node-label".into(),
            format!("zone={zone}"),
        ]
    })
}

/// `dwell move ARGS --json` through `d`: the sandbox as its new owner has
/// it.
fn moved(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["move"];
    a.extend_from_slice(args);
    a.push("--json");
    serde_json::from_str(&d.ok(&a)).unwrap()
}

/// Makes sure sandbox `sb` is on node `node` (placement puts it on n2
/// when every lease is fresh; a node slow to renew its lease on a busy
/// machine is passed over, and then the sandbox is moved there).
fn put_on(c: &Cluster, sb: &str, node: &str) {
    if c.owner(0, sb) != node {
        let v = moved(c.node(0), &[sb, "--to", node]);
        assert_eq!(v["node"], node, "{v}");
    }
}

/// A refused `dwell move ARGS` through `d`: its message.
fn refused(d: &Daemon, args: &[&str]) -> String {
    let mut a = vec!["move"];
    a.extend_from_slice(args);
    let out = d.run(&a);
    assert!(!out.status.success(), "move {args:?} was not refused");
    stderr(&out)
}

fn events(d: &Daemon, sb: &str) -> String {
    d.ok(&["logs", sb, "--events"])
}

/// What node `d` keeps locally of sandbox `id`: its archive pointer and
/// state dir.
fn local_leftovers(d: &Daemon, id: &str) -> Vec<String> {
    [
        d.data.join("archives").join(format!("{id}.json")),
        d.data.join("sandboxes").join(id),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .map(|p| p.display().to_string())
    .collect()
}

#[test]
fn moves_cold_and_stopped_and_refusals() {
    if !can_run() {
        return;
    }
    let Some(mut c) = three() else { return };
    let (n1, n2, n3) = (c.node(0), c.node(1), c.node(2));

    // A running sandbox on n2 moves to n1, asked through n3.
    let id = n1.create("w", &[]);
    put_on(&c, "w", "n2");
    n1.sh(
        "w",
        "echo kept > /root/f; mkdir -p /root/d; echo deep > /root/d/g",
    );
    let v = moved(n3, &["w", "--to", "n1"]);
    assert_eq!(v["node"], "n1", "{v}");
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["name"], "w");
    assert_eq!(c.owner(2, "w"), "n1");
    // It runs there with its files, served through any node.
    assert_eq!(n2.sh("w", "cat /root/f /root/d/g"), "kept\ndeep\n");
    assert_eq!(n1.sh("w", "echo hi from $(hostname)"), "hi from w\n");
    let ev = events(n2, "w");
    assert!(ev.contains("moved to node n1 by"), "{ev}");
    assert!(ev.contains("taken over by node n1 from node n2"), "{ev}");
    // Nothing of it is left on n2.
    assert!(
        local_leftovers(n2, &id).is_empty(),
        "{:?}",
        local_leftovers(n2, &id)
    );

    // A stopped one stays stopped; placement picks the target (not n2).
    let sid = n1.create("s", &[]);
    put_on(&c, "s", "n2");
    n1.sh("s", "echo stopped-data > /root/s");
    n1.ok(&["stop", "s"]);
    let v = moved(n1, &["s"]);
    assert_eq!(v["state"], "stopped", "{v}");
    let to = v["node"].as_str().unwrap().to_string();
    assert!(to == "n1" || to == "n3", "{v}");
    assert!(local_leftovers(n2, &sid).is_empty());
    n2.ok(&["start", "s"]);
    assert_eq!(n3.sh("s", "cat /root/s"), "stopped-data\n");
    assert_eq!(c.owner(1, "s"), to);

    // Refusals, each with nothing changed.
    let unchanged = |sb: &str, node: &str, state: &str| {
        let v = c.node(2).inspect(sb);
        assert_eq!(v["node"], node, "{v}");
        assert_eq!(v["state"], state, "{v}");
    };
    n1.create("e", &["--ephemeral"]);
    let e_owner = c.owner(0, "e");
    let m = refused(
        n1,
        &["e", "--to", if e_owner == "n1" { "n3" } else { "n1" }],
    );
    assert!(m.contains("ephemeral"), "{m}");
    unchanged("e", &e_owner, "running");
    let m = refused(n2, &["w", "--to", "n1"]);
    assert!(m.contains("on node n1 already"), "{m}");
    let m = refused(n2, &["w", "--to", "n9"]);
    assert!(m.contains("no node is named \"n9\""), "{m}");
    unchanged("w", "n1", "running");
    // Labels: a sandbox that asks for zone b goes nowhere else.
    n1.create("z", &["--node-selector", "zone=b"]);
    put_on(&c, "z", "n2");
    let m = refused(n3, &["z", "--to", "n1"]);
    assert!(m.contains("no label zone=b"), "{m}");
    unchanged("z", "n2", "running");
    // Warm needs a runtime that saves memory.
    n1.create("ns", &["--isolation", "namespace"]);
    let ns_owner = c.owner(0, "ns");
    let other = if ns_owner == "n1" { "n3" } else { "n1" };
    let m = refused(n3, &["ns", "--to", other, "--warm"]);
    assert!(m.contains("cannot save") && m.contains("gVisor"), "{m}");
    unchanged("ns", &ns_owner, "running");
    // An admin's only: a tenant's own sandbox, asked as the tenant.
    n1.ok(&["tenant", "create", "acme"]);
    let as_acme = |d: &Daemon, args: &[&str]| {
        let mut cmd = d.cmd(args);
        cmd.env("DWELL_AS_TENANT", "acme");
        cmd.output().unwrap()
    };
    let out = as_acme(
        n1,
        &[
            "create", "--name", "t", "--memory", "256M", "--disk", "512M",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = as_acme(n3, &["move", "t", "--to", "n1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("for admins"), "{}", stderr(&out));
    let out = as_acme(n3, &["inspect", "t", "--json"]);
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["state"], "running", "{t}");
    let out = as_acme(n1, &["rm", "-f", "t"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // To a draining node (n3 owns nothing, so its drain moves nothing).
    for sb in ["e", "ns"] {
        if c.owner(0, sb) == "n3" {
            n1.ok(&["rm", "-f", sb]);
        }
    }
    if c.owner(0, "s") == "n3" {
        moved(n1, &["s", "--to", "n1"]);
    }
    n1.ok(&["node", "drain", "n3"]);
    let m = refused(n1, &["w", "--to", "n3"]);
    assert!(m.contains("node n3 is draining"), "{m}");
    unchanged("w", "n1", "running");
    n1.ok(&["node", "undrain", "n3"]);
    // To a lost node: a fourth one, killed, whose lease ends.
    c.add(Vec::new());
    c.nodes[3].kill9();
    wait_for(30, "n4 to be declared lost", || {
        c.node_list(0)
            .iter()
            .any(|n| n["name"] == "n4" && n["state"] == "lost")
    });
    let m = refused(c.node(0), &["w", "--to", "n4"]);
    assert!(m.contains("node n4 is lost"), "{m}");
    let v = c.node(2).inspect("w");
    assert_eq!(v["node"], "n1", "{v}");
    assert_eq!(v["state"], "running", "{v}");
    let n1 = c.node(0);
    for sb in ["w", "s", "e", "z", "ns"] {
        let _ = n1.run(&["rm", "-f", sb]);
    }
}

#[test]
fn a_warm_move_keeps_processes_counting() {
    if !can_run_gvisor() {
        eprintln!("skipped: a warm move needs gVisor (root and runsc)");
        return;
    }
    let Some(c) = three() else { return };
    let (n1, n2, n3) = (c.node(0), c.node(1), c.node(2));
    n1.create("g", &["--isolation", "gvisor"]);
    put_on(&c, "g", "n2");
    n2.sh("g", "echo warm-file > /root/w");
    start_counter(n1, "g");
    let pid_of = |ps: &str| {
        ps.lines()
            .find(|l| l.contains("counter"))
            .and_then(|l| l.split_whitespace().next())
            .map(String::from)
    };
    let ps_before = n1.ok(&["ps", "g"]);
    let before = counter(n1, "g");
    let v = moved(n3, &["g", "--to", "n1", "--warm"]);
    assert_eq!(v["node"], "n1", "{v}");
    assert_eq!(v["state"], "running", "{v}");
    let after = counter(n3, "g");
    assert!(
        after >= before && after < before + 100,
        "the counter restarted or jumped ({before} -> {after})"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(counter(n2, "g") > after, "the counter stopped");
    assert_eq!(pid_of(&n1.ok(&["ps", "g"])), pid_of(&ps_before));
    assert_eq!(n2.sh("g", "cat /root/w"), "warm-file\n");
    let ev = events(n1, "g");
    assert!(ev.contains("(warm;"), "{ev}");
    // A hibernated one stays hibernated, and resumes where it was.
    let before = counter(n1, "g");
    n1.ok(&["hibernate", "g"]);
    let v = moved(n2, &["g", "--to", "n3"]);
    assert_eq!(v["state"], "hibernated", "{v}");
    assert_eq!(v["node"], "n3", "{v}");
    n1.ok(&["resume", "g"]);
    let after = counter(n1, "g");
    assert!(
        after >= before && after < before + 100,
        "the counter restarted or jumped ({before} -> {after})"
    );
    n1.ok(&["rm", "-f", "g"]);
}

#[test]
fn a_drain_moves_every_sandbox_off_and_says_what_stays() {
    if !can_run() {
        return;
    }
    let Some(c) = three() else { return };
    let (n1, n2, n3) = (c.node(0), c.node(1), c.node(2));
    for sb in ["a", "b"] {
        n1.create(sb, &[]);
        put_on(&c, sb, "n2");
        n1.sh(sb, &format!("echo {sb}-data > /root/x"));
    }
    n1.ok(&["stop", "b"]);
    // (Zone b: only n2 has it.)
    n1.create("e", &["--ephemeral", "--node-selector", "zone=b"]);
    assert_eq!(c.owner(0, "e"), "n2");
    let t0 = Instant::now();
    let out = n3.run(&["node", "drain", "n2", "--wait", "--timeout", "40s"]);
    assert!(!out.status.success(), "the ephemeral one cannot move");
    let err = stderr(&out);
    assert!(err.contains("still owns 1 sandbox"), "{err}");
    assert!(
        err.contains("e (running)") && err.contains("ephemeral"),
        "{err}"
    );
    eprintln!("drain of two sandboxes: {:.1}s", t0.elapsed().as_secs_f64());
    for (sb, state) in [("a", "running"), ("b", "stopped")] {
        let v = n1.inspect(sb);
        assert_ne!(v["node"], "n2", "{v}");
        assert_eq!(v["state"], state, "{v}");
    }
    assert_eq!(n2.sh("a", "cat /root/x"), "a-data\n");
    // New sandboxes avoid it.
    n2.create("c", &[]);
    assert_ne!(c.owner(0, "c"), "n2");
    // Once what stayed is gone, the drain is done.
    n1.ok(&["rm", "-f", "e"]);
    n1.ok(&["node", "drain", "n2", "--wait", "--timeout", "20s"]);
    let n2_view = c
        .node_list(0)
        .into_iter()
        .find(|n| n["name"] == "n2")
        .unwrap();
    assert_eq!(n2_view["owned"], 0, "{n2_view}");
    assert_eq!(n2_view["state"], "draining", "{n2_view}");
    n1.ok(&["start", "b"]);
    assert_eq!(n3.sh("b", "cat /root/x"), "b-data\n");
    n1.ok(&["node", "undrain", "n2"]);
    for sb in ["a", "b", "c"] {
        n1.ok(&["rm", "-f", sb]);
    }
}

/// Node `i` killed at crash point `at` by the next move: restarted with
/// it set, and again without it once it died.
fn crash_during_move(c: &mut Cluster, i: usize, at: &str, via: usize, args: &[&str]) {
    c.nodes[i].env = vec![("DWELL_CRASH_AT".into(), at.into())];
    c.nodes[i].restart();
    let mut a = vec!["move"];
    a.extend_from_slice(args);
    let out = c.node(via).run(&a);
    assert!(!out.status.success(), "the crash point {at} did not fire");
    c.nodes[i].wait_exit();
    c.nodes[i].env.clear();
    c.nodes[i].restart();
}

#[test]
fn a_move_cut_short_by_a_crash_leaves_the_sandbox_with_one_node() {
    if !can_run() {
        return;
    }
    let Some(mut c) = three() else { return };
    let id = c.node(0).create("w", &[]);
    put_on(&c, "w", "n2");
    c.node(0).sh("w", "echo kept > /root/f");
    // Archived, not handed over yet: it stays with n2, which starts it
    // again (from the archive) once it is back.
    crash_during_move(&mut c, 1, "move:before-handover", 0, &["w", "--to", "n1"]);
    wait_for(60, "w running on n2 again", || {
        let v = c.node(2).inspect("w");
        v["node"] == "n2" && v["state"] == "running"
    });
    assert_eq!(c.node(0).sh("w", "cat /root/f"), "kept\n");
    // Handed over, the move's answer never sent: n1's next pass takes
    // it over and starts it.
    crash_during_move(&mut c, 1, "move:after-handover", 2, &["w", "--to", "n1"]);
    wait_for(60, "w running on n1", || {
        let v = c.node(2).inspect("w");
        v["node"] == "n1" && v["state"] == "running"
    });
    assert_eq!(c.node(1).sh("w", "cat /root/f"), "kept\n");
    let ev = events(c.node(0), "w");
    assert!(ev.contains("taken over by node n1 from node n2"), "{ev}");
    // Restored on n1: its pointer there is gone with the restore.
    assert!(!c
        .node(0)
        .data
        .join("archives")
        .join(format!("{id}.json"))
        .exists());
    c.node(0).ok(&["rm", "-f", "w"]);
}

/// `dwell move` of a sandbox with 1 GiB of random data written, against a
/// raw upload of the same bytes to the same S3 endpoint (moto): prints
/// both, in seconds and MB/s. Run with `--ignored --nocapture`.
#[test]
#[ignore]
fn measure_a_cold_move_of_one_gib() {
    if !can_run() {
        return;
    }
    let Some(c) = Cluster::start(2, |_| {
        vec![
            "--node-capacity".into(),
            "vcpus=8,memory=8G,disk=50G".into(),
        ]
    }) else {
        return;
    };
    let (n1, n2) = (c.node(0), c.node(1));
    n1.ok(&[
        "create", "--name", "big", "--memory", "512M", "--disk", "3G",
    ]);
    let from = c.owner(0, "big");
    let to = if from == "n1" { "n2" } else { "n1" };
    n1.sh(
        "big",
        "dd if=/dev/urandom of=/root/big bs=1M count=1024 status=none && sync",
    );
    let sum = n1.sh("big", "md5sum /root/big | cut -d' ' -f1");
    let t0 = Instant::now();
    let v = moved(n2, &["big", "--to", to]);
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(v["node"], to, "{v}");
    assert_eq!(n1.sh("big", "md5sum /root/big | cut -d' ' -f1"), sum);
    let mib = 1024.0 * 1024.0 * 1024.0 / 1e6;
    let ev = events(n1, "big");
    for l in ev
        .lines()
        .filter(|l| l.contains("moved to node") || l.contains(" on node "))
    {
        eprintln!("event: {l}");
    }
    eprintln!(
        "cold move of 1 GiB written (debug build): {secs:.1}s, {:.1} MB/s",
        mib / secs
    );
    n1.ok(&["rm", "-f", "big"]);

    // The same number of bytes, straight to the same endpoint.
    let endpoint = c.s3_endpoint();
    let script = format!(
        r#"
import os, time, boto3
s3 = boto3.client("s3", endpoint_url="{endpoint}", aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
data = os.urandom(1 << 30)
t0 = time.time()
s3.put_object(Bucket="dwell", Key="measure/raw-1g", Body=data)
dt = time.time() - t0
s3.delete_object(Bucket="dwell", Key="measure/raw-1g")
print(f"{{dt:.1f}}")
"#
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "raw upload not measured (python3 with boto3 against {endpoint}): {}",
            stderr(&out)
        );
        return;
    }
    let raw: f64 = stdout(&out).trim().parse().unwrap();
    eprintln!(
        "raw upload of 1 GiB to the same moto: {raw:.1}s, {:.1} MB/s",
        mib / raw
    );
}
