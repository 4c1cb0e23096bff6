//! End to end: sandboxes of the default size get their volume from the pool
//! of volumes made ahead (`dwell serve --volume-pool`), and such a volume is
//! as fresh, as limited and as well cleaned up as one made on the spot.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Loop devices backing the pooled volumes of data dir `data`.
fn pooled_loops(data: &Path) -> BTreeSet<String> {
    pooled(data).into_iter().map(|(dev, _)| dev).collect()
}

/// The image files of the pooled volumes attached now.
fn pooled_images(data: &Path) -> BTreeSet<String> {
    pooled(data).into_iter().map(|(_, img)| img).collect()
}

/// (loop device, image) of each attached pooled volume of `data`.
fn pooled(data: &Path) -> BTreeSet<(String, String)> {
    let vols = data.join("volumes");
    let mut found = BTreeSet::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let b = b.trim();
        if b.starts_with(&format!("{}/.pooled-", vols.display())) && !b.ends_with("(deleted)") {
            found.insert((e.file_name().to_string_lossy().into_owned(), b.to_string()));
        }
    }
    found
}

/// The loop device backing sandbox `id`'s volume.
fn volume_loop(data: &Path, id: &str) -> Option<String> {
    let img = data.join("volumes").join(id).join("volume.img");
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .find_map(|e| {
            let b = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            (Path::new(b.trim()) == img).then(|| e.file_name().to_string_lossy().into_owned())
        })
}

/// Waits (up to 30 s) until the pool holds `n` mounted volumes.
fn wait_pool(d: &Daemon, n: usize) -> BTreeSet<String> {
    let t0 = Instant::now();
    loop {
        let l = pooled_loops(&d.data);
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

    let a = create_default(&d, "a");
    let dev = volume_loop(&d.data, &a).expect("a's volume is attached");
    assert!(
        ready.contains(&dev),
        "a's volume {dev} is not one of the pool's {ready:?}"
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
    let dev = volume_loop(&d.data, &b).expect("b's volume is attached");
    assert!(
        ready.contains(&dev),
        "b's volume {dev} is not one of the pool's {ready:?}"
    );
    assert_eq!(
        d.sh("b", "ls /root; test ! -e /root/secret && echo clean"),
        "clean\n"
    );

    // A daemon killed with its pool mounted: the next one removes that
    // pool, adopts the sandbox, and makes a pool of its own.
    wait_pool(&d, 2);
    let before = pooled_images(&d.data);
    d.kill9();
    d.restart();
    let t0 = Instant::now();
    while !pooled_images(&d.data).is_disjoint(&before) && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        pooled_images(&d.data).is_disjoint(&before),
        "the dead daemon's pool is still attached: {:?}",
        pooled_images(&d.data)
    );
    for img in &before {
        let dir = Path::new(img).parent().unwrap();
        assert!(!dir.exists(), "{} is left", dir.display());
    }
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
    assert!(pooled_loops(&d.data).is_empty());
    assert!(volume_loop(&d.data, &id).is_some());
    assert_eq!(d.sh("plain", "echo ok"), "ok\n");
    drop(d);

    let d = Daemon::start_with(&["--volume-pool", "1"]);
    wait_pool(&d, 1);
    // 512M is not the pool's size (the default disk, 4G): made on the spot.
    let ready = pooled_loops(&d.data);
    let id = d.create("sized", &[]);
    let dev = volume_loop(&d.data, &id).unwrap();
    assert!(!ready.contains(&dev));
    assert_eq!(pooled_loops(&d.data), ready);
}
