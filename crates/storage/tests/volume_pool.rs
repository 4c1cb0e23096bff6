//! The pool of volumes made ahead (real loop devices and ext4; run as
//! root): the pool holds no mount and no loop device; a claimed volume
//! comes mounted, fresh and size-limited; only the pool's size is claimed;
//! a drained or dropped pool and a dead process's pool leave nothing.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{has_loop, is_mounted, loops_for};
use dwell_storage::{VolumeKind, VolumeManager};

const SIZE: u64 = 32 << 20;

fn root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("dwell-vol-pool-test")
        .tempdir_in("/var/tmp")
        .unwrap()
}

/// The pooled volumes' directories under `root`.
fn pooled(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".pooled-")
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The ext4 UUID in an image's superblock.
fn uuid(img: &Path) -> Vec<u8> {
    let data = fs::read(img).map(|d| d[1024 + 0x68..1024 + 0x78].to_vec());
    data.unwrap()
}

fn cleanup(mgr: &VolumeManager) {
    for id in mgr.list().unwrap_or_default() {
        let _ = mgr.delete(&id);
    }
}

#[test]
fn a_claimed_volume_is_mounted_fresh_and_limited() {
    if !has_loop() {
        return;
    }
    let dir = root();
    let vols = dir.path().join("volumes");
    let mgr = VolumeManager::with_kind(vols.clone(), VolumeKind::Loop).with_pool(1, SIZE);
    assert_eq!(mgr.fill_pool().unwrap(), 1);
    assert_eq!(mgr.pool_status().ready, 1);
    let first = pooled(&vols);
    assert_eq!(first.len(), 1);
    assert!(!is_mounted(&first[0].join("mnt")));
    assert!(loops_for(&first[0].join("volume.img")).is_empty());
    let ino = fs::metadata(first[0].join("volume.img")).unwrap().ino();

    // Claimed: that image, now under the volume's id, attached and mounted.
    assert!(mgr.create_mounted("a", SIZE).unwrap());
    assert_eq!(mgr.pool_status().ready, 0);
    assert!(pooled(&vols).is_empty());
    let mnt = mgr.mount("a").unwrap();
    assert_eq!(mnt, vols.join("a").join("mnt"));
    assert!(is_mounted(&mnt));
    let img = vols.join("a").join("volume.img");
    assert_eq!(fs::metadata(&img).unwrap().ino(), ino);
    assert_eq!(loops_for(&img).len(), 1);
    let info = mgr.info("a").unwrap();
    assert!(info.mounted && info.limit_enforced);
    assert_eq!(info.size_bytes, SIZE);

    // Its limit holds: writing past it gives ENOSPC.
    let mut f = fs::File::create(mnt.join("big")).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let err = (0..64)
        .find_map(|_| f.write_all(&chunk).and_then(|_| f.sync_data()).err())
        .expect("a 32 MiB volume took 64 MiB");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(f);
    fs::write(mnt.join("secret"), b"tenant a").unwrap();
    let uuid_a = uuid(&vols.join("a").join("volume.img"));
    mgr.delete("a").unwrap();

    // The next claim is another, fresh filesystem: nothing of `a`.
    assert_eq!(mgr.fill_pool().unwrap(), 1);
    assert!(mgr.create_mounted("b", SIZE).unwrap());
    let b = vols.join("b").join("mnt");
    assert!(!b.join("secret").exists() && !b.join("big").exists());
    let names: Vec<String> = fs::read_dir(&b)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["lost+found".to_string()]);
    assert_ne!(uuid(&vols.join("b").join("volume.img")), uuid_a);
    cleanup(&mgr);
}

#[test]
fn only_the_pools_size_is_claimed() {
    if !has_loop() {
        return;
    }
    let dir = root();
    let vols = dir.path().join("volumes");
    let mgr = VolumeManager::with_kind(vols.clone(), VolumeKind::Loop).with_pool(1, SIZE);
    mgr.fill_pool().unwrap();
    // Another size is made now, mounted, and leaves the pool alone.
    assert!(!mgr.create_mounted("c", 2 * SIZE).unwrap());
    assert!(is_mounted(&vols.join("c").join("mnt")));
    assert_eq!(mgr.info("c").unwrap().size_bytes, 2 * SIZE);
    assert_eq!(mgr.pool_status().ready, 1);
    // An existing id is refused, and the pooled volume stays ready.
    assert!(mgr.create_mounted("c", SIZE).is_err());
    assert_eq!(mgr.pool_status().ready, 1);
    // A plain create (a restore writes the image) never takes from it.
    mgr.create("d", SIZE).unwrap();
    assert!(!mgr.info("d").unwrap().mounted);
    assert_eq!(mgr.pool_status().ready, 1);
    cleanup(&mgr);
}

#[test]
fn drained_and_dropped_pools_leave_nothing() {
    if !has_loop() {
        return;
    }
    let dir = root();
    let vols = dir.path().join("volumes");
    let mgr = VolumeManager::with_kind(vols.clone(), VolumeKind::Loop).with_pool(2, SIZE);
    assert_eq!(mgr.fill_pool().unwrap(), 2);
    let made = pooled(&vols);
    assert_eq!(made.len(), 2);
    for p in &made {
        assert!(loops_for(&p.join("volume.img")).is_empty());
    }
    mgr.drain_pool();
    for p in &made {
        assert!(!p.exists(), "{} is left", p.display());
    }
    // Drained for good: no more fills, no claims.
    assert_eq!(mgr.fill_pool().unwrap(), 0);
    assert!(!mgr.create_mounted("e", SIZE).unwrap());
    cleanup(&mgr);
    drop(mgr);

    let mgr = VolumeManager::with_kind(vols.clone(), VolumeKind::Loop).with_pool(1, SIZE);
    mgr.fill_pool().unwrap();
    let made = pooled(&vols);
    assert_eq!(made.len(), 1);
    drop(mgr);
    assert!(!made[0].exists());
}

#[test]
fn a_dead_processs_pool_is_removed_by_the_next_manager() {
    if !has_loop() {
        return;
    }
    let dir = root();
    let vols = dir.path().join("volumes");
    let mgr = VolumeManager::with_kind(vols.clone(), VolumeKind::Loop).with_pool(1, SIZE);
    mgr.fill_pool().unwrap();
    // As a daemon killed with its pool mounted leaves it: the name carries
    // the pid of a process that is gone.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let made = pooled(&vols).remove(0);
    let left = vols.join(format!(".pooled-{dead}-0-1"));
    fs::rename(&made, &left).unwrap();
    drop(mgr); // its own (renamed away) volume is not found: nothing done
    assert!(left.join("volume.img").exists());

    let next = VolumeManager::with_kind(vols.clone(), VolumeKind::Loop);
    assert!(!left.exists());
    drop(next);
}
