//! Keeps the agent's idle footprint small: one malloc arena (the blocking
//! pool's threads would otherwise each get their own), and freed memory is
//! handed back to the kernel when a connection ends or a process exits.

/// Called once at startup, before any thread exists.
pub fn init() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns free heap pages to the kernel.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
