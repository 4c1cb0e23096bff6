//! Attachments (format version 2): named files stored with the image, chunked, deduplicated,
//! encrypted and verified like it, and deleted and collected with it.

mod common;

use common::*;
use dwell_snapshot::*;

/// An image and two attachment files (one sharing content with the image).
fn setup(dir: &std::path::Path) -> (std::path::PathBuf, Vec<(String, std::path::PathBuf)>) {
    let img = dir.join("volume.img");
    let f = sparse_image(&img, 8 * MIB);
    write_random(&f, 0, 2 * MIB as usize, 1);
    drop(f);
    let pages = dir.join("pages.img");
    let mut data = random_bytes(1, 2 * MIB as usize); // the image's first 2 MiB
    data.extend(random_bytes(7, 1_500_000));
    std::fs::write(&pages, &data).unwrap();
    let state = dir.join("checkpoint.img");
    std::fs::write(&state, random_bytes(8, 70_000)).unwrap();
    let files = vec![
        ("memory/pages.img".to_string(), pages),
        ("memory/checkpoint.img".to_string(), state),
    ];
    (img, files)
}

fn opts(id: &str, files: &[(String, std::path::PathBuf)]) -> CreateOptions<'static> {
    CreateOptions {
        id: Some(id.into()),
        tenant: "t1".into(),
        attachments: files.to_vec(),
        ..CreateOptions::default()
    }
}

#[test]
fn attachments_round_trip_dedupe_and_make_version_2() {
    let d = tempfile::tempdir().unwrap();
    let (img, files) = setup(d.path());
    let store = LocalStore::open(d.path().join("store")).unwrap();
    let m = create(&img, &store, &opts("s1", &files)).unwrap();
    assert_eq!(m.version, 2);
    assert_eq!(m.attachments.len(), 2);
    // The pages file's first 2 MiB are the image's chunks: stored once.
    let image_chunks: std::collections::BTreeSet<_> =
        m.extents.iter().filter_map(|x| x.chunk).collect();
    let pages = m.attachment("memory/pages.img").unwrap();
    assert!(pages
        .extents
        .iter()
        .take(2)
        .all(|x| image_chunks.contains(&x.chunk.unwrap())));
    assert_eq!(m.chunk_ids().len(), image_chunks.len() + 2 + 1);
    let loaded = load(&store, "s1", Some("t1")).unwrap();
    assert_eq!(loaded, m);
    for (name, path) in &files {
        let out = d.path().join("out");
        restore_attachment(&m, name, &store, &out, &RestoreOptions::default()).unwrap();
        assert_same_content(path, &out);
    }
    let err = restore_attachment(
        &m,
        "memory/none",
        &store,
        &d.path().join("x"),
        &RestoreOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no attachment"), "{err}");
    // Without attachments, a snapshot stays version 1.
    let plain = create(&img, &store, &opts("s2", &[])).unwrap();
    assert_eq!(plain.version, 1);
}

#[test]
fn encrypted_attachments_need_the_key() {
    let d = tempfile::tempdir().unwrap();
    let (img, files) = setup(d.path());
    let store = LocalStore::open(d.path().join("store")).unwrap();
    let (_, key) = TenantKey::generate().unwrap();
    let m = create(
        &img,
        &store,
        &CreateOptions {
            key: Some(&key),
            ..opts("s1", &files)
        },
    )
    .unwrap();
    let out = d.path().join("out");
    let (name, src) = &files[1];
    let err = restore_attachment(&m, name, &store, &out, &RestoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    let with_key = RestoreOptions {
        key: Some(&key),
        ..Default::default()
    };
    restore_attachment(&m, name, &store, &out, &with_key).unwrap();
    assert_same_content(src, &out);
}

#[test]
fn corrupt_attachment_chunk_is_refused_and_target_untouched() {
    let d = tempfile::tempdir().unwrap();
    let (img, files) = setup(d.path());
    let store = LocalStore::open(d.path().join("store")).unwrap();
    let m = create(&img, &store, &opts("s1", &files)).unwrap();
    let victim = m.attachment("memory/checkpoint.img").unwrap().extents[0]
        .chunk
        .unwrap();
    let p = store.path_of(&victim.key()).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&p, &bytes).unwrap();
    let out = d.path().join("out");
    std::fs::write(&out, b"old").unwrap();
    let err = restore_attachment(
        &m,
        "memory/checkpoint.img",
        &store,
        &out,
        &RestoreOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::CorruptChunk { .. }), "{err}");
    assert!(
        err.to_string().contains("attachment memory/checkpoint.img"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    // The volume image does not use that chunk: it still restores.
    restore(
        &m,
        &store,
        &d.path().join("vol"),
        &RestoreOptions::default(),
    )
    .unwrap();
}

#[test]
fn deleting_removes_attachment_chunks_only_when_unreferenced() {
    let d = tempfile::tempdir().unwrap();
    let (img, files) = setup(d.path());
    let store = LocalStore::open(d.path().join("store")).unwrap();
    let a = create(&img, &store, &opts("a", &files)).unwrap();
    let b = create(&img, &store, &opts("b", &files)).unwrap();
    assert_eq!(b.sizes.uploaded, 0, "everything was stored by a");
    let chunks = files_under(&store.root().join("chunks")).len();
    assert_eq!(chunks, a.chunk_ids().len());
    delete(&store, "a", None, &GcOptions::default()).unwrap();
    let out = d.path().join("out");
    restore_attachment(&b, &files[0].0, &store, &out, &RestoreOptions::default()).unwrap();
    assert_same_content(&files[0].1, &out);
    delete(&store, "b", None, &GcOptions::default()).unwrap();
    assert!(files_under(&store.root().join("chunks")).is_empty());
}

#[test]
fn bad_attachment_names_are_refused_before_anything_is_stored() {
    let d = tempfile::tempdir().unwrap();
    let (img, files) = setup(d.path());
    let store = LocalStore::open(d.path().join("store")).unwrap();
    let bad = vec![("../escape".to_string(), files[0].1.clone())];
    assert!(create(&img, &store, &opts("s1", &bad)).is_err());
    let twice = vec![files[0].clone(), files[0].clone()];
    let err = create(&img, &store, &opts("s1", &twice)).unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    assert!(list(&store, None).unwrap().is_empty());
}
