//! Snapshots through the daemon: archive and start, the `archive_after`
//! policy, corruption caught on start, per-tenant encryption, garbage
//! collection, the S3 object store (a real `moto_server`), and the daemon
//! killed (crash points and random SIGKILLs) during snapshot, restore,
//! archive, unarchive and GC.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::Moto;
use common::*;

/// Writes a 3 MB random blob and returns its sha256.
fn fill(d: &Daemon, sb: &str, tag: &str) -> String {
    d.sh(
        sb,
        &format!("echo {tag} > /root/state && head -c 3000000 /dev/urandom > /root/blob && sync"),
    );
    sum(d, sb)
}

fn sum(d: &Daemon, sb: &str) -> String {
    d.sh(sb, "cat /root/state; sha256sum /root/blob | cut -d' ' -f1")
}

fn json(d: &Daemon, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&d.ok(args)).unwrap()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn archive_frees_the_volume_and_start_brings_it_back_verified() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let id = d.create("a1", &[]);
    let want = fill(&d, "a1", "v1");
    d.ok(&["snapshot", "create", "a1", "--name", "keep"]);

    // Archive a running sandbox: stopped, captured, volume freed.
    d.ok(&["archive", "a1"]);
    let sb = d.inspect("a1");
    assert_eq!(sb["state"], "archived", "{sb}");
    let snap = sb["archive"]["snapshot"].as_str().unwrap().to_string();
    assert!(sb["archive"]["stored_bytes"].as_u64().unwrap() > 0, "{sb}");
    assert!(
        !d.data.join("volumes").join(&id).exists(),
        "volume not freed"
    );
    assert!(d.ok(&["ls"]).contains("archived ("));
    assert!(d.ok(&["inspect", "a1"]).contains("archive:"));
    // Archives are not user snapshots, and an archived sandbox cannot run commands.
    assert!(!d.ok(&["snapshot", "ls"]).contains(&snap));
    let out = d.run(&["exec", "a1", "--", "true"]);
    assert!(stderr(&out).contains("archived"), "{}", stderr(&out));
    let out = d.run(&["stop", "a1"]);
    assert!(stderr(&out).contains("archived"), "{}", stderr(&out));
    let out = d.run(&["snapshot", "create", "a1"]);
    assert!(stderr(&out).contains("is archived"), "{}", stderr(&out));
    let events = d.ok(&["logs", "a1"]);
    assert!(events.contains("archiving: capturing"), "{events}");

    // Start restores it, then drops the archive snapshot.
    d.ok(&["start", "a1"]);
    assert_eq!(d.inspect("a1")["state"], "running");
    assert_eq!(sum(&d, "a1"), want);
    assert!(d.inspect("a1").get("archive").is_none());
    let manifests = d.data.join("snapshots/manifests");
    assert!(
        !manifests.join(format!("{snap}.json")).exists(),
        "archive snapshot kept after start"
    );

    // Corruption: every stored chunk flipped; start must fail loudly and
    // keep the sandbox archived; with the chunks repaired it starts intact.
    d.ok(&["archive", "a1"]);
    let chunks = files(&d.data.join("snapshots/chunks"));
    assert!(!chunks.is_empty());
    let saved: Vec<(PathBuf, Vec<u8>)> = chunks
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();
    for (p, b) in &saved {
        let mut bad = b.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        std::fs::write(p, bad).unwrap();
    }
    let out = d.run(&["start", "a1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("corrupt") || err.contains("chunk"), "{err}");
    assert!(d.inspect("a1")["archive"].is_object(), "pointer lost");
    for (p, b) in &saved {
        std::fs::write(p, b).unwrap();
    }
    d.ok(&["start", "a1"]);
    assert_eq!(sum(&d, "a1"), want);

    // Deleting a snapshot deletes its unshared chunks; gc finds nothing left.
    d.sh("a1", "head -c 2000000 /dev/urandom > /root/other && sync");
    let s2 = json(
        &d,
        &["snapshot", "create", "a1", "--name", "later", "--json"],
    );
    assert!(s2["uploaded_bytes"].as_u64().unwrap() > 0);
    let before = files(&d.data.join("snapshots/chunks")).len();
    d.ok(&["snapshot", "rm", "later"]);
    let after = files(&d.data.join("snapshots/chunks")).len();
    assert!(after < before, "no chunk freed: {before} -> {after}");
    let gc = json(&d, &["snapshot", "gc", "--json"]);
    assert_eq!(gc["chunks_deleted"], 0, "{gc}");
    // The older snapshot is intact.
    d.ok(&[
        "create", "--from", "keep", "--name", "k", "--memory", "128M",
    ]);
    assert_eq!(sum(&d, "k"), want);
}

#[test]
fn archive_after_policy_archives_a_stopped_sandbox() {
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(&["--resync-secs", "1"]);
    d.create("p1", &["--archive-after", "1s"]);
    let want = fill(&d, "p1", "pol");
    d.ok(&["stop", "p1"]);
    wait_for(30, "archive_after fired", || {
        d.inspect("p1")["state"] == "archived"
    });
    let events = d.ok(&["logs", "p1"]);
    assert!(events.contains("policy archive_after fired"), "{events}");
    d.ok(&["start", "p1"]);
    assert_eq!(sum(&d, "p1"), want);
}

#[test]
fn snapshots_are_encrypted_per_tenant_and_invisible_to_others() {
    if !can_run() {
        return;
    }
    let port = 20000 + ((std::process::id() + 13) % 20000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_with(&["--listen", &addr, "--encrypt-snapshots"]);
    wait_for(10, "TCP listener", || TcpStream::connect(&addr).is_ok());
    let acme = d.ok(&["tenant", "create", "acme"]).trim().to_string();
    let other = d.ok(&["tenant", "create", "other"]).trim().to_string();
    let as_ = |key: &str, args: &[&str]| {
        d.cmd(args)
            .env("DWELL_HOST", &addr)
            .env("DWELL_API_KEY", key)
            .output()
            .unwrap()
    };
    let ok = |key: &str, args: &[&str]| {
        let out = as_(key, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    ok(
        &acme,
        &[
            "create", "--name", "e1", "--memory", "128M", "--disk", "256M",
        ],
    );
    ok(
        &acme,
        &[
            "exec",
            "e1",
            "--",
            "sh",
            "-c",
            "echo top-secret-marker > /root/s",
        ],
    );
    ok(&acme, &["snapshot", "create", "e1", "--name", "sec"]);
    ok(
        &other,
        &[
            "create", "--name", "o1", "--memory", "128M", "--disk", "256M",
        ],
    );
    ok(&other, &["snapshot", "create", "o1", "--name", "theirs"]);
    // Sealed with different keys, recorded in the manifests.
    let mut keys = std::collections::BTreeSet::new();
    for m in files(&d.data.join("snapshots/manifests")) {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
        assert_eq!(v["encryption"]["algorithm"], "xchacha20poly1305", "{v}");
        keys.insert(v["encryption"]["key_id"].as_str().unwrap().to_string());
    }
    assert_eq!(keys.len(), 2, "one key per tenant: {keys:?}");
    // Other tenants see nothing and cannot fork or restore from it.
    assert!(!ok(&other, &["snapshot", "ls"]).contains("sec"));
    let out = as_(&other, &["snapshot", "inspect", "sec"]);
    assert!(!out.status.success());
    let out = as_(&other, &["create", "--from", "sec", "--name", "steal"]);
    assert!(!out.status.success(), "another tenant forked a snapshot");
    // The owner can.
    ok(
        &acme,
        &[
            "create", "--from", "sec", "--name", "e2", "--memory", "128M",
        ],
    );
    assert_eq!(
        ok(&acme, &["exec", "e2", "--", "cat", "/root/s"]),
        "top-secret-marker\n"
    );
    for (key, names) in [(&acme, vec!["e1", "e2"]), (&other, vec!["o1"])] {
        for n in names {
            ok(key, &["rm", "-f", n]);
        }
    }
}

#[test]
fn s3_object_store_snapshot_restore_fork_archive() {
    if !can_run() {
        return;
    }
    let Some(moto) = Moto::start_for_daemons() else {
        return;
    };
    let endpoint = moto.endpoint();
    let d = Daemon::start_with(&[
        "--object-store",
        "s3://dwell/node1",
        "--s3-endpoint",
        &endpoint,
    ]);
    assert!(!d.data.join("snapshots").exists(), "used the local dir");
    d.create("s1", &[]);
    let v1 = fill(&d, "s1", "v1");
    let s = json(
        &d,
        &["snapshot", "create", "s1", "--name", "base", "--json"],
    );
    assert!(s["uploaded_bytes"].as_u64().unwrap() > 0, "{s}");
    let v2 = fill(&d, "s1", "v2");
    assert_ne!(v1, v2);
    d.ok(&["restore", "s1", "base"]);
    assert_eq!(sum(&d, "s1"), v1);
    d.ok(&[
        "create", "--from", "base", "--name", "f", "--count", "2", "--memory", "128M",
    ]);
    assert_eq!(sum(&d, "f-1"), v1);
    assert_eq!(sum(&d, "f-2"), v1);
    // Archive into the bucket and back.
    d.ok(&["archive", "f-2"]);
    assert_eq!(d.inspect("f-2")["state"], "archived");
    d.ok(&["start", "f-2"]);
    assert_eq!(sum(&d, "f-2"), v1);
    let gc = json(&d, &["snapshot", "gc", "--json"]);
    assert!(gc["manifests"].as_u64().unwrap() >= 1, "{gc}");
    d.ok(&["snapshot", "rm", "base"]);
    drop(d);
    drop(moto);
}

/// After a crash, restart with no crash point.
fn recover(d: &mut Daemon) {
    d.wait_exit();
    d.env.clear();
    d.restart();
}

#[test]
fn crash_points_in_archive_and_unarchive_leave_the_sandbox_startable() {
    if !can_run() {
        return;
    }
    let mut d = Daemon::start();
    d.create("c1", &[]);
    let want = fill(&d, "c1", "crash");
    d.ok(&["snapshot", "create", "c1", "--name", "old"]);
    for point in [
        "archive:after-publish",
        "archive:after-pointer",
        "archive:after-free",
    ] {
        d.env = vec![("DWELL_CRASH_AT".into(), point.into())];
        d.restart();
        assert!(
            !d.run(&["archive", "c1"]).status.success(),
            "{point} did not fire"
        );
        recover(&mut d);
        // The restart finishes the archive.
        wait_for(20, "archive finished after restart", || {
            d.inspect("c1")["state"] == "archived"
        });
        d.ok(&["start", "c1"]);
        assert_eq!(sum(&d, "c1"), want, "after a crash at {point}");
    }
    for point in ["unarchive:after-restore", "unarchive:after-unref"] {
        d.ok(&["archive", "c1"]);
        d.env = vec![("DWELL_CRASH_AT".into(), point.into())];
        d.restart();
        assert!(
            !d.run(&["start", "c1"]).status.success(),
            "{point} did not fire"
        );
        recover(&mut d);
        // Wherever it stopped, a start gives the archived data.
        if d.inspect("c1")["state"] != "running" {
            d.ok(&["start", "c1"]);
        }
        assert_eq!(sum(&d, "c1"), want, "after a crash at {point}");
    }
    // A crash during GC loses nothing either.
    d.env = vec![("DWELL_CRASH_AT".into(), "gc:after-orphans".into())];
    d.restart();
    assert!(!d.run(&["snapshot", "gc"]).status.success());
    recover(&mut d);
    // Leftover archive snapshots (crash after publish) are collected.
    d.ok(&["snapshot", "gc"]);
    let left: Vec<_> = files(&d.data.join("snapshots/manifests"));
    assert_eq!(left.len(), 1, "only `old` should remain: {left:?}");
    // A daemon killed in the middle of filling a new sandbox from a
    // snapshot: the restart deletes it (volume and state) instead of
    // starting it cold on a half-filled volume.
    let volumes_dir = d.data.join("volumes");
    let volumes = || std::fs::read_dir(&volumes_dir).unwrap().count();
    let volumes_before = volumes();
    d.env = vec![("DWELL_CRASH_AT".into(), "create:mid-fill".into())];
    d.restart();
    assert!(
        !d.run(&["create", "--from", "old", "--name", "half", "--memory", "128M"])
            .status
            .success(),
        "create:mid-fill did not fire"
    );
    recover(&mut d);
    wait_for(
        20,
        "the half-filled sandbox deleted after the restart",
        || !d.run(&["inspect", "half"]).status.success(),
    );
    assert_eq!(volumes(), volumes_before, "the half-filled volume was kept");
    d.ok(&["create", "--from", "old", "--name", "o", "--memory", "128M"]);
    assert_eq!(sum(&d, "o"), want);
}

/// A collector's lease put in the store's directory by hand; removed on drop,
/// so a failing test does not leave writers waiting for it.
struct PlantedLease(PathBuf);

impl PlantedLease {
    fn new(d: &Daemon, owner: serde_json::Value) -> PlantedLease {
        let path = d.data.join("snapshots/leases/gc-planted.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let doc = serde_json::json!({"pid": owner["pid"], "owner": owner});
        std::fs::write(&path, doc.to_string()).unwrap();
        PlantedLease(path)
    }
}

impl Drop for PlantedLease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn proc_text(path: &str) -> String {
    let p = Path::new(path);
    std::fs::read_link(p)
        .map(|l| l.display().to_string())
        .or_else(|_| std::fs::read_to_string(p).map(|s| s.trim().to_string()))
        .unwrap_or_default()
}

/// A daemon restarted in the middle of long recovery work serves at once:
/// here an interrupted archive waits for another host's garbage collection
/// (its lease in the shared store) before it can store anything. The
/// archive finishes once that collection ends, and the periodic resync
/// runs after that first pass.
#[test]
fn a_restart_serves_while_an_interrupted_archive_waits_for_a_collection() {
    if !can_run() {
        return;
    }
    let mut d = Daemon::start();
    d.create("w1", &[]);
    let want = fill(&d, "w1", "kept");
    let lease = PlantedLease::new(
        &d,
        serde_json::json!({"boot_id": "another-machine", "pid_ns": "pid:[1]", "pid": 1, "start_ticks": 1}),
    );
    let mut archive = d
        .cmd(&["archive", "w1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(60, "the archive reaches the capture", || {
        d.ok(&["logs", "w1"]).contains("archiving: capturing")
    });
    std::thread::sleep(Duration::from_millis(300));
    d.kill9();
    let _ = archive.wait();
    // `restart` fails the test unless the socket answers within 20 s; the
    // collection's lease lives 10 minutes.
    d.restart();
    assert!(d.ok(&["ls"]).contains("w1"));
    let sb = d.inspect("w1");
    assert_eq!(sb["desired_state"], "archived", "{sb}");
    assert_ne!(
        sb["state"], "archived",
        "archived past a running collection: {sb}"
    );
    assert!(
        d.log()
            .contains("recovery of interrupted work is still running"),
        "{}",
        d.log()
    );
    drop(lease);
    wait_for(120, "the archive finishes after the collection", || {
        d.inspect("w1")["state"] == "archived"
    });
    // Policies fire again: the periodic resync started after the first pass.
    d.create("w2", &["--ttl", "1s"]);
    wait_for(60, "the TTL of a new sandbox fires", || {
        d.inspect("w2")["state"] == "stopped"
    });
    d.ok(&["start", "w1"]);
    assert_eq!(sum(&d, "w1"), want);
}

/// A collector that died on this machine while holding its lease (a daemon
/// killed mid-`snapshot gc`) blocks no writer: its process is provably
/// gone, so its lease is dead at once, not after 10 minutes.
#[test]
fn a_dead_local_collectors_lease_does_not_block_an_archive() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("w1", &[]);
    let want = fill(&d, "w1", "kept");
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let lease = PlantedLease::new(
        &d,
        serde_json::json!({
            "boot_id": proc_text("/proc/sys/kernel/random/boot_id"),
            "pid_ns": proc_text("/proc/self/ns/pid"),
            "time_ns": proc_text("/proc/self/ns/time"),
            "uid": 0,
            "pid": gone.id(),
            "start_ticks": 1,
        }),
    );
    let mut archive = d
        .cmd(&["archive", "w1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(60, "the archive finishes", || {
        d.inspect("w1")["state"] == "archived"
    });
    let _ = archive.wait();
    assert!(
        !lease.0.exists(),
        "the dead collector's lease was not removed"
    );
    d.ok(&["start", "w1"]);
    assert_eq!(sum(&d, "w1"), want);
}

/// SIGKILL the daemon a random time into each operation, many times, and
/// check every published snapshot stays restorable, none is half-visible,
/// and the sandbox always starts with one of the states it had.
#[test]
fn random_kills_during_snapshot_restore_archive_and_gc() {
    if !can_run() {
        return;
    }
    let mut d = Daemon::start();
    d.create("r1", &[]);
    // Enough data that each operation takes a while.
    d.sh("r1", "head -c 150000000 /dev/urandom > /root/big && sync");
    let base = fill(&d, "r1", "base");
    d.ok(&["snapshot", "create", "r1", "--name", "base"]);
    let mut seed = std::process::id() as u64 ^ 0x9e37_79b9;
    let mut rand_ms = |max: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % max
    };
    let ops: [&[&str]; 5] = [
        &["snapshot", "create", "r1"],
        &["restore", "r1", "base"],
        &["archive", "r1"],
        &["start", "r1"],
        &["snapshot", "gc"],
    ];
    for round in 0..2 {
        for op in ops {
            let delay = rand_ms(400);
            let mut child = d
                .cmd(op)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay));
            d.kill9();
            let _ = child.wait();
            d.restart();
            // Every published snapshot loads; no lease or temp file is left visible.
            let list = json(&d, &["snapshot", "ls", "--json"]);
            for s in list.as_array().unwrap() {
                d.ok(&["snapshot", "inspect", s["id"].as_str().unwrap()]);
            }
            eprintln!(
                "round {round}: killed `{}` after {delay} ms: {} snapshots",
                op.join(" "),
                list.as_array().unwrap().len()
            );
        }
    }
    // Converge: the sandbox starts and holds the base state (every op restores or keeps it).
    // A restarted daemon finishes the killed operation in its recovery pass;
    // on a loaded 2-core machine that once took over 30 s.
    wait_for(120, "no transition in flight", || {
        let s = d.inspect("r1");
        s["state"] == s["desired_state"] || s["state"] == "error"
    });
    let st = d.inspect("r1")["state"].as_str().unwrap().to_string();
    if st != "running" {
        d.ok(&["start", "r1"]);
    }
    assert_eq!(sum(&d, "r1"), base);
    d.ok(&[
        "create", "--from", "base", "--name", "rb", "--memory", "128M",
    ]);
    assert_eq!(sum(&d, "rb"), base);
}
