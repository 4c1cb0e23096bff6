//! A shell counter kept in a sandbox's memory, written to /root/n every
//! 50 ms: it only keeps counting across a hibernation (or a move to another
//! daemon) if memory and processes survive.

use super::{wait_for, Daemon};

/// The counter's script.
pub const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /root/n; sleep 0.05; done";

/// The counter's value.
pub fn counter(d: &Daemon, sb: &str) -> u64 {
    read_number(d, sb, "/root/n")
}

/// The number a shell loop keeps writing to `path` in `sb`. The shell
/// truncates the file before each write, so a read can land in between
/// and see it empty: read again then.
pub fn read_number(d: &Daemon, sb: &str, path: &str) -> u64 {
    for _ in 0..50 {
        if let Ok(n) = d.sh(sb, &format!("cat {path}")).trim().parse() {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{path} never held a number");
}

/// Start the counter in the background (tagged `counter`) and wait for its
/// first value.
pub fn start_counter(d: &Daemon, sb: &str) {
    d.ok(&[
        "exec", "-d", "--tag", "counter", sb, "--", "sh", "-c", COUNTER,
    ]);
    wait_for(10, "the counter", || {
        d.run(&["exec", sb, "--", "test", "-s", "/root/n"])
            .status
            .success()
    });
}
