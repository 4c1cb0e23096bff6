//! Running an SDK scenario script (Python or Node) as a user would: its
//! output kept in a file and printed, a time limit, and the daemon's log
//! on failure.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dwell_testkit::{tail, Daemon};

/// Runs `cmd` (a script with its environment set: clear `E2B_DOMAIN` and
/// `E2B_DEBUG` there unless the scenario sets them) with its output in
/// `<daemon dir>/<out_name>`; panics with that output and the tail of the
/// daemon's log unless it exits 0 within `limit`.
pub fn run_scenario(mut cmd: Command, name: &str, out_name: &str, d: &Daemon, limit: Duration) {
    let out_path = d.dir.path().join(out_name);
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = cmd
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    eprintln!(
        "--- {name} ({:.1}s) ---\n{output}",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "scenario {name} failed ({status:?}); its output is above; daemon log tail:\n{}",
        tail(&d.log(), 40)
    );
}

/// The path of a script, for messages.
pub fn script_name(script: &Path) -> String {
    script.file_name().unwrap().to_string_lossy().into_owned()
}
