//! A live sandbox's status read from runsc's own state file, without
//! running runsc. Every `runsc state` costs 20-40 ms (a Go binary starting
//! up), and the daemon observes a sandbox before each transition and every
//! sandbox on each resync: a hibernate used to spend two of them before
//! doing anything.
//!
//! Only a positive answer is trusted. The file (`<root>/<id>_sandbox:<id>.state`,
//! JSON) names the sandbox process; that process must be alive, not a
//! zombie, and be this sandbox: runsc's re-executed binary (`exe`), booted
//! under our root for this id. Anything else (no file, another file
//! layout, a dead or reused pid, a status other than running or paused)
//! yields `None`, and the caller asks runsc, whose answer is authoritative.
//! A sandbox started from the warm pool (see `super::claim`) always gets
//! `None`: its runsc sandbox outlives its container (the pool's placeholder
//! keeps it up), so a live sandbox process says nothing about the container.

use std::path::Path;

use serde::Deserialize;

#[derive(Deserialize)]
struct StateFile {
    status: String,
    sandbox: Option<SandboxPart>,
}

#[derive(Deserialize)]
struct SandboxPart {
    pid: i32,
}

/// `running` or `paused` when runsc's state file says so and the sandbox
/// process it names is alive; `None` when that cannot be told for sure.
pub fn live_status(root: &Path, id: &str) -> Option<String> {
    let text = std::fs::read_to_string(root.join(format!("{id}_sandbox:{id}.state"))).ok()?;
    status_if_live(&text, |pid| is_sandbox_process(pid, root, id))
}

/// The status runsc recorded for container `id` (`running` or `paused`),
/// whichever runsc sandbox holds it, without checking any process: for a
/// sandbox whose cgroup is frozen (dozing or paused), whose processes are
/// there but cannot answer a runsc call (`runsc state` of a frozen pooled
/// sandbox hangs). `None` when no such file says so.
pub fn recorded_status(root: &Path, id: &str) -> Option<String> {
    let prefix = format!("{id}_sandbox:");
    let rd = std::fs::read_dir(root).ok()?;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(&prefix) && name.ends_with(".state")) {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).ok()?;
        let state: StateFile = serde_json::from_str(&text).ok()?;
        return (state.status == "running" || state.status == "paused").then_some(state.status);
    }
    None
}

/// The status in state file `text` when it is `running` or `paused` and
/// `is_sandbox` says the pid it names is the live sandbox.
fn status_if_live(text: &str, is_sandbox: impl FnOnce(i32) -> bool) -> Option<String> {
    let state: StateFile = serde_json::from_str(text).ok()?;
    if state.status != "running" && state.status != "paused" {
        return None;
    }
    let pid = state.sandbox?.pid;
    (pid > 0 && is_sandbox(pid)).then_some(state.status)
}

/// Whether `pid` is alive (not a zombie) and is runsc's sandbox process
/// for `id` under `root`.
fn is_sandbox_process(pid: i32, root: &Path, id: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`; comm may hold spaces and parens.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let state = stat[close + 1..].split_whitespace().next();
    if &stat[open + 1..close] != "exe" || matches!(state, Some("Z" | "X" | "x") | None) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    let want_root = format!("--root={}", root.display());
    args.contains(&want_root.as_bytes())
        && args.contains(&b"boot".as_slice())
        && args.last() == Some(&id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(id: &str, body: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(format!("{id}_sandbox:{id}.state")), body).unwrap();
        d
    }

    #[test]
    fn the_recorded_status_is_found_whichever_sandbox_holds_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, status: &str| {
            std::fs::write(
                dir.path().join(name),
                format!(r#"{{"status":"{status}","sandbox":{{"pid":1}}}}"#),
            )
            .unwrap()
        };
        write("sb1_sandbox:gvpool.ab.state", "paused");
        write("sb2_sandbox:sb2.state", "running");
        write("sb3_sandbox:sb3.state", "stopped");
        assert_eq!(
            recorded_status(dir.path(), "sb1").as_deref(),
            Some("paused")
        );
        assert_eq!(
            recorded_status(dir.path(), "sb2").as_deref(),
            Some("running")
        );
        assert_eq!(recorded_status(dir.path(), "sb3"), None);
        assert_eq!(recorded_status(dir.path(), "sb"), None);
    }

    #[test]
    fn no_file_or_another_format_is_unknown() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(live_status(d.path(), "a"), None);
        let d = root_with("a", "not json");
        assert_eq!(live_status(d.path(), "a"), None);
        let d = root_with("a", r#"{"status":"running"}"#);
        assert_eq!(live_status(d.path(), "a"), None);
    }

    #[test]
    fn only_running_or_paused_with_a_live_sandbox_is_answered() {
        let file = |status: &str| format!(r#"{{"status":"{status}","sandbox":{{"pid":42}}}}"#);
        let live = |pid: i32| pid == 42;
        assert_eq!(
            status_if_live(&file("running"), live).as_deref(),
            Some("running")
        );
        assert_eq!(
            status_if_live(&file("paused"), live).as_deref(),
            Some("paused")
        );
        assert_eq!(status_if_live(&file("stopped"), live), None);
        assert_eq!(status_if_live(&file("created"), live), None);
        assert_eq!(status_if_live(&file("running"), |_| false), None);
        let no_pid = r#"{"status":"running","sandbox":{"pid":0}}"#;
        assert_eq!(status_if_live(no_pid, |_| true), None);
    }

    #[test]
    fn a_pid_that_is_not_the_sandbox_is_unknown() {
        // Our own pid is alive but is not runsc's sandbox for this id.
        let body = format!(
            r#"{{"status":"running","sandbox":{{"pid":{}}}}}"#,
            std::process::id()
        );
        let d = root_with("a", &body);
        assert_eq!(live_status(d.path(), "a"), None);
        // A stopped status is never answered from the file.
        let d = root_with("a", r#"{"status":"stopped","sandbox":{"pid":1}}"#);
        assert_eq!(live_status(d.path(), "a"), None);
    }

    /// A process dressed as runsc's sandbox (named `exe`, booted under our
    /// root for this id) is the sandbox while it lives, and stops being it
    /// as a zombie and once reaped; its pid named for another id or root
    /// is not it.
    #[test]
    fn the_process_check_follows_the_process_through_death() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("exe");
        std::fs::copy("/bin/sh", &exe).unwrap();
        let root = dir.path().join("root");
        // `; :` keeps the shell (named exe) from exec'ing sleep.
        let mut child = std::process::Command::new(&exe)
            .arg("-c")
            .arg("sleep 60; :")
            .arg(format!("--root={}", root.display()))
            .arg("boot")
            .arg("sb1")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let t0 = std::time::Instant::now();
        while !is_sandbox_process(pid, &root, "sb1") {
            assert!(
                t0.elapsed().as_secs() < 10,
                "the dressed process never matched"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!is_sandbox_process(pid, &root, "sb2"), "another id");
        assert!(!is_sandbox_process(pid, dir.path(), "sb1"), "another root");
        child.kill().unwrap();
        // Killed, not reaped: a zombie, no longer the sandbox.
        let t0 = std::time::Instant::now();
        while is_sandbox_process(pid, &root, "sb1") {
            assert!(t0.elapsed().as_secs() < 10, "the zombie still matched");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // A test running beside this one may call runsc, whose waits reap
        // every zombie child named `exe` (gvisor::reap): then it is gone.
        if let Err(e) = child.wait() {
            assert_eq!(e.raw_os_error(), Some(libc::ECHILD), "{e}");
        }
        assert!(!is_sandbox_process(pid, &root, "sb1"), "reaped");
    }
}
