//! The pid file of a sandbox: `<pid> <start time>`, where the start time
//! (field 22 of /proc/<pid>/stat, in clock ticks since boot) guards against
//! a recycled pid being taken for the sandbox's PID 1.

use std::io;
use std::path::Path;

use crate::error::Context;
use crate::Result;

/// The start time of `pid`, or `None` if it does not exist or is dead (a
/// zombie waiting to be reaped counts as dead).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: the
    // fields after it start past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    if matches!(fields.next(), Some("Z") | Some("X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The recorded pid, alive or not (for reaping).
pub fn recorded_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// Collect the exit status of `pid` if it is our child (the daemon is the
/// child subreaper of the sandboxes it starts), so a stopped sandbox leaves
/// no zombie. Returns at once for processes that are not our children.
pub fn reap(pid: i32) {
    for _ in 0..200 {
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with WNOHANG; status is ours.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r != 0 {
            return; // reaped, or ECHILD: not our child
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Write `<pid> <start time>` atomically.
pub fn write(path: &Path, pid: i32) -> Result<()> {
    let start = start_time(pid).ok_or_else(|| {
        crate::Error::Start(format!(
            "the sandbox's agent (PID 1, host pid {pid}) exited right after starting"
        ))
    })?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{pid} {start}\n"))
        .context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).context(|| format!("renaming to {}", path.display()))
}

/// The recorded pid if that very process is still alive.
pub fn live_pid(path: &Path) -> Result<Option<i32>> {
    let content = match std::fs::read_to_string(path) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(|| format!("reading {}", path.display())),
    };
    let mut it = content.split_whitespace();
    let pid: Option<i32> = it.next().and_then(|s| s.parse().ok());
    let start: Option<u64> = it.next().and_then(|s| s.parse().ok());
    match (pid, start) {
        (Some(pid), Some(start)) if pid > 0 && start_time(pid) == Some(start) => Ok(Some(pid)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_pid_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pid");
        let me = std::process::id() as i32;
        write(&p, me).unwrap();
        assert_eq!(live_pid(&p).unwrap(), Some(me));
        std::fs::write(&p, format!("{me} 1\n")).unwrap();
        assert_eq!(
            live_pid(&p).unwrap(),
            None,
            "start time mismatch = pid reuse"
        );
        assert_eq!(live_pid(&dir.path().join("none")).unwrap(), None);
    }
}
