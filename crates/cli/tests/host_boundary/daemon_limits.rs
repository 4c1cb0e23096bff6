//! (filled by the daemon_limits work of issue 11)
