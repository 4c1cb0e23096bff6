//! Reflink clones and incremental captures on a real XFS (root only).

use super::*;
use std::process::Command;

/// An XFS filesystem on a loop device, unmounted (and the loop device
/// released by autoclear) when dropped.
struct Xfs {
    dir: tempfile::TempDir,
    _img: tempfile::TempDir,
}

impl Xfs {
    fn mount() -> Option<Xfs> {
        let img = tempfile::tempdir_in("/var/tmp").ok()?;
        let file = img.path().join("xfs.img");
        std::fs::File::create(&file).ok()?.set_len(512 << 20).ok()?;
        let mkfs = Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&file)
            .status();
        if !mkfs.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mkfs.xfs is missing (apt-get install xfsprogs)");
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&file)
            .arg(dir.path())
            .status();
        if !ok.is_ok_and(|s| s.success()) {
            eprintln!("skipped: cannot loop-mount XFS here");
            return None;
        }
        Some(Xfs { dir, _img: img })
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn reflink_clone_is_none_where_extents_cannot_be_shared() {
    // The test machine's /var/tmp is ext4.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let img = dir.path().join("volume.img");
    std::fs::write(&img, b"data").unwrap();
    if let Some(c) = reflink_clone(&img).unwrap() {
        eprintln!("skipped: /var/tmp shares extents ({})", c.path().display());
        return;
    }
    assert!(!dir.path().join(CLONE).exists(), "no clone left behind");
}

#[test]
fn reflink_clone_copies_the_frozen_image_on_xfs() {
    let Some(xfs) = Xfs::mount() else { return };
    let img = xfs.dir.path().join("volume.img");
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&img, &data).unwrap();
    // A clone left by a crash is replaced.
    std::fs::write(xfs.dir.path().join(CLONE), b"stale").unwrap();
    let clone = reflink_clone(&img).unwrap().expect("XFS shares extents");
    std::fs::write(&img, b"changed after the clone").unwrap();
    assert_eq!(std::fs::read(clone.path()).unwrap(), data);
    let path = clone.path().to_path_buf();
    drop(clone);
    assert!(!path.exists(), "the clone is removed when dropped");
}

#[test]
fn incremental_capture_of_clones_reads_only_what_changed() {
    use std::os::unix::fs::FileExt;
    let Some(xfs) = Xfs::mount() else { return };
    let img = xfs.dir.path().join("volume.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(64 << 20).unwrap();
    let mib = |seed: u8| -> Vec<u8> {
        (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
            .collect()
    };
    for i in 0..32u8 {
        f.write_all_at(&mib(i), u64::from(i) << 20).unwrap();
    }
    let store = dwell_snapshot::LocalStore::open(xfs.dir.path().join("store")).unwrap();
    let freeze = Duration::from_millis(1);
    let clone = reflink_clone(&img).unwrap().unwrap();
    let a = capture_clone(&store, clone, "t", "sb", None, None, freeze, Ctx::default()).unwrap();
    assert!(a.sizes.uploaded > 0);
    assert_eq!(bases(&img).len(), 1, "the clone is kept as the base");
    // Change 2 MiB; the next capture uploads about that, and is exact.
    f.write_all_at(&mib(200), 5 << 20).unwrap();
    f.write_all_at(&mib(201), 40 << 20).unwrap();
    let clone = reflink_clone(&img).unwrap().unwrap();
    // The blocks the clones do not share are about what was written.
    let same = dwell_snapshot::same_ranges(&bases(&img)[0].0, clone.path()).unwrap();
    let differ = (64 << 20) - same.iter().map(|r| r.end - r.start).sum::<u64>();
    assert!(
        (2 << 20..=4 << 20).contains(&differ),
        "{differ} bytes differ"
    );
    let b = capture_clone(&store, clone, "t", "sb", None, None, freeze, Ctx::default()).unwrap();
    let new_chunks = b.extents.iter().filter(|x| x.chunk.is_some()).count();
    assert_eq!(new_chunks, 33);
    assert!(b.sizes.uploaded <= 3 << 20, "uploaded {}", b.sizes.uploaded);
    let out = xfs.dir.path().join("out.img");
    restore_into(&store, &b, &out, &Ctx::default()).unwrap();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());
    let kept = bases(&img);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].1, b.id, "the newest clone is the base");
    // A base whose snapshot was deleted is not trusted, and is removed.
    delete(&store, "t", &b.id).unwrap();
    let clone = reflink_clone(&img).unwrap().unwrap();
    let c = capture_clone(&store, clone, "t", "sb", None, None, freeze, Ctx::default()).unwrap();
    restore_into(&store, &c, &out, &Ctx::default()).unwrap();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap());
    assert_eq!(bases(&img).len(), 1);
}
