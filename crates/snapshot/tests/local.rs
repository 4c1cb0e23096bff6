//! Snapshots against a local-directory store: round trips, incremental cost, sharing,
//! corruption, deletion, collection next to a running writer, encryption and tenants.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use dwell_snapshot::*;

fn opts(id: &str) -> CreateOptions<'static> {
    CreateOptions {
        id: Some(id.into()),
        tenant: "t1".into(),
        sandbox: Some("work".into()),
        ..CreateOptions::default()
    }
}

fn chunk_files(store: &LocalStore) -> Vec<std::path::PathBuf> {
    files_under(&store.root().join("chunks"))
}

#[test]
fn round_trip_is_byte_identical_and_sparse() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("volume.img");
    let f = sparse_image(&img, 64 * MIB + 12345); // odd size: short last chunk
    write_random(&f, 0, 300_000, 1);
    write_random(&f, 10 * MIB + 17, 3 * MIB as usize, 2);
    f.write_all_at_zero(40 * MIB, MIB as usize); // allocated zeros: stored as a hole
    write_random(&f, 64 * MIB, 12345, 3); // the tail
    drop(f);
    let store = LocalStore::open(d.path().join("store")).unwrap();
    let seen = Mutex::new(Vec::new());
    let cb = |p: Progress| seen.lock().unwrap().push(p);
    let m = create(
        &img,
        &store,
        &CreateOptions {
            progress: Some(&cb),
            freeze: Some(Duration::from_micros(4200)),
            ..opts("s1")
        },
    )
    .unwrap();
    assert_eq!(m.freeze_us, Some(4200));
    assert_eq!(m.source.volume_size, 64 * MIB + 12345);
    assert!(m.extents.iter().any(|x| x.is_hole()));
    assert!(m.sizes.data <= 7 * MIB, "holes not stored: {:?}", m.sizes);
    let seen = seen.lock().unwrap();
    assert!(seen
        .iter()
        .all(|p| p.done <= p.total && p.total == m.sizes.total));
    assert_eq!(seen.iter().map(|p| p.done).max(), Some(m.sizes.total));

    let loaded = load(&store, "s1", Some("t1")).unwrap();
    assert_eq!(loaded, m);
    let out = d.path().join("restored.img");
    restore(&loaded, &store, &out, &RestoreOptions::default()).unwrap();
    assert_same_content(&img, &out);
    assert_as_sparse(&out, &img);
    assert!(blocks(&out) < (8 * MIB) / 512, "holes stayed holes");
}

trait ZeroWrite {
    fn write_all_at_zero(&self, off: u64, len: usize);
}
impl ZeroWrite for std::fs::File {
    fn write_all_at_zero(&self, off: u64, len: usize) {
        use std::os::unix::fs::FileExt;
        self.write_all_at(&vec![0u8; len], off).unwrap();
    }
}

#[test]
fn second_snapshot_after_one_percent_change_stores_about_one_percent() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("volume.img");
    let f = sparse_image(&img, 100 * MIB);
    for i in 0..100 {
        write_random(&f, i * MIB, MIB as usize, 100 + i);
    }
    let store = LocalStore::open(d.path().join("store")).unwrap();
    let a = create(&img, &store, &opts("a")).unwrap();
    assert!(
        a.sizes.uploaded >= 100 * MIB,
        "random data does not compress"
    );
    write_random(&f, 37 * MIB, MIB as usize, 999); // 1% of the image
    drop(f);
    let b = create(&img, &store, &opts("b")).unwrap();
    let pct = b.sizes.uploaded as f64 * 100.0 / b.sizes.total as f64;
    assert!(
        (0.9..=1.2).contains(&pct),
        "second snapshot uploaded {pct:.2}% of the image"
    );
    let out = d.path().join("out.img");
    restore(&b, &store, &out, &RestoreOptions::default()).unwrap();
    assert_same_content(&img, &out);
}

#[test]
fn images_sharing_content_share_chunks() {
    let d = tempfile::tempdir().unwrap();
    let (i1, i2) = (d.path().join("1.img"), d.path().join("2.img"));
    let f1 = sparse_image(&i1, 32 * MIB);
    let f2 = sparse_image(&i2, 32 * MIB);
    for i in 0..16 {
        write_random(&f1, i * MIB, MIB as usize, i);
        write_random(&f2, i * MIB, MIB as usize, i); // same template
    }
    write_random(&f2, 20 * MIB, MIB as usize, 77); // one private chunk
    let store = LocalStore::open(d.path().join("store")).unwrap();
    create(&i1, &store, &opts("one")).unwrap();
    let two = create(&i2, &store, &opts("two")).unwrap();
    assert_eq!(chunk_files(&store).len(), 17);
    assert!(two.sizes.uploaded <= MIB + 4096, "{:?}", two.sizes);
    assert!(two.sizes.stored >= 17 * MIB);
}

fn corrupt_setup(d: &Path) -> (LocalStore, Manifest, std::path::PathBuf) {
    let img = d.join("volume.img");
    let f = sparse_image(&img, 16 * MIB);
    for i in 0..8 {
        write_random(&f, i * 2 * MIB, MIB as usize, 50 + i);
    }
    let store = LocalStore::open(d.join("store")).unwrap();
    let m = create(&img, &store, &opts("c")).unwrap();
    let target = d.join("target.img");
    std::fs::write(&target, b"precious old content").unwrap();
    (store, m, target)
}

fn assert_untouched(target: &Path) {
    assert_eq!(std::fs::read(target).unwrap(), b"precious old content");
    let dir = target.parent().unwrap();
    let strays: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(strays.is_empty(), "temporary files left: {strays:?}");
}

#[test]
fn corrupt_chunk_fails_loudly_and_leaves_target_untouched() {
    let d = tempfile::tempdir().unwrap();
    let (store, m, target) = corrupt_setup(d.path());
    let victim = m.extents.iter().rev().find_map(|x| x.chunk).unwrap();
    let p = store.path_of(&victim.key()).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&p, &bytes).unwrap();
    let err = restore(&m, &store, &target, &RestoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::CorruptChunk { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&victim.to_hex()) && msg.contains("corrupt"),
        "{msg}"
    );
    assert_untouched(&target);
}

#[test]
fn missing_chunk_fails_loudly_and_leaves_target_untouched() {
    let d = tempfile::tempdir().unwrap();
    let (store, m, target) = corrupt_setup(d.path());
    let victim = m.extents.iter().find_map(|x| x.chunk).unwrap();
    std::fs::remove_file(store.path_of(&victim.key()).unwrap()).unwrap();
    let err = restore(&m, &store, &target, &RestoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::MissingChunk { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
    assert_untouched(&target);
}

#[test]
fn delete_keeps_shared_chunks_and_frees_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("volume.img");
    let f = sparse_image(&img, 8 * MIB);
    for i in 0..4 {
        write_random(&f, i * MIB, MIB as usize, 10 + i);
    }
    let store = LocalStore::open(d.path().join("store")).unwrap();
    create(&img, &store, &opts("old")).unwrap();
    write_random(&f, 0, MIB as usize, 99);
    write_random(&f, 6 * MIB, MIB as usize, 98);
    let new = create(&img, &store, &opts("new")).unwrap();
    assert_eq!(chunk_files(&store).len(), 6);
    let r = delete(&store, "old", Some("t1"), &GcOptions::default()).unwrap();
    assert_eq!(r.chunks_deleted, 1, "{r:?}");
    assert_eq!(chunk_files(&store).len(), 5);
    assert!(matches!(
        load(&store, "old", None),
        Err(Error::SnapshotNotFound { .. })
    ));
    let out = d.path().join("out.img");
    restore(&new, &store, &out, &RestoreOptions::default()).unwrap();
    assert_same_content(&img, &out);
    // Another tenant can neither see nor delete it.
    assert!(matches!(
        delete(&store, "new", Some("t2"), &GcOptions::default()),
        Err(Error::SnapshotNotFound { .. })
    ));
    delete(&store, "new", None, &GcOptions::default()).unwrap();
    assert!(chunk_files(&store).is_empty());
}

#[test]
fn gc_removes_orphans_but_spares_a_running_writers_chunks() {
    let d = tempfile::tempdir().unwrap();
    let store = LocalStore::open(d.path().join("store")).unwrap();
    // An orphan chunk (as a crashed writer would leave).
    store
        .put(&ChunkId(*blake3::hash(b"orphan").as_bytes()).key(), b"junk")
        .unwrap();
    let img = d.path().join("big.img");
    let f = sparse_image(&img, 160 * MIB);
    for i in 0..160 {
        write_random(&f, i * MIB, MIB as usize, 500 + i);
    }
    drop(f);
    let (reached, pause) = (mpsc::channel::<()>(), mpsc::channel::<()>());
    let reached_tx = Mutex::new(reached.0);
    let pause_rx = Mutex::new(pause.1);
    let first = std::sync::atomic::AtomicBool::new(true);
    let cb = |p: Progress| {
        if p.done >= 64 * MIB && first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            reached_tx.lock().unwrap().send(()).unwrap();
            // Hold this worker; the other one goes on storing chunks while gc runs.
            pause_rx.lock().unwrap().recv().unwrap();
        }
    };
    let gc_opts = GcOptions {
        grace: Duration::ZERO,
        ..GcOptions::default()
    };
    std::thread::scope(|s| {
        let w = s.spawn(|| {
            create(
                &img,
                &store,
                &CreateOptions {
                    progress: Some(&cb),
                    ..opts("running")
                },
            )
        });
        reached.1.recv().unwrap();
        let before = chunk_files(&store).len();
        assert!(before >= 64, "stored so far: {before}");
        let r = gc(&store, &gc_opts).unwrap();
        assert_eq!(r.chunks_deleted, 1, "only the orphan goes: {r:?}");
        assert!(r.kept_leased >= 63, "{r:?}");
        pause.0.send(()).unwrap();
        let m = w.join().unwrap().unwrap();
        let out = d.path().join("out.img");
        restore(&m, &store, &out, &RestoreOptions::default()).unwrap();
        assert_same_content(&img, &out);
    });
    assert_eq!(chunk_files(&store).len(), 160);
    let r = gc(&store, &gc_opts).unwrap();
    assert_eq!(r.chunks_deleted, 0, "{r:?}");
}

#[test]
fn writer_waits_while_a_collector_holds_its_lease() {
    let d = tempfile::tempdir().unwrap();
    let store = LocalStore::open(d.path().join("store")).unwrap();
    let img = d.path().join("v.img");
    let f = sparse_image(&img, 4 * MIB);
    write_random(&f, 0, MIB as usize, 5);
    drop(f);
    store.put("leases/gc-test.json", b"{}").unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let w = s.spawn(|| {
            let r = create(&img, &store, &opts("w"));
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        });
        std::thread::sleep(Duration::from_millis(400));
        assert!(!done.load(std::sync::atomic::Ordering::SeqCst));
        assert!(load(&store, "w", None).is_err());
        store.delete("leases/gc-test.json").unwrap();
        w.join().unwrap().unwrap();
    });
    assert!(load(&store, "w", None).is_ok());
    assert!(store.list("leases/").unwrap().is_empty(), "lease released");
}

#[test]
fn encrypted_round_trip_and_wrong_key() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("volume.img");
    let f = sparse_image(&img, 8 * MIB);
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![b'a'; 3 * MIB as usize], MIB).unwrap();
    drop(f);
    let store = LocalStore::open(d.path().join("store")).unwrap();
    let (_, k1) = TenantKey::generate().unwrap();
    let k2 = TenantKey::from_bytes([9; 32]);
    let m = create(
        &img,
        &store,
        &CreateOptions {
            key: Some(&k1),
            ..opts("enc")
        },
    )
    .unwrap();
    assert_eq!(m.encryption.as_ref().unwrap().key_id, k1.fingerprint());
    // Chunk names are keyed: the same image unencrypted yields different names.
    let plain = create(&img, &store, &opts("plain")).unwrap();
    assert!(m.chunk_ids().is_disjoint(&plain.chunk_ids()));
    // Stored bytes do not contain the plaintext pattern.
    for c in m.chunk_ids() {
        let b = std::fs::read(store.path_of(&c.key()).unwrap()).unwrap();
        assert!(!b.windows(64).any(|w| w.iter().all(|&x| x == b'a')));
    }
    let out = d.path().join("out.img");
    restore(
        &m,
        &store,
        &out,
        &RestoreOptions {
            key: Some(&k1),
            ..Default::default()
        },
    )
    .unwrap();
    assert_same_content(&img, &out);
    for key in [None, Some(&k2)] {
        let err = restore(
            &m,
            &store,
            &d.path().join("x.img"),
            &RestoreOptions {
                key,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    }
    // A tampered encrypted chunk fails authentication.
    let c = m.chunk_ids().into_iter().next().unwrap();
    let p = store.path_of(&c.key()).unwrap();
    let mut b = std::fs::read(&p).unwrap();
    b[30] ^= 1;
    std::fs::write(&p, b).unwrap();
    let err = restore(
        &m,
        &store,
        &d.path().join("y.img"),
        &RestoreOptions {
            key: Some(&k1),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("authentication"), "{err}");
}

#[test]
fn tenants_see_only_their_snapshots_and_ids_are_not_reused() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("v.img");
    let f = sparse_image(&img, MIB);
    write_random(&f, 0, 1000, 1);
    drop(f);
    let store = LocalStore::open(d.path().join("store")).unwrap();
    create(&img, &store, &opts("mine")).unwrap();
    let mut labels = BTreeMap::new();
    labels.insert("name".to_string(), "before-upgrade".to_string());
    create(
        &img,
        &store,
        &CreateOptions {
            tenant: "t2".into(),
            labels,
            ..opts("theirs")
        },
    )
    .unwrap();
    let ids = |t| {
        list(&store, t)
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(Some("t1")), vec!["mine"]);
    assert_eq!(ids(Some("t2")), vec!["theirs"]);
    assert_eq!(ids(None).len(), 2);
    assert!(matches!(
        load(&store, "theirs", Some("t1")),
        Err(Error::SnapshotNotFound { .. })
    ));
    assert!(matches!(
        create(&img, &store, &opts("mine")),
        Err(Error::SnapshotExists { .. })
    ));
    assert!(matches!(
        create(&img, &store, &opts("../x")),
        Err(Error::InvalidId { .. })
    ));
}

#[test]
fn parent_hint_skips_lookups_but_never_trusts_a_deleted_parent() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("v.img");
    let f = sparse_image(&img, 16 * MIB);
    for i in 0..16 {
        write_random(&f, i * MIB, MIB as usize, 40 + i);
    }
    let store = LocalStore::open(d.path().join("store")).unwrap();
    let a = create(&img, &store, &opts("a")).unwrap();
    write_random(&f, 3 * MIB, MIB as usize, 1);
    let b = create(
        &img,
        &store,
        &CreateOptions {
            parent: Some(&a),
            ..opts("b")
        },
    )
    .unwrap();
    assert_eq!(b.sizes.uploaded, b.extents[3].stored);
    assert_eq!(
        b.sizes.stored,
        b.extents.iter().map(|x| x.stored).sum::<u64>()
    );
    let out = d.path().join("out.img");
    restore(&b, &store, &out, &RestoreOptions::default()).unwrap();
    assert_same_content(&img, &out);
    // Deleting a and b frees their chunks; a snapshot naming a as parent must upload them again.
    delete(&store, "a", None, &GcOptions::default()).unwrap();
    delete(&store, "b", None, &GcOptions::default()).unwrap();
    assert!(chunk_files(&store).is_empty());
    let c = create(
        &img,
        &store,
        &CreateOptions {
            parent: Some(&a),
            ..opts("c")
        },
    )
    .unwrap();
    assert_eq!(c.sizes.uploaded, c.sizes.stored);
    restore(&c, &store, &out, &RestoreOptions::default()).unwrap();
    assert_same_content(&img, &out);
}

#[test]
fn ranges_same_as_the_parent_are_taken_from_it_unread() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("v.img");
    let f = sparse_image(&img, 8 * MIB);
    for i in 0..6 {
        write_random(&f, i * MIB, MIB as usize, 70 + i);
    }
    let store = LocalStore::open(d.path().join("store")).unwrap();
    let a = create(&img, &store, &opts("a")).unwrap();
    // Change cells 1 and 6 (6 was a hole), then claim that everything but cell 1 is unchanged:
    // cell 6 is then taken from the parent (a hole) without being read, which shows the claim
    // is trusted; cell 1 is read.
    write_random(&f, MIB, MIB as usize, 1);
    write_random(&f, 6 * MIB, MIB as usize, 2);
    let same = [0..MIB, 2 * MIB..8 * MIB];
    let b = create(
        &img,
        &store,
        &CreateOptions {
            parent: Some(&a),
            same_as_parent: Some(&same),
            ..opts("b")
        },
    )
    .unwrap();
    assert_eq!(b.sizes.uploaded, b.extents[1].stored, "only cell 1 is new");
    let out = d.path().join("out.img");
    restore(&b, &store, &out, &RestoreOptions::default()).unwrap();
    // Cell 6 as in the parent (zeros), the rest as in the image.
    f.write_all_at_zero(6 * MIB, MIB as usize);
    assert_same_content(&img, &out);
    // The honest claim (cell 1 and 6 changed) gives the image exactly.
    write_random(&f, 6 * MIB, MIB as usize, 2);
    let honest = [0..MIB, 2 * MIB..6 * MIB, 7 * MIB..8 * MIB];
    let c = create(
        &img,
        &store,
        &CreateOptions {
            parent: Some(&a),
            same_as_parent: Some(&honest),
            ..opts("c")
        },
    )
    .unwrap();
    restore(&c, &store, &out, &RestoreOptions::default()).unwrap();
    assert_same_content(&img, &out);
    // A parent of another chunk size is not trusted: everything is read.
    let e = create(
        &img,
        &store,
        &CreateOptions {
            parent: Some(&a),
            same_as_parent: Some(&same),
            chunk_size: MIB / 2,
            ..opts("e")
        },
    )
    .unwrap();
    restore(&e, &store, &out, &RestoreOptions::default()).unwrap();
    assert_same_content(&img, &out);
}
