//! Crash points for tests: `DWELL_CRASH_AT=<name>` makes the daemon kill
//! itself with SIGKILL when it reaches the named step, so tests can show
//! that a restart finishes or rolls back every half-done operation.
//! `DWELL_PANIC_AT=<name>` makes the task reaching the named step panic
//! instead, so tests can show that a bug cleans up after itself. Unset
//! (always, outside tests), each call is one environment lookup.

/// Die here if `DWELL_CRASH_AT` names this point.
pub fn crashpoint(name: &str) {
    if std::env::var("DWELL_CRASH_AT").ok().as_deref() == Some(name) {
        tracing::error!("DWELL_CRASH_AT={name}: killing the daemon here (test crash point)");
        // SAFETY: kill(2) of our own process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// Panic here if `DWELL_PANIC_AT` names this point.
pub fn panicpoint(name: &str) {
    if std::env::var("DWELL_PANIC_AT").ok().as_deref() == Some(name) {
        panic!("DWELL_PANIC_AT={name}: panicking here (test panic point)");
    }
}
