//! End to end: hibernated gVisor sandboxes through the snapshot store. An
//! archive of a hibernated sandbox keeps its memory and resumes warm; a
//! snapshot of one starts warm copies, also on a second daemon sharing the
//! S3 store (a real `moto_server`); a corrupt memory chunk is refused with
//! nothing half-made; the daemon killed at crash points of the archive and
//! its way back loses nothing. Skips with a printed reason without runsc
//! (or moto_server, for the second daemon).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::counter::counter;
use common::Moto;
use common::*;

/// Start the counter, with a file beside it that must stay.
fn start_counter(d: &Daemon, sb: &str) {
    d.sh(sb, "echo kept > /root/file");
    common::counter::start_counter(d, sb);
}

/// The counter of `sb` continues from `before` (no restart, no jump) and
/// keeps counting; its files are there.
fn continues(d: &Daemon, sb: &str, before: u64, what: &str) {
    let after = counter(d, sb);
    assert!(
        after >= before && after < before + 100,
        "{what}: the counter restarted or jumped ({before} -> {after})"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(counter(d, sb) > after, "{what}: the counter stopped");
    assert_eq!(d.sh(sb, "cat /root/file"), "kept\n", "{what}");
}

/// Hibernate `sb` and return the counter's value at that moment.
fn hibernate(d: &Daemon, sb: &str) -> u64 {
    let before = counter(d, sb);
    d.ok(&["hibernate", sb]);
    before
}

fn manifest(d: &Daemon, snap: &str) -> serde_json::Value {
    let p = d.data.join(format!("snapshots/manifests/{snap}.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Flip a byte in every chunk only the memory attachments of `snap` use;
/// returns their paths and good contents.
fn corrupt_memory(d: &Daemon, snap: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let m = manifest(d, snap);
    let ids = |xs: &serde_json::Value| -> Vec<String> {
        xs.as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["chunk"].as_str().map(String::from))
            .collect()
    };
    let volume = ids(&m["extents"]);
    let mut out = Vec::new();
    for a in m["attachments"].as_array().expect("attachments") {
        if !a["name"].as_str().unwrap().starts_with("memory/") {
            continue;
        }
        for c in ids(&a["extents"]) {
            if volume.contains(&c) {
                continue;
            }
            let p = d
                .data
                .join(format!("snapshots/chunks/{}/{}", &c[..2], &c[2..]));
            let good = std::fs::read(&p).unwrap();
            let mut bad = good.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x5a;
            std::fs::write(&p, bad).unwrap();
            out.push((p, good));
        }
    }
    assert!(!out.is_empty(), "no memory chunk to corrupt");
    out
}

fn repair(saved: &[(PathBuf, Vec<u8>)]) {
    for (p, b) in saved {
        std::fs::write(p, b).unwrap();
    }
}

fn sandbox_names(d: &Daemon) -> String {
    d.ok(&["ls"])
}

#[test]
fn archived_hibernated_sandbox_resumes_warm_refuses_corruption_and_survives_crashes() {
    if !can_run_gvisor() {
        return;
    }
    let mut d = Daemon::start();
    let id = d.create("g1", &["--isolation", "gvisor"]);
    start_counter(&d, "g1");
    let before = hibernate(&d, "g1");
    let saved_dir = d.data.join("sandboxes").join(&id).join("hibernate");
    assert!(saved_dir.is_dir());

    // Archive: volume and memory into the store, both freed locally.
    let t0 = Instant::now();
    d.ok(&["archive", "g1"]);
    let t_archive = t0.elapsed();
    let v = d.inspect("g1");
    assert_eq!(v["state"], "archived", "{v}");
    assert_eq!(v["archive"]["hibernated"], true, "{v}");
    let snap = v["archive"]["snapshot"].as_str().unwrap().to_string();
    assert!(!d.data.join("volumes").join(&id).exists(), "volume kept");
    assert!(!saved_dir.exists(), "saved memory kept locally");
    assert!(d.ok(&["inspect", "g1"]).contains("with saved memory"));
    let m = manifest(&d, &snap);
    // Attachments and a tenant key derived from the master key: version 3.
    assert_eq!(m["version"], 3, "{m}");
    assert!(d
        .ok(&["logs", "g1"])
        .contains("capturing the volume and the saved memory"));

    // Resume: both back, the processes continue.
    let t0 = Instant::now();
    d.ok(&["resume", "g1"]);
    let t_resume = t0.elapsed();
    assert_eq!(d.inspect("g1")["state"], "running");
    continues(&d, "g1", before, "after archive and resume");
    assert!(d.inspect("g1").get("archive").is_none());
    assert!(
        !d.data
            .join(format!("snapshots/manifests/{snap}.json"))
            .exists(),
        "archive snapshot kept after the resume"
    );
    eprintln!("archive of a hibernated sandbox {t_archive:?}, warm resume {t_resume:?}");

    // A corrupt memory chunk: refused loudly, the sandbox stays archived
    // (memory included); repaired, `start` resumes it warm.
    let before = hibernate(&d, "g1");
    d.ok(&["archive", "g1"]);
    let snap = d.inspect("g1")["archive"]["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let saved = corrupt_memory(&d, &snap);
    let out = d.run(&["start", "g1"]);
    assert!(!out.status.success(), "started on a corrupt memory image");
    let err = stderr(&out);
    assert!(
        err.contains("corrupt") && err.contains("attachment memory/"),
        "{err}"
    );
    assert_eq!(
        d.inspect("g1")["archive"]["hibernated"],
        true,
        "pointer lost"
    );
    assert!(host_processes_of(&id).is_empty());
    repair(&saved);
    d.ok(&["start", "g1"]);
    continues(&d, "g1", before, "after a refused corrupt start");

    // The daemon killed mid-archive and mid-unarchive.
    for point in [
        "archive:after-publish",
        "archive:after-free-volume",
        "archive:after-pointer",
    ] {
        let before = hibernate(&d, "g1");
        d.env = vec![("DWELL_CRASH_AT".into(), point.into())];
        d.restart();
        assert!(
            !d.run(&["archive", "g1"]).status.success(),
            "{point} did not fire"
        );
        d.wait_exit();
        d.env.clear();
        d.restart();
        wait_for(30, "the archive finished after the restart", || {
            d.inspect("g1")["state"] == "archived"
        });
        assert!(!saved_dir.exists(), "{point}: saved memory kept locally");
        d.ok(&["resume", "g1"]);
        continues(&d, "g1", before, &format!("after a crash at {point}"));
    }
    for point in ["unarchive:after-restore", "unarchive:after-unref"] {
        let before = hibernate(&d, "g1");
        d.ok(&["archive", "g1"]);
        d.env = vec![("DWELL_CRASH_AT".into(), point.into())];
        d.restart();
        assert!(
            !d.run(&["resume", "g1"]).status.success(),
            "{point} did not fire"
        );
        d.wait_exit();
        d.env.clear();
        d.restart();
        if d.inspect("g1")["state"] != "running" {
            d.ok(&["resume", "g1"]);
        }
        continues(&d, "g1", before, &format!("after a crash at {point}"));
    }
    d.ok(&["rm", "-f", "g1"]);
    assert!(leftovers(&d.data).is_empty(), "{:?}", leftovers(&d.data));
}

#[test]
fn snapshot_of_a_hibernated_sandbox_starts_warm_copies_and_refuses_corrupt_memory() {
    if !can_run_gvisor() {
        return;
    }
    let d = Daemon::start();
    d.ok(&[
        "create",
        "--name",
        "t1",
        "--memory",
        "192M",
        "--disk",
        "512M",
        "--isolation",
        "gvisor",
    ]);
    start_counter(&d, "t1");
    let before = hibernate(&d, "t1");
    let s: serde_json::Value =
        serde_json::from_str(&d.ok(&["snapshot", "create", "t1", "--name", "warm", "--json"]))
            .unwrap();
    assert!(s["memory_bytes"].as_u64().unwrap() > 0, "{s}");
    assert!(d.ok(&["snapshot", "inspect", "warm"]).contains("memory:"));
    let snap = s["id"].as_str().unwrap().to_string();

    // Corrupt memory: the copy is refused and nothing of it stays.
    let volumes_before = std::fs::read_dir(d.data.join("volumes")).unwrap().count();
    let saved = corrupt_memory(&d, &snap);
    let out = d.run(&["create", "--name", "c1", "--from", "warm"]);
    assert!(!out.status.success(), "created from corrupt memory");
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    assert!(!sandbox_names(&d).contains("c1"));
    assert_eq!(
        std::fs::read_dir(d.data.join("volumes")).unwrap().count(),
        volumes_before,
        "a volume of the refused copy stayed"
    );
    repair(&saved);

    // Repaired: a warm copy with a new id; the template is untouched.
    let t0 = Instant::now();
    d.ok(&["create", "--name", "c1", "--from", "warm"]);
    eprintln!("warm copy from a snapshot in {:?}", t0.elapsed());
    let v = d.inspect("c1");
    assert_eq!(v["runtime"], "gvisor", "{v}");
    assert_eq!(v["spec"]["memory_bytes"], 192u64 << 20, "{v}");
    continues(&d, "c1", before, "copy from the snapshot");
    assert_eq!(d.inspect("t1")["state"], "hibernated");
    // Rolling its files back under its saved memory is refused.
    let out = d.run(&["restore", "t1", "warm"]);
    assert!(
        !out.status.success() && stderr(&out).contains("is hibernated"),
        "{}",
        stderr(&out)
    );
    d.ok(&["resume", "t1"]);
    continues(&d, "t1", before, "the template after its copy");
}

#[test]
fn snapshot_of_a_hibernated_sandbox_resumes_on_a_second_daemon_sharing_s3() {
    if !can_run_gvisor() {
        return;
    }
    let Some(moto) = Moto::start_for_daemons() else {
        return;
    };
    let endpoint = moto.endpoint();
    // Snapshots are encrypted by default: daemons sharing a store share the
    // snapshot master key (the first one makes it).
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("snapshot.key");
    let key = key.to_str().unwrap();
    let args = [
        "--object-store",
        "s3://dwell/shared",
        "--s3-endpoint",
        &endpoint,
        "--snapshot-key",
        key,
    ];
    let a = Daemon::start_with(&args);
    a.create("g1", &["--isolation", "gvisor"]);
    start_counter(&a, "g1");
    let before = hibernate(&a, "g1");
    let t0 = Instant::now();
    a.ok(&["snapshot", "create", "g1", "--name", "warm"]);
    eprintln!("snapshot with memory into S3 in {:?}", t0.elapsed());

    // Another machine: its own data dir, image store and runsc; only the
    // bucket is shared. It runs another agent version (the same binary
    // with a trailer): the copy must run the version its memory holds.
    let other_agent = tempfile::NamedTempFile::new().unwrap();
    let mut bytes = std::fs::read(agent_bin()).unwrap();
    bytes.extend_from_slice(b"\0another agent version");
    std::fs::write(other_agent.path(), &bytes).unwrap();
    let b = Daemon::start_with_agent(&args, other_agent.path().to_path_buf());
    assert!(b.ok(&["snapshot", "ls"]).contains("warm"));
    let t0 = Instant::now();
    b.ok(&["create", "--name", "g2", "--from", "warm"]);
    eprintln!("warm copy on the second daemon in {:?}", t0.elapsed());
    let v = b.inspect("g2");
    assert_eq!(v["runtime"], "gvisor", "{v}");
    assert_eq!(v["state"], "running", "{v}");
    continues(&b, "g2", before, "on the second daemon");
    let agents = |d: &Daemon| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d.data.join("bin"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("dwell-agent-"))
            .collect();
        v.sort();
        v
    };
    let a_agents = agents(&a);
    assert_eq!(a_agents.len(), 1, "{a_agents:?}");
    assert!(
        agents(&b).contains(&a_agents[0]) && agents(&b).len() == 2,
        "the second daemon did not install the first one's agent version: {:?}",
        agents(&b)
    );
    let id = v["id"].as_str().unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(b.data.join("sandboxes").join(id).join("sandbox.json")).unwrap(),
    )
    .unwrap();
    assert!(
        cfg["agent_binary"]
            .as_str()
            .is_some_and(|p| p.ends_with(&a_agents[0])),
        "the warm copy does not run the agent version its memory holds: {cfg}"
    );
    // The restored agent (the first daemon's version) serves new execs.
    assert_eq!(b.sh("g2", "echo ok"), "ok\n");
    // The first daemon's sandbox is still its own, also archived warm in
    // the shared bucket while the second daemon collects the store.
    a.ok(&["archive", "g1"]);
    b.ok(&["snapshot", "gc"]);
    a.ok(&["resume", "g1"]);
    continues(&a, "g1", before, "the original, archived meanwhile");
    b.ok(&["rm", "-f", "g2"]);
    a.ok(&["snapshot", "rm", "warm"]);
    drop(b);
    drop(a);
    drop(moto);
}
