//! The S3 backend against a real S3-compatible server: `moto_server` (PyPI `moto[server]`),
//! started on a free local port by the test and killed at the end. Skipped, with the reason
//! printed, when `moto_server` is not installed.

#![cfg(feature = "s3")]

mod common;

use std::time::Duration;

use common::*;
use dwell_snapshot::*;
use dwell_testkit::moto::Moto;

fn s3_store(port: u16, bucket: &str, prefix: &str) -> S3Store {
    let mut cfg = S3Config::from_url(&format!("s3://{bucket}/{prefix}")).unwrap();
    cfg.endpoint = Some(format!("http://127.0.0.1:{port}"));
    cfg.allow_http = true;
    cfg.access_key_id = Some("testing".into());
    cfg.secret_access_key = Some("testing".into());
    cfg.region = Some("us-east-1".into());
    S3Store::new(&cfg).unwrap()
}

#[test]
fn s3_round_trip_incremental_delete_gc_and_corruption() {
    let Some(moto) = Moto::start() else { return };
    moto.make_bucket("dwell");
    let store = s3_store(moto.port, "dwell", "snaps/node1");
    assert_eq!(store.describe(), "s3://dwell/snaps/node1");

    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("volume.img");
    let f = sparse_image(&img, 40 * MIB + 100);
    for i in 0..20 {
        write_random(&f, i * 2 * MIB, MIB as usize, 300 + i);
    }
    write_random(&f, 40 * MIB, 100, 1);
    let seen = std::sync::Mutex::new(0u64);
    let cb = |p: Progress| {
        let mut s = seen.lock().unwrap();
        *s = (*s).max(p.done);
    };
    let a = create(
        &img,
        &store,
        &CreateOptions {
            id: Some("a".into()),
            progress: Some(&cb),
            ..CreateOptions::default()
        },
    )
    .unwrap();
    assert_eq!(*seen.lock().unwrap(), a.sizes.total);
    assert_eq!(store.list("chunks/").unwrap().len(), 21);
    assert!(store.list("leases/").unwrap().is_empty());

    // Incremental: one changed chunk uploads one chunk.
    write_random(&f, 4 * MIB, MIB as usize, 999);
    drop(f);
    let b = create(
        &img,
        &store,
        &CreateOptions {
            id: Some("b".into()),
            parent: Some(&a),
            ..CreateOptions::default()
        },
    )
    .unwrap();
    assert!(b.sizes.uploaded <= MIB + 1024, "{:?}", b.sizes);
    assert_eq!(store.list("chunks/").unwrap().len(), 22);

    let out = d.path().join("out.img");
    restore(&b, &store, &out, &RestoreOptions::default()).unwrap();
    assert_same_content(&img, &out);
    assert_as_sparse(&out, &img);
    assert_eq!(load(&store, "b", None).unwrap(), b);
    assert_eq!(list(&store, None).unwrap().len(), 2);

    // Delete a: only its private chunk goes.
    let r = delete(&store, "a", None, &GcOptions::default()).unwrap();
    assert_eq!(r.chunks_deleted, 1, "{r:?}");
    restore(&b, &store, &out, &RestoreOptions::default()).unwrap();
    assert_same_content(&img, &out);

    // gc removes an orphan.
    store
        .put(&ChunkId(*blake3::hash(b"o").as_bytes()).key(), b"x")
        .unwrap();
    let r = gc(
        &store,
        &GcOptions {
            grace: Duration::ZERO,
            ..GcOptions::default()
        },
    )
    .unwrap();
    assert_eq!(r.chunks_deleted, 1, "{r:?}");

    // Corruption and loss are detected; the target stays as it was.
    let target = d.path().join("target.img");
    std::fs::write(&target, b"old").unwrap();
    let victim = b.chunk_ids().into_iter().next().unwrap();
    let mut bytes = store.get(&victim.key()).unwrap().unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    store.put(&victim.key(), &bytes).unwrap();
    let err = restore(&b, &store, &target, &RestoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::CorruptChunk { .. }), "{err}");
    store.delete(&victim.key()).unwrap();
    let err = restore(&b, &store, &target, &RestoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::MissingChunk { .. }), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"old");
}

#[test]
fn s3_encrypted_round_trip() {
    let Some(moto) = Moto::start() else { return };
    moto.make_bucket("enc");
    let store = s3_store(moto.port, "enc", "");
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("volume.img");
    let f = sparse_image(&img, 8 * MIB);
    write_random(&f, MIB, 3 * MIB as usize, 5);
    drop(f);
    let k = TenantKey::from_bytes([1; 32]);
    let m = create(
        &img,
        &store,
        &CreateOptions {
            id: Some("e".into()),
            key: Some(&k),
            tenant: "acme".into(),
            ..CreateOptions::default()
        },
    )
    .unwrap();
    let out = d.path().join("out.img");
    restore(
        &m,
        &store,
        &out,
        &RestoreOptions {
            key: Some(&k),
            ..Default::default()
        },
    )
    .unwrap();
    assert_same_content(&img, &out);
    let err = restore(&m, &store, &out, &RestoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    assert!(list(&store, Some("other")).unwrap().is_empty());
}
