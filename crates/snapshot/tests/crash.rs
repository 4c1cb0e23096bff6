//! Crash safety: a child process (this test binary, re-executed) snapshots, restores, deletes and
//! collects in a loop and is SIGKILLed after a random delay, again and again. After every kill,
//! every older snapshot must still restore byte-identically, every visible manifest must be
//! complete (all its chunks present and valid), and the restore target must be either its old
//! content or the full restored image, never a mix.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dwell_snapshot::*;

const ENV: &str = "DWELL_SNAPSHOT_CRASH_CHILD";

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    (
        dir.join("store"),
        dir.join("a.img"),
        dir.join("b.img"),
        dir.join("target.img"),
    )
}

/// The child's body: runs only when re-executed by `kill_at_random_points`.
#[test]
#[ignore = "helper process for kill_at_random_points"]
fn crash_child() {
    let Ok(dir) = std::env::var(ENV) else {
        return;
    };
    let (store_dir, _a, b, target) = paths(Path::new(&dir));
    let store = LocalStore::open(store_dir).unwrap();
    let round: u32 = std::env::var("ROUND").unwrap().parse().unwrap();
    let gc_opts = GcOptions {
        grace: Duration::ZERO,
        ..GcOptions::default()
    };
    for k in 0.. {
        let id = format!("victim-{round}-{k}");
        create(
            &b,
            &store,
            &CreateOptions {
                id: Some(id.clone()),
                threads: Some(2),
                ..CreateOptions::default()
            },
        )
        .unwrap();
        let base = load(&store, "base", None).unwrap();
        restore(&base, &store, &target, &RestoreOptions::default()).unwrap();
        gc(&store, &gc_opts).unwrap();
        delete(&store, &id, None, &gc_opts).unwrap();
    }
}

fn pseudo_random(i: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut x = t ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// Kills the child if the test fails midway.
struct Reap(Option<std::process::Child>);
impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn kill_at_random_points() {
    let d = tempfile::tempdir().unwrap();
    let (store_dir, a, b, target) = paths(d.path());
    let fa = sparse_image(&a, 24 * MIB);
    let fb = sparse_image(&b, 24 * MIB);
    for i in 0..12 {
        write_random(&fa, i * 2 * MIB, MIB as usize, 7000 + i);
        write_random(&fb, i * 2 * MIB, MIB as usize, 8000 + i + (i % 2) * 100);
    }
    drop((fa, fb));
    let store = LocalStore::open(&store_dir).unwrap();
    let base = create(
        &a,
        &store,
        &CreateOptions {
            id: Some("base".into()),
            ..CreateOptions::default()
        },
    )
    .unwrap();
    let old = random_bytes(42, MIB as usize);
    std::fs::write(&target, &old).unwrap();

    let rounds = 12;
    let mut completed_targets = 0;
    for round in 0..rounds {
        let delay = Duration::from_millis(pseudo_random(round) % 600);
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--ignored", "--nocapture"])
            .env(ENV, d.path())
            .env("ROUND", round.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reap = Reap(Some(child));
        let started = Instant::now();
        std::thread::sleep(delay);
        let c = reap.0.as_mut().unwrap();
        assert!(
            c.try_wait().unwrap().is_none(),
            "the child died by itself after {:?}",
            started.elapsed()
        );
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
        reap.0 = None;

        // The older snapshot restores byte-identically.
        let out = d.path().join("check.img");
        restore(&base, &store, &out, &RestoreOptions::default()).unwrap();
        assert_same_content(&a, &out);
        // Every visible manifest is complete.
        for m in list(&store, None).unwrap() {
            let out = d.path().join("visible.img");
            restore(&m, &store, &out, &RestoreOptions::default()).unwrap_or_else(|e| {
                panic!("round {round}: visible snapshot {} is broken: {e}", m.id)
            });
            if m.id != "base" {
                assert_same_content(&b, &out);
            }
        }
        // The restore target is either untouched or fully restored.
        let t = std::fs::read(&target).unwrap();
        if t != old {
            assert_same_content(&a, &target);
            completed_targets += 1;
            std::fs::write(&target, &old).unwrap();
        }
    }
    eprintln!("{rounds} kills; the restore completed before {completed_targets} of them");
    // The killed children's leases (writers' and collectors') are provably dead: they ran on this
    // machine and are gone. A collection with the default 10 min time-to-live removes them at
    // once and leaves only the chunks of visible snapshots.
    let r = gc(
        &store,
        &GcOptions {
            grace: Duration::ZERO,
            ..GcOptions::default()
        },
    )
    .unwrap();
    assert!(
        store.list("leases/").unwrap().is_empty(),
        "dead leases left: {:?}",
        store.list("leases/").unwrap()
    );
    eprintln!("final gc: {r:?}");
    let visible: Vec<String> = list(&store, None)
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    let mut live = std::collections::BTreeSet::new();
    for id in &visible {
        live.extend(load(&store, id, None).unwrap().chunk_ids());
    }
    assert_eq!(store.list("chunks/").unwrap().len(), live.len());
    let out = d.path().join("final.img");
    restore(&base, &store, &out, &RestoreOptions::default()).unwrap();
    assert_same_content(&a, &out);
}
