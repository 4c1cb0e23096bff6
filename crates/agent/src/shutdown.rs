//! SIGTERM / SIGINT: stop every process gracefully, then exit.
//!
//! As PID 1 the whole sandbox is signalled (`kill(-1)`); otherwise only the
//! process groups the agent started. Processes get a grace period after
//! SIGTERM, then SIGKILL.

use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::{pump, reaper, registry};

/// Time processes get between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(3);

fn terminate_all(sig: i32) {
    if std::process::id() == 1 {
        // SAFETY: kill(-1) signals every process we may signal, never PID 1 itself.
        unsafe { libc::kill(-1, sig) };
    } else {
        for pid in registry::with(|r| r.running_pids()) {
            pump::kill_group(pid, sig);
        }
    }
}

fn anything_left() -> bool {
    if std::process::id() == 1 {
        // Any child left? waitid says ECHILD when there is none.
        // SAFETY: WNOHANG|WNOWAIT only peeks; a null infop is allowed on Linux.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                std::ptr::null_mut(),
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        !(r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
    } else {
        registry::with(|r| r.running_count()) > 0
    }
}

/// Waits for SIGTERM or SIGINT, then shuts down; `cleanup` runs before exit.
pub async fn run(cleanup: impl FnOnce()) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        crate::error!("cannot install SIGTERM/SIGINT handlers; shutdown by signal disabled");
        return std::future::pending().await;
    };
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    crate::debug!("{which}: stopping all processes");
    crate::service::shutting_down();
    terminate_all(libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + GRACE;
    while anything_left() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        reaper::reap_all();
    }
    terminate_all(libc::SIGKILL);
    reaper::reap_all();
    cleanup();
    std::process::exit(0);
}
