//! Volume templates: one `mkfs.ext4` per size, copies with their own UUIDs
//! that `e2fsck` finds clean, exact size limits, recovery of a copy lost in
//! a crash, and templates kept out of `list()` and `stray_loops()`.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{has_loop, wait_no_loop};
use dwell_storage::{VolumeKind, VolumeManager};

/// A manager on a temporary root; deletes every volume it made on drop.
struct Fixture {
    mgr: VolumeManager,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dwell-tpl-test")
            .tempdir_in("/var/tmp")
            .unwrap();
        let mgr = VolumeManager::with_kind(dir.path().join("volumes"), VolumeKind::Loop);
        Fixture { mgr, _dir: dir }
    }

    fn template(&self, size: u64) -> PathBuf {
        self.mgr
            .root()
            .join(".templates")
            .join(format!("{size}.img"))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for id in self.mgr.list().unwrap_or_default() {
            let _ = self.mgr.delete(&id);
        }
    }
}

/// Removes a file on drop.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn tool(name: &str) -> String {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| name.to_string())
}

/// The filesystem UUID `dumpe2fs` reads from an image.
fn uuid_of(img: &Path) -> String {
    uuid_in(img, &[])
}

/// The UUID in a backup superblock (`block` of `block_size` bytes).
fn backup_uuid_of(img: &Path, block: u64, block_size: u64) -> String {
    uuid_in(
        img,
        &[
            "-o".into(),
            format!("superblock={block}"),
            "-o".into(),
            format!("blocksize={block_size}"),
        ],
    )
}

fn uuid_in(img: &Path, extra: &[String]) -> String {
    let out = Command::new(tool("dumpe2fs"))
        .arg("-h")
        .args(extra)
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dumpe2fs {extra:?} {}: {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("Filesystem UUID:")
                .map(|u| u.trim().to_string())
        })
        .expect("dumpe2fs prints a UUID")
}

/// Asserts that a forced, read-only `e2fsck` finds nothing to fix.
fn assert_fsck_clean(img: &Path) {
    let out = Command::new(tool("e2fsck"))
        .arg("-fn")
        .arg(img)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "e2fsck -fn {} is not clean:\n{}{}",
        img.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rewrites the boot id recorded in a volume's metadata, as if the volume
/// had been created before a reboot.
fn pretend_made_in_another_boot(mgr: &VolumeManager, id: &str) {
    let p = mgr.root().join(id).join("volume.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    assert!(
        v.get("unsynced_boot").is_some(),
        "a copied image records its boot: {v}"
    );
    v["unsynced_boot"] = "00000000-0000-0000-0000-000000000000".into();
    fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn template_is_made_once_and_reused() {
    if !has_loop() {
        return;
    }
    let fx = Fixture::new();
    let size = 4u64 << 30;
    fx.mgr.create("a", size).unwrap();
    let tpl = fx.template(size);
    let before = fs::metadata(&tpl).expect("the first create makes the template");
    assert_eq!(before.len(), size);
    assert!(
        before.blocks() * 512 < 16 << 20,
        "the template is sparse: {} bytes allocated",
        before.blocks() * 512
    );
    let b = fx.mgr.create("b", size).unwrap();
    let after = fs::metadata(&tpl).unwrap();
    assert_eq!(
        (before.ino(), before.mtime(), before.mtime_nsec()),
        (after.ino(), after.mtime(), after.mtime_nsec()),
        "the second create reuses the template"
    );
    assert!(
        b.used_bytes < 16 << 20,
        "a copy is sparse: {} bytes",
        b.used_bytes
    );

    // Templates are not volumes, and never attached.
    assert_eq!(
        fx.mgr.list().unwrap(),
        vec!["a".to_string(), "b".to_string()]
    );
    fx.mgr.mount("a").unwrap();
    fx.mgr.mount("b").unwrap();
    assert!(
        fx.mgr.stray_loops().is_empty(),
        "{:?}",
        fx.mgr.stray_loops()
    );

    // Deleting volumes leaves the template alone.
    let img = b.image.unwrap();
    fx.mgr.delete("a").unwrap();
    fx.mgr.delete("b").unwrap();
    assert!(wait_no_loop(&img).is_empty());
    assert_eq!(fs::metadata(&tpl).unwrap().ino(), before.ino());
    assert!(fx.mgr.list().unwrap().is_empty());

    // A manager started on the same root keeps using it.
    let again = VolumeManager::with_kind(fx.mgr.root().to_path_buf(), VolumeKind::Loop);
    again.create("c", size).unwrap();
    assert_eq!(fs::metadata(&tpl).unwrap().ino(), before.ino());
    again.delete("c").unwrap();
}

#[test]
fn copies_have_distinct_uuids_and_fsck_clean() {
    if !has_loop() {
        return;
    }
    let fx = Fixture::new();
    let size = 4u64 << 30;
    let imgs: Vec<PathBuf> = ["u1", "u2", "u3"]
        .iter()
        .map(|id| fx.mgr.create(id, size).unwrap().image.unwrap())
        .collect();
    let tpl = fx.template(size);
    let mut uuids: Vec<String> = imgs.iter().map(|i| uuid_of(i)).collect();
    uuids.push(uuid_of(&tpl));
    println!("uuids: {uuids:?}");
    let mut unique = uuids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), uuids.len(), "every copy has its own UUID");
    for (img, uuid) in imgs.iter().zip(&uuids) {
        assert_fsck_clean(img);
        // 4 KiB blocks, 32768 per group: backups in groups 1, 3, 5, 7, 9, 25, 27.
        for group in [1u64, 3, 27] {
            assert_eq!(
                &backup_uuid_of(img, group * 32768, 4096),
                uuid,
                "backup superblock of group {group} carries the new UUID"
            );
        }
    }
    assert_fsck_clean(&tpl);

    // The backups are valid superblocks in their own right (checksums
    // included): with the primary destroyed, e2fsck recovers from them
    // and the filesystem keeps the copy's UUID.
    let scratch = fx.mgr.root().join("scratch.img");
    let _rm = RemoveOnDrop(scratch.clone());
    let out = Command::new("cp")
        .args(["--sparse=always"])
        .arg(&imgs[1])
        .arg(&scratch)
        .status()
        .unwrap();
    assert!(out.success());
    let f = fs::OpenOptions::new().write(true).open(&scratch).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 1024], 1024).unwrap();
    drop(f);
    let out = Command::new(tool("e2fsck"))
        .arg("-fy")
        .arg(&scratch)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "e2fsck -fy from a backup: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(uuid_of(&scratch), uuids[1]);

    // The copies mount and hold data; after use they are still clean.
    let mnt = fx.mgr.mount("u1").unwrap();
    fs::write(mnt.join("f"), "data").unwrap();
    fx.mgr.unmount("u1").unwrap();
    assert!(wait_no_loop(&imgs[0]).is_empty());
    assert_fsck_clean(&imgs[0]);
    let mnt = fx.mgr.mount("u1").unwrap();
    assert_eq!(fs::read_to_string(mnt.join("f")).unwrap(), "data");
}

#[test]
fn another_size_gets_its_own_template_and_exact_limit() {
    if !has_loop() {
        return;
    }
    let fx = Fixture::new();
    let big = fx.mgr.create("big", 4 << 30).unwrap();
    // 64 MiB formats with 1 KiB blocks: other superblock backup offsets.
    let small = fx.mgr.create("small", 64 << 20).unwrap();
    assert!(fx.template(4 << 30).exists());
    assert!(fx.template(64 << 20).exists());
    assert_eq!(
        fs::metadata(small.image.as_ref().unwrap()).unwrap().len(),
        64 << 20
    );
    assert_ne!(
        uuid_of(big.image.as_ref().unwrap()),
        uuid_of(small.image.as_ref().unwrap())
    );
    assert_fsck_clean(small.image.as_ref().unwrap());
    // 1 KiB blocks, 8192 per group, first data block 1: backups at 8193, ...
    let small_uuid = uuid_of(small.image.as_ref().unwrap());
    for group in [1u64, 3, 7] {
        assert_eq!(
            backup_uuid_of(small.image.as_ref().unwrap(), group * 8192 + 1, 1024),
            small_uuid,
            "backup superblock of group {group}"
        );
    }
    let second = fx.mgr.create("small2", 64 << 20).unwrap();
    assert_ne!(
        uuid_of(small.image.as_ref().unwrap()),
        uuid_of(second.image.as_ref().unwrap())
    );
    assert_fsck_clean(second.image.as_ref().unwrap());

    let mnt = fx.mgr.mount("small").unwrap();
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", mnt.join("fill").display()))
        .args(["bs=1M", "count=100", "conv=fsync"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("No space left on device"),
        "a 64 MiB volume refuses 100 MiB: {stderr}"
    );
    let info = fx.mgr.info("small").unwrap();
    assert!(info.used_bytes <= 64 << 20, "used {}", info.used_bytes);
    assert!(
        info.used_bytes > 48 << 20,
        "the limit is the requested size, not less: used {}",
        info.used_bytes
    );
}

#[test]
fn a_copy_lost_in_a_crash_is_made_again_but_a_used_volume_is_kept() {
    if !has_loop() {
        return;
    }
    let fx = Fixture::new();
    // Never mounted, and its data "never reached the disk": all zeros.
    let lost = fx.mgr.create("lost", 64 << 20).unwrap().image.unwrap();
    let f = fs::OpenOptions::new().write(true).open(&lost).unwrap();
    f.set_len(0).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    pretend_made_in_another_boot(&fx.mgr, "lost");
    let mnt = fx
        .mgr
        .mount("lost")
        .expect("the lost image is copied again");
    fs::write(mnt.join("f"), "x").unwrap();
    fx.mgr.unmount("lost").unwrap();
    assert!(wait_no_loop(&lost).is_empty());
    assert_fsck_clean(&lost);

    // Mounted once: its data is real and must never be replaced.
    let used = fx.mgr.create("used", 64 << 20).unwrap().image.unwrap();
    let mnt = fx.mgr.mount("used").unwrap();
    fs::write(mnt.join("keep"), "precious").unwrap();
    fx.mgr.unmount("used").unwrap();
    assert!(wait_no_loop(&used).is_empty());
    pretend_made_in_another_boot(&fx.mgr, "used");
    let mnt = fx.mgr.mount("used").unwrap();
    assert_eq!(fs::read_to_string(mnt.join("keep")).unwrap(), "precious");

    // Same boot, never mounted: used as is (no copy on the hot path).
    let fresh = fx.mgr.create("fresh", 64 << 20).unwrap().image.unwrap();
    let ino = fs::metadata(&fresh).unwrap().ino();
    fx.mgr.mount("fresh").unwrap();
    assert_eq!(fs::metadata(&fresh).unwrap().ino(), ino);
}

#[test]
fn a_broken_template_is_formatted_again() {
    if !has_loop() {
        return;
    }
    let fx = Fixture::new();
    fx.mgr.create("one", 64 << 20).unwrap();
    let tpl = fx.template(64 << 20);
    // Clobber the superblock.
    let f = fs::OpenOptions::new().write(true).open(&tpl).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 2048], 0).unwrap();
    drop(f);
    let two = fx.mgr.create("two", 64 << 20).unwrap().image.unwrap();
    assert_fsck_clean(&two);
    assert_fsck_clean(&tpl);
    fx.mgr.mount("two").unwrap();

    // Removing the whole cache is fine too.
    fs::remove_dir_all(fx.mgr.root().join(".templates")).unwrap();
    let three = fx.mgr.create("three", 64 << 20).unwrap().image.unwrap();
    assert_fsck_clean(&three);
}
