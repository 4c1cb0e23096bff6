//! Helpers shared by the storage integration tests: what they need of the
//! machine (root, loop devices), mounts and loop devices, and guards.
#![allow(dead_code)]

use std::path::Path;

/// What the storage tests need root for (see `dwell_testkit::has_root`).
pub const NEEDS: &str = "mounts, loop devices, trusted xattrs";

/// True when running as root; otherwise prints why the test is skipped.
pub fn is_root() -> bool {
    dwell_testkit::has_root(NEEDS)
}

/// True when loop devices can be used; otherwise prints why not.
pub fn has_loop() -> bool {
    if !is_root() {
        return false;
    }
    if !Path::new("/dev/loop-control").exists() {
        dwell_testkit::skip("no /dev/loop-control on this machine");
        return false;
    }
    true
}

/// Whether `path` is a mount point in this mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want))
}

/// Loop devices currently backed by `file`.
pub fn loops_for(file: &Path) -> Vec<String> {
    dwell_storage::loop_bindings()
        .into_iter()
        .filter(|b| b.backing_file == file)
        .map(|b| b.device.display().to_string())
        .collect()
}

/// Waits (up to 3 s) until no loop device is backed by `file`.
pub fn wait_no_loop(file: &Path) -> Vec<String> {
    for _ in 0..60 {
        let l = loops_for(file);
        if l.is_empty() {
            return l;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    loops_for(file)
}

/// Unmounts `path` (lazily) when dropped.
pub struct MountGuard(pub std::path::PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: valid C string.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}
