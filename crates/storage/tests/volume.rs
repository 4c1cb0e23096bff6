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
    // Offline: unmounted and detached.
    fx.mgr.unmount("g").unwrap();
    wait_no_loop(&fx.mgr.info("g").unwrap().image.unwrap());
    let info = fx.mgr.resize("g", 96 << 20).unwrap();
    assert_eq!(info.size_bytes, 96 << 20);
    assert!(!info.mounted);
    let mnt = fx.mgr.mount("g").unwrap();
    assert!(write(48), "48 MiB fits after growing to 96 MiB");
    assert!(matches!(
        fx.mgr.resize("g", 32 << 20),
        Err(StorageError::InvalidSize { .. })
    ));
    // Online: mounted here, the filesystem grows in place (given
    // CAP_SYS_RESOURCE; without it the refusal says so and changes nothing).
    let before = statfs_total(&mnt);
    let img = info.image.unwrap();
    if dwell_storage::has_cap_sys_resource() {
        let info = fx.mgr.resize("g", 256 << 20).unwrap();
        assert!(info.mounted);
        let after = statfs_total(&mnt);
        assert!(
            after > before + (128 << 20),
            "online growth: {before} -> {after} bytes"
        );
    } else {
        let e = fx.mgr.resize("g", 256 << 20).unwrap_err().to_string();
        assert!(e.contains("CAP_SYS_RESOURCE"), "{e}");
        assert_eq!(fx.mgr.info("g").unwrap().size_bytes, 96 << 20);
        assert_eq!(fs::metadata(&img).unwrap().len(), 96 << 20);
        assert_eq!(statfs_total(&mnt), before);
    }
    assert!(mnt.join("big").is_file(), "data survives the online resize");
    fx.mgr.delete("g").unwrap();
    assert!(wait_no_loop(&img).is_empty());
}

/// Total bytes of the filesystem mounted at `p`.
fn statfs_total(p: &std::path::Path) -> u64 {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    st.f_blocks as u64 * st.f_frsize as u64
}

/// The top of the named-volume range: a 64 TiB volume is made and mounted
/// without writing data. The image is sparse (the ext4 metadata of
/// 64 TiB is about 1 GiB), so it lives on tmpfs (/dev/shm), whose files may
/// be that large; an ext4 data dir cannot hold it (files end at 16 TiB) and
/// says so.
#[test]
fn sixty_four_tib_on_a_filesystem_that_holds_it() {
    if !has_loop() {
        return;
    }
    const TIB: u64 = 1 << 40;
    let shm = std::path::Path::new("/dev/shm");
    let free = {
        let c = std::ffi::CString::new("/dev/shm").unwrap();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            0
        } else {
            st.f_bavail as u64 * st.f_frsize as u64
        }
    };
    if free < 4 << 30 {
        eprintln!("SKIP: /dev/shm has less than 4 GiB free for the 64 TiB volume's metadata");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("dwell-vol-64t")
        .tempdir_in(shm)
        .unwrap();
    let mgr = VolumeManager::with_kind(dir.path().join("volumes"), VolumeKind::Loop)
        .with_max_size(dwell_storage::MAX_NAMED_VOLUME_SIZE)
        .without_template_cache();
    struct Cleanup<'a>(&'a VolumeManager);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            for id in self.0.list().unwrap_or_default() {
                let _ = self.0.delete(&id);
            }
        }
    }
    let _c = Cleanup(&mgr);
    // Past the top is refused with the range.
    let e = mgr.create("over", 64 * TIB + 4096).unwrap_err();
    assert!(e.to_string().contains("64 TiB"), "{e}");
    // The top itself: made, mounted, written to, without filling it.
    let info = mgr.create("big", 64 * TIB).unwrap();
    assert_eq!(info.size_bytes, 64 * TIB);
    // No template (its ~1 GiB of metadata) stays behind.
    let templates: Vec<_> = fs::read_dir(mgr.root().join(".templates"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(templates.is_empty(), "{templates:?}");
    let mnt = mgr.mount("big").unwrap();
    let total = statfs_total(&mnt);
    assert!(total > 63 * TIB, "a 64 TiB ext4: {total}");
    fs::write(mnt.join("hello"), b"hi").unwrap();
    assert!(mgr.resize("big", 64 * TIB + 4096).is_err(), "past the top");
    let img = info.image.unwrap();
    mgr.delete("big").unwrap();
    assert!(wait_no_loop(&img).is_empty());
    // The same range on an ext4 data dir (when /var/tmp is ext4): refused
    // with the reason and the fix.
    let fx = Fixture::new(VolumeKind::Loop);
    let mgr = VolumeManager::with_kind(fx.mgr.root().to_path_buf(), VolumeKind::Loop)
        .with_max_size(dwell_storage::MAX_NAMED_VOLUME_SIZE);
    match mgr.create("huge", 20 * TIB) {
        Err(e @ StorageError::InvalidSize { .. }) => {
            assert!(e.to_string().contains("16 TiB"), "{e}");
            assert!(mgr.list().unwrap().is_empty());
        }
        Ok(_) => {
            // /var/tmp is not ext4 here: it held the file.
            mgr.delete("huge").unwrap();
        }
        Err(e) => panic!("{e}"),
    }
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

/// The options of the mount at `mnt`, from /proc/self/mountinfo (mount
/// options, then superblock options).
fn mount_opts(mnt: &std::path::Path) -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let at = mnt.to_str().unwrap();
    info.lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(at))
        .map(|l| l.split(' ').nth(5).unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("{at} is not mounted"))
}

/// Runs `prog` as uid/gid 65534 and returns what it prints (`id -u`).
fn euid_as_nobody(prog: &std::path::Path) -> String {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(prog)
        .arg("-u")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Review 14 F11: a setuid-root program a sandbox writes into a named
/// volume (sandbox root is uid 0 on disk) is inert host-side: the volume is
/// mounted nosuid,nodev. The same program on a volume mounted without the
/// flag does run as root, so the check can fail.
#[test]
fn nosuid_volumes_make_setuid_files_inert() {
    if !has_loop() || !std::path::Path::new("/usr/bin/setpriv").exists() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("dwell-vol-test")
        .tempdir_in("/var/tmp")
        .unwrap();
    let mut fxs = Vec::new();
    for (name, nosuid) in [("plain", false), ("named", true)] {
        let root = dir.path().join(name);
        let mut mgr = VolumeManager::with_kind(root.clone(), VolumeKind::Loop);
        if nosuid {
            mgr = mgr.with_nosuid();
        }
        mgr.create("v", 64 << 20).unwrap();
        let fx = Fixture {
            mgr,
            _dir: tempfile::tempdir().unwrap(),
        };
        let mnt = fx.mgr.mount("v").unwrap();
        // Let uid 65534 reach the program (the data dir is 0700 in real
        // use; this test checks the mount, not the directory modes).
        let mut p = mnt.clone();
        while p != std::path::Path::new("/var/tmp") {
            let mut perm = fs::metadata(&p).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
            fs::set_permissions(&p, perm).unwrap();
            p.pop();
        }
        let prog = mnt.join("suid-id");
        fs::copy("/usr/bin/id", &prog).unwrap();
        std::os::unix::fs::chown(&prog, Some(0), Some(0)).unwrap();
        fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
        let opts = mount_opts(&mnt);
        let o: Vec<&str> = opts.split(',').collect();
        assert!(o.contains(&"nodev"), "{name}: {opts}");
        let euid = euid_as_nobody(&prog);
        if nosuid {
            assert!(o.contains(&"nosuid"), "{name}: {opts}");
            assert_eq!(euid, "65534", "setuid file on a nosuid volume ran as root");
        } else {
            assert_eq!(euid, "0", "control: setuid should work without nosuid");
        }
        fxs.push(fx);
    }
}
