//! Volume tests against real loop devices and ext4 (run as root).

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use common::{has_loop, is_mounted, is_root, loops_for, wait_no_loop};
use dwell_storage::{StorageError, VolumeKind, VolumeManager};

/// A manager on a temporary root; deletes every volume it made on drop.
struct Fixture {
    mgr: VolumeManager,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(kind: VolumeKind) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dwell-vol-test")
            .tempdir_in("/var/tmp")
            .unwrap();
        let mgr = VolumeManager::with_kind(dir.path().join("volumes"), kind);
        Fixture { mgr, _dir: dir }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for id in self.mgr.list().unwrap_or_default() {
            let _ = self.mgr.delete(&id);
        }
    }
}

/// Kills and reaps a child process on drop.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `child` runs in a mount namespace of its own (it then holds
/// copies of our mounts).
fn wait_for_own_namespace(child: &std::process::Child) {
    let ns = PathBuf::from(format!("/proc/{}/ns/mnt", child.id()));
    let me = fs::read_link("/proc/self/ns/mnt").unwrap();
    for _ in 0..250 {
        if fs::read_link(&ns).map(|l| l != me).unwrap_or(false) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("child never entered its own mount namespace");
}

#[test]
fn create_mount_write_remount_delete() {
    if !has_loop() {
        return;
    }
    let fx = Fixture::new(VolumeKind::Loop);
    let t = Instant::now();
    let info = fx.mgr.create("v1", 4 << 30).unwrap();
    let took = t.elapsed();
    println!("create of a 4 GiB volume took {took:?}");
    assert!(took.as_millis() < 2000, "create too slow: {took:?}");
    assert_eq!(info.kind, VolumeKind::Loop);
    assert_eq!(info.size_bytes, 4 << 30);
    assert!(!info.mounted);
    assert!(info.limit_enforced);
    let img = info.image.clone().unwrap();
    assert!(
        info.used_bytes < 64 << 20,
        "image should be sparse, uses {}",
        info.used_bytes
    );
    assert!(matches!(
        fx.mgr.create("v1", 64 << 20),
        Err(StorageError::VolumeExists(_))
    ));

    let mnt = fx.mgr.mount("v1").unwrap();
    assert_eq!(mnt, fx.mgr.mount("v1").unwrap(), "mount is idempotent");
    assert!(is_mounted(&mnt));
    assert_eq!(loops_for(&img).len(), 1, "exactly one loop device");
    fs::write(mnt.join("hello.txt"), "persist-me-7f3a").unwrap();
    let info = fx.mgr.info("v1").unwrap();
    assert!(info.mounted);
    assert!(info.used_bytes > 0);

    fx.mgr.unmount("v1").unwrap();
    fx.mgr.unmount("v1").unwrap();
    assert!(!is_mounted(&mnt));
    assert!(!fx.mgr.info("v1").unwrap().mounted);
    assert!(wait_no_loop(&img).is_empty(), "loop device autocleared");

    let mnt = fx.mgr.mount("v1").unwrap();
    assert_eq!(
        fs::read_to_string(mnt.join("hello.txt")).unwrap(),
        "persist-me-7f3a"
    );
    assert_eq!(fx.mgr.list().unwrap(), vec!["v1".to_string()]);

    fx.mgr.delete("v1").unwrap();
    fx.mgr.delete("v1").unwrap();
    assert!(!is_mounted(&mnt));
    assert!(!mnt.exists());
    assert!(wait_no_loop(&img).is_empty(), "no loop device left");
    assert!(fx.mgr.list().unwrap().is_empty());
    assert!(matches!(
        fx.mgr.info("v1"),
        Err(StorageError::VolumeNotFound(_))
    ));

    // A new volume under the same id shows nothing of the old one.
    fx.mgr.create("v1", 64 << 20).unwrap();
    let mnt = fx.mgr.mount("v1").unwrap();
    assert!(!mnt.join("hello.txt").exists());
    let raw = fs::read(&img).unwrap();
    assert!(!raw
        .windows(b"persist-me-7f3a".len())
        .any(|w| w == b"persist-me-7f3a"));
    assert!(
        fx.mgr.stray_loops().is_empty(),
        "{:?}",
        fx.mgr.stray_loops()
    );
}

#[test]
fn writing_past_the_limit_gives_enospc() {
    if !has_loop() {
        return;
    }
    let fx = Fixture::new(VolumeKind::Loop);
    fx.mgr.create("small", 64 << 20).unwrap();
    let mnt = fx.mgr.mount("small").unwrap();
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", mnt.join("big").display()))
        .args(["bs=1M", "count=100", "conv=fsync"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "dd must fail: {stderr}");
    assert!(
        stderr.contains("No space left on device"),
        "dd must see ENOSPC: {stderr}"
    );
    let info = fx.mgr.info("small").unwrap();
    assert!(info.used_bytes <= info.size_bytes);
    // The host is fine: writing next to the volume works.
    let beside = fx.mgr.root().join("beside.txt");
    fs::write(&beside, vec![7u8; 1 << 20]).unwrap();
    fs::remove_file(&beside).unwrap();
    // And the volume recovers once space is freed.
    fs::remove_file(mnt.join("big")).unwrap();
    fs::write(mnt.join("after.txt"), "ok").unwrap();
    let img = info.image.unwrap();
    fx.mgr.delete("small").unwrap();
    assert!(wait_no_loop(&img).is_empty());
}

#[test]
fn delete_works_while_another_namespace_holds_the_mount() {
    if !has_loop() {
        return;
    }
    let fx = Fixture::new(VolumeKind::Loop);
    let info = fx.mgr.create("held", 64 << 20).unwrap();
    let img = info.image.unwrap();
    let mnt = fx.mgr.mount("held").unwrap();
    fs::write(mnt.join("f"), "x").unwrap();
    let child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sleep", "60"])
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    wait_for_own_namespace(&child.0);
    let theirs = fs::read_to_string(format!("/proc/{}/mountinfo", child.0.id())).unwrap();
    assert!(
        theirs.contains(mnt.to_str().unwrap()),
        "the other namespace holds a copy of the mount"
    );
    fx.mgr.delete("held").unwrap();
    assert!(!mnt.exists());
    assert!(fx.mgr.list().unwrap().is_empty());
    let _ = child.0.kill();
    let _ = child.0.wait();
    assert!(wait_no_loop(&img).is_empty(), "loop device left behind");
}

/// A process still exiting (a sandbox's, runsc's gofer) may hold a file of
/// the volume open for a moment, which keeps the lazily unmounted
/// filesystem and its loop device alive: delete returns once the kernel has
/// detached the device, so nothing is left for whoever checks right after.
#[test]
fn delete_returns_once_the_loop_device_is_detached() {
    if !has_loop() {
        return;
    }
    let fx = Fixture::new(VolumeKind::Loop);
    fx.mgr.create("brief", 64 << 20).unwrap();
    let mnt = fx.mgr.mount("brief").unwrap();
    let held = fs::File::create(mnt.join("f")).unwrap();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        drop(held);
    });
    let t0 = Instant::now();
    fx.mgr.delete("brief").unwrap();
    // The image was renamed on its way out: match anything under the root.
    let root = fx._dir.path().canonicalize().unwrap();
    let attached: Vec<_> = dwell_storage::loop_bindings()
        .into_iter()
        .filter(|b| b.backing_file.starts_with(&root))
        .collect();
    assert!(attached.is_empty(), "still attached: {attached:?}");
    assert!(t0.elapsed().as_millis() >= 400, "the file was still open");
    holder.join().unwrap();
}

#[test]
fn remount_reuses_a_device_still_held_elsewhere() {
    if !has_loop() {
        return;
    }
    let fx = Fixture::new(VolumeKind::Loop);
    let img = fx.mgr.create("shared", 64 << 20).unwrap().image.unwrap();
    let mnt = fx.mgr.mount("shared").unwrap();
    fs::write(mnt.join("f"), "one").unwrap();
    let child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sleep", "60"])
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    wait_for_own_namespace(&child.0);
    fx.mgr.unmount("shared").unwrap();
    assert_eq!(
        loops_for(&img).len(),
        1,
        "the other namespace keeps the device"
    );
    fx.mgr.mount("shared").unwrap();
    assert_eq!(
        loops_for(&img).len(),
        1,
        "the held device is reused, not doubled"
    );
    assert_eq!(fs::read_to_string(mnt.join("f")).unwrap(), "one");
    fx.mgr.unmount("shared").unwrap();
    let _ = child.0.kill();
    let _ = child.0.wait();
    assert!(wait_no_loop(&img).is_empty());
    fx.mgr.delete("shared").unwrap();
}

#[test]
fn resize_grows_the_limit() {
    if !has_loop() {
        return;
    }
    let fx = Fixture::new(VolumeKind::Loop);
    fx.mgr.create("g", 32 << 20).unwrap();
    let mnt = fx.mgr.mount("g").unwrap();
    let write = |mib: u32| {
        Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", mnt.join("big").display()))
            .args(["bs=1M", &format!("count={mib}"), "conv=fsync"])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!write(48), "48 MiB must not fit in 32 MiB");
    assert!(
        matches!(fx.mgr.resize("g", 96 << 20), Err(StorageError::Loop(_))),
        "a mounted volume is not resized"
    );
    fx.mgr.unmount("g").unwrap();
    wait_no_loop(&fx.mgr.info("g").unwrap().image.unwrap());
    let info = fx.mgr.resize("g", 96 << 20).unwrap();
    assert_eq!(info.size_bytes, 96 << 20);
    assert!(!info.mounted);
    fx.mgr.mount("g").unwrap();
    assert!(write(48), "48 MiB fits after growing to 96 MiB");
    assert!(matches!(
        fx.mgr.resize("g", 32 << 20),
        Err(StorageError::InvalidSize { .. })
    ));
    let img = info.image.unwrap();
    fx.mgr.delete("g").unwrap();
    assert!(wait_no_loop(&img).is_empty());
}

#[test]
fn bad_requests_leave_nothing_behind() {
    if !is_root() {
        return;
    }
    let fx = Fixture::new(VolumeKind::Loop);
    for id in ["", "../x", "a/b", ".hidden", "with space"] {
        assert!(
            matches!(
                fx.mgr.create(id, 64 << 20),
                Err(StorageError::InvalidName { .. })
            ),
            "{id:?}"
        );
    }
    let e = fx.mgr.create("tiny", 4096).unwrap_err();
    assert!(matches!(e, StorageError::InvalidSize { .. }));
    println!("{e}");
    assert!(matches!(
        fx.mgr.mount("nope"),
        Err(StorageError::VolumeNotFound(_))
    ));
    fx.mgr.delete("nope").unwrap();
    let leftovers: Vec<_> = fs::read_dir(fx.mgr.root())
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn directory_fallback_accounts_usage() {
    let fx = Fixture::new(VolumeKind::Directory);
    let info = fx.mgr.create("d1", 64 << 20).unwrap();
    assert_eq!(info.kind, VolumeKind::Directory);
    assert!(!info.limit_enforced);
    assert!(info.image.is_none());
    let p = fx.mgr.mount("d1").unwrap();
    assert_eq!(p, info.path);
    fs::write(p.join("data"), vec![1u8; 3 << 20]).unwrap();
    let used = fx.mgr.info("d1").unwrap().used_bytes;
    assert!(used >= 3 << 20, "used {used}");
    fx.mgr.unmount("d1").unwrap();
    assert!(p.join("data").exists());
    fx.mgr.delete("d1").unwrap();
    assert!(!p.exists());
    fx.mgr.delete("d1").unwrap();
}
