//! End to end: sandboxes of the default size get their volume from the pool
//! of volumes made ahead (`dwell serve --volume-pool`), and such a volume is
//! as fresh, as limited and as well cleaned up as one made on the spot.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Inode numbers of the pooled volumes' images in data dir `data`.
fn pooled(data: &Path) -> BTreeSet<u64> {
    let Ok(rd) = std::fs::read_dir(data.join("volumes")) else {
        return BTreeSet::new();
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".pooled-"))
        .filter_map(|e| std::fs::metadata(e.path().join("volume.img")).ok())
        .map(|m| m.ino())
        .collect()
}

/// The pooled volumes' directory names (they name the daemon's pid).
fn pooled_dirs(data: &Path) -> BTreeSet<String> {
    let Ok(rd) = std::fs::read_dir(data.join("volumes")) else {
        return BTreeSet::new();
    };
    rd.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".pooled-"))
        .collect()
}

/// The inode of sandbox `id`'s volume image.
fn volume_ino(data: &Path, id: &str) -> u64 {
    std::fs::metadata(data.join("volumes").join(id).join("volume.img"))
        .unwrap()
        .ino()
}

/// Waits (up to 30 s) until the pool holds `n` volumes.
fn wait_pool(d: &Daemon, n: usize) -> BTreeSet<u64> {
    let t0 = Instant::now();
    loop {
        let l = pooled(&d.data);
        if l.len() >= n || t0.elapsed() > Duration::from_secs(30) {
            assert!(l.len() >= n, "the pool holds {l:?}; log:\n{}", d.log());
            return l;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Create a sandbox of the default size; returns its id.
fn create_default(d: &Daemon, name: &str) -> String {
    let out = d.ok(&["create", "--name", name, "--memory", "256M", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn pooled_volumes_are_fresh_limited_and_cleaned_up() {
    if !can_run() {
        return;
    }
    // The default disk (the pool's size) is 64 MiB on this daemon.
    let mut d = Daemon::start_with(&["--max-sandbox-disk", "64M", "--volume-pool", "2"]);
    let ready = wait_pool(&d, 2);
    // The pool holds files only: no mount, no loop device.
    assert!(leftovers(&d.data).is_empty(), "{:?}", leftovers(&d.data));

    let a = create_default(&d, "a");
    let ino = volume_ino(&d.data, &a);
    assert!(
        ready.contains(&ino),
        "a's volume {ino} is not one of the pool's {ready:?}"
    );
    // Its limit holds inside the sandbox.
    let size = d.sh("a", "df -k / | awk 'NR==2 {print $2}'");
    let kib: u64 = size.trim().parse().unwrap();
    assert!(kib < 64 * 1024, "df says {kib} KiB");
    let out = d.run(&[
        "exec",
        "a",
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero of=/root/fill bs=1M count=100 2>&1; sync",
    ]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("No space left"), "{text}");
    d.sh("a", "rm -f /root/fill && echo tenant-a > /root/secret");
    // Its files outlive a stop and a start.
    d.ok(&["stop", "a"]);
    d.ok(&["start", "a"]);
    assert_eq!(d.sh("a", "cat /root/secret"), "tenant-a\n");
    d.ok(&["rm", "-f", "a"]);

    // The next sandbox's pooled volume holds nothing of the one before.
    let ready = wait_pool(&d, 2);
    let b = create_default(&d, "b");
    let ino = volume_ino(&d.data, &b);
    assert!(
        ready.contains(&ino),
        "b's volume {ino} is not one of the pool's {ready:?}"
    );
    assert_eq!(
        d.sh("b", "ls /root; test ! -e /root/secret && echo clean"),
        "clean\n"
    );

    // A daemon killed with a full pool: the next one removes that pool,
    // adopts the sandbox, and makes a pool of its own.
    wait_pool(&d, 2);
    let before = pooled_dirs(&d.data);
    d.kill9();
    d.restart();
    let t0 = Instant::now();
    while !pooled_dirs(&d.data).is_disjoint(&before) && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        pooled_dirs(&d.data).is_disjoint(&before),
        "the dead daemon's pool {before:?} is still there: {:?}",
        pooled_dirs(&d.data)
    );
    assert_eq!(d.sh("b", "echo ok"), "ok\n");
    wait_pool(&d, 2);
    // Dropping the daemon (SIGTERM) drains the pool; the harness fails the
    // test on any mount or loop device left under the data dir.
}

#[test]
fn other_sizes_and_a_pool_of_zero_make_volumes_on_the_spot() {
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(&["--volume-pool", "0"]);
    let id = d.create("plain", &[]);
    assert!(pooled(&d.data).is_empty());
    assert_eq!(d.sh("plain", "echo ok"), "ok\n");
    drop(d);

    let d = Daemon::start_with(&["--volume-pool", "1"]);
    let ready = wait_pool(&d, 1);
    // 512M is not the pool's size (the default disk, 4G): made on the spot.
    let id2 = d.create("sized", &[]);
    assert!(!ready.contains(&volume_ino(&d.data, &id2)));
    assert_eq!(pooled(&d.data), ready);
    let _ = id;
}
