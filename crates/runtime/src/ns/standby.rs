//! The warm-pool side of the boot process ("standby"): a boot process the
//! daemon starts ahead of time (see [`super::pool`]). It creates its own
//! v1 cgroups `<parent>/pool.<hex>` and moves itself in, paying the slow
//! first migration before any sandbox is asked for, compiles the seccomp
//! filters, prints `ready`, and
//! blocks reading one line from stdin:
//!
//! - a state dir: it boots that sandbox exactly like a fresh boot process,
//!   except that its pool cgroups are renamed to the sandbox's
//!   ([`super::boot::Placement::Pooled`]), reports like a fresh boot
//!   process and exits;
//! - end of file (the daemon dropped the pool, or died, even by SIGKILL):
//!   it leaves and removes its cgroups and exits.
//!
//! stdin, stdout and stderr are one unix socket to the daemon. Its write
//! side is shut down right after the report, so the daemon reads the whole
//! report without waiting for this process to exit.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::boot::{self, Placement};
use crate::host::cgroup::v1::V1Group;
use crate::host::cgroup::HostCgroups;

/// Environment variable that makes [`super::boot_main`] a standby; its
/// value is the pool cgroup relative to the hierarchy roots
/// (`<parent>/pool.<hex>`).
pub const POOL_ENV: &str = "DWELL_NS_POOL";
/// What a standby prints once it sits in its cgroups.
pub const READY: &str = "ready";

/// Run as a standby for the pool cgroup `rel`. Returns the exit code.
pub fn main(rel: &Path) -> i32 {
    // Own session: signals for the daemon's process group miss us.
    // SAFETY: plain syscall; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
    let host = match HostCgroups::detect() {
        Ok(h) => h,
        Err(e) => return boot::report(Err(e)),
    };
    let group = (!host.v1.is_empty()).then(|| V1Group::new(&host.v1, rel));
    if let Some(g) = &group {
        let me = std::process::id() as i32;
        if let Err(e) = g.create_dirs().and_then(|_| g.add_process(me)) {
            cleanup(&host, group.as_ref());
            return boot::report(Err(e));
        }
    }
    // Compiled now, not on the start path: PID 1 is a fork of this process.
    super::seccomp::warm();
    let mut out = std::io::stdout();
    if writeln!(out, "{READY}").and_then(|_| out.flush()).is_err() {
        cleanup(&host, group.as_ref());
        return 1;
    }
    let mut line = String::new();
    let got = std::io::stdin().lock().read_line(&mut line);
    let dir = line.trim_end_matches('\n');
    let code = match got {
        Ok(n) if n > 0 && !dir.is_empty() => {
            let code = boot::report(boot::boot(
                Path::new(dir),
                Placement::Pooled(group.as_ref()),
                Some(&host),
            ));
            // The report is all the daemon waits for: end it now, so the
            // daemon goes on while this process exits (tearing down the
            // daemon binary's mappings takes a while).
            // SAFETY: shutdown(2) of our own stdout socket.
            unsafe { libc::shutdown(1, libc::SHUT_WR) };
            code
        }
        _ => 0,
    };
    cleanup(&host, group.as_ref());
    code
}

/// Remove what is left of the pool cgroups: nothing after a rename, empty
/// directories after a boot that had to migrate, or the cgroups this
/// process still sits in (then it moves to the roots first).
fn cleanup(host: &HostCgroups, group: Option<&V1Group>) {
    let Some(g) = group else { return };
    let busy: Vec<PathBuf> = g
        .dirs()
        .into_iter()
        .filter(|d| d.exists() && std::fs::remove_dir(d).is_err())
        .collect();
    if busy.is_empty() {
        return;
    }
    host.move_to_root(std::process::id() as i32);
    for d in busy {
        let _ = crate::host::cgroup::rmdir(&d);
    }
}
