//! End to end: the CLI words its advice from an error's code and facts.
//! The daemon's error says what went wrong and carries the sandbox and its
//! state; the `dwell ...` command to run is added by the CLI.

mod common;

use common::*;

#[test]
fn a_refused_request_gets_the_cli_command_that_fixes_it() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("h1", &[]);
    d.ok(&["stop", "h1"]);
    // Stats exist only while a sandbox runs: the API says so with the
    // sandbox and its state as facts, and the CLI names `dwell start`.
    let out = d.run(&["stats", "h1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("sandbox h1 is stopped"), "{err}");
    assert!(err.contains("start it with `dwell start h1`"), "{err}");
    // An archived sandbox has no volume to compare: the same advice.
    d.ok(&["archive", "h1"]);
    let out = d.run(&["diff", "h1"]);
    let err = stderr(&out);
    assert!(err.contains("sandbox h1 is archived"), "{err}");
    assert!(err.contains("start it with `dwell start h1`"), "{err}");
    // A name already taken: the advice is given once.
    let out = d.run(&[
        "create", "--name", "h1", "--memory", "256M", "--disk", "512M",
    ]);
    let err = stderr(&out);
    assert_eq!(err.matches("`dwell rm h1`").count(), 1, "{err}");
}
