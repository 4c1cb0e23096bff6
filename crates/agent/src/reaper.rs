//! Zombie reaping. All `waitpid` calls of the agent happen here, in one
//! place; statuses of processes the agent started are handed to their
//! supervisors, those of adopted orphans are discarded.

use tokio::signal::unix::Signal;

use crate::registry;

/// Reaps every exited child now.
pub fn reap_all() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if !registry::with(|r| r.on_reaped(pid as u32, status)) {
            crate::debug!("reaped orphan {pid} (status {status:#x})");
        }
    }
}

/// Reaps on every SIGCHLD; `sigchld` must be registered before the first spawn.
pub async fn run(mut sigchld: Signal) {
    loop {
        reap_all();
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}
