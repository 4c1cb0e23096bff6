//! Reaping what runsc leaves behind. `runsc run --detach` and `restore
//! --detach` exit while the sandbox and gofer processes they started live
//! on; those are reparented to the nearest subreaper, which is the daemon
//! (`dwell serve` is one for the namespace runtime). When a sandbox ends
//! (checkpoint, delete) they become zombies of the daemon, and runsc,
//! which checks whether the sandbox pid is still alive, then waits for a
//! zombie forever. So every runsc call reaps them while it waits.
//!
//! Only zombies that are our children and run runsc's re-executed binary
//! (command name `exe`, from `/proc/self/exe`) are reaped, by pid: the exit
//! status of processes we spawned ourselves (`runsc`, tools) is never
//! taken from their `Child` handles.

/// Reap every zombie child of this process whose command name is `exe`.
pub fn reap_runsc_zombies() {
    let me = std::process::id().to_string();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parens.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let mut rest = stat[close + 1..].split_whitespace();
        let (state, ppid) = (rest.next(), rest.next());
        if comm == "exe" && state == Some("Z") && ppid == Some(me.as_str()) {
            // SAFETY: waitpid on a specific pid that is our zombie child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        }
    }
}
