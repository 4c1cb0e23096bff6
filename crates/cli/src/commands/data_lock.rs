//! One daemon per data dir. `dwell serve` holds an exclusive `flock(2)` on
//! `<data-dir>/daemon.lock` for as long as it runs; the kernel drops it when
//! the process ends, however it ends (SIGKILL included), so a crashed
//! daemon never blocks the next start. Two daemons on one data dir would
//! both adopt and reconcile the same sandboxes, volumes and database: the
//! second one is refused before it touches anything.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The lock's file name in the data dir.
pub const FILE: &str = "daemon.lock";

/// How long a start waits for the lock: a daemon killed a moment ago may
/// leave a child between fork and exec that still shares the lock's
/// descriptor for a few milliseconds.
const WAIT: Duration = Duration::from_secs(3);

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Takes the data dir's lock, or says which daemon holds it.
pub fn acquire(data_dir: &Path) -> Result<DataDirLock> {
    let path = data_dir.join(FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("cannot open the data dir's lock {}", path.display()))?;
    let t0 = Instant::now();
    loop {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
        if t0.elapsed() >= WAIT {
            bail!(
                "another dwell daemon{} uses the data dir {}; stop it first, or give this one \
                 another --data-dir (and --socket)",
                holder(&mut file)
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default(),
                data_dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(DataDirLock { _file: file })
}

/// The pid the holder wrote (for the refusal only; a few bytes at most).
fn holder(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.rewind().ok()?;
    file.take(16).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_the_lock_is_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        // flock locks belong to the open file: a second open conflicts
        // even in the same process.
        let e = acquire(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("(pid {})", std::process::id()))
                && e.contains("another --data-dir"),
            "{e}"
        );
        drop(first);
        acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_symlink_in_its_place_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, dir.path().join(FILE)).unwrap();
        assert!(acquire(dir.path()).is_err());
        assert!(!target.exists());
    }
}
