//! End to end: the REST API tried as a new client would, with
//! `schemathesis` (PyPI, installed by `scripts/install-deps.sh`) against
//! the daemon's TCP listener, its `/openapi.json` and the admin key.
//!
//! Generated requests (valid and invalid ones, and stateful sequences that
//! create sandboxes and act on them) must never get a server error, and
//! every response must match the document: its status, its content type
//! and its schema. Operations that need the API key refuse requests
//! without it, a method a path does not serve gets 405, and what was
//! deleted is gone. (Not run: the checks that a schema-valid request is
//! always accepted and an invalid one always refused, since the schemas
//! do not yet state every rule the handlers apply, such as non-empty names
//! or a struct in a field sent as an array; and the one that a created
//! resource is never answered 404, which also fires when the 404 is about
//! another resource the request names, such as an unknown snapshot to
//! restore.) Path ids are drawn partly from sandboxes left running,
//! paused, stopped and archived, and file paths from a list of awkward
//! ones, so the requests reach the control plane and the agent instead of
//! stopping at 404. The tenant may hold 8 sandboxes, which bounds what the
//! stateful phase creates. Bounded examples keep the run to a couple of
//! minutes; `DWELL_SCHEMATHESIS_EXAMPLES` and `DWELL_SCHEMATHESIS_SEED`
//! change them.

mod common;

use std::process::Command;

use common::*;

/// The checks the API is held to.
const CHECKS: &str = concat!(
    "not_a_server_error,status_code_conformance,content_type_conformance,",
    "response_schema_conformance,ignored_auth,missing_required_header,",
    "unsupported_method,use_after_free"
);

/// `schemathesis`'s version, or `None` when it is not installed.
fn schemathesis_version() -> Option<String> {
    let out = Command::new("schemathesis")
        .arg("--version")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| stdout(&out).trim().to_string())
}

/// Where generated ids and paths come from: the sandboxes made below and
/// paths that are special inside a sandbox (the agent's own, mount points,
/// kernel files).
const CONFIG: &str = r#"
[dictionaries.sandboxes]
values = ["st-running", "st-paused", "st-stopped", "st-archived"]

[dictionaries.paths]
values = ["/.dwell", "/run/dwell", "/", "/etc/hostname", "/tmp", "/tmp/x", "/proc/1/mem", "/sys/fs/cgroup", "/dev/null", "/root"]

[parameters]
"path.id" = { dictionary = "sandboxes", probability = 0.7 }
"query.path" = { dictionary = "paths", probability = 0.7 }
"#;

#[test]
fn generated_requests_get_no_server_error_and_match_the_document() {
    if !can_run() {
        return;
    }
    let Some(version) = schemathesis_version() else {
        skip(
            "schemathesis is not installed; install it with scripts/install-deps.sh \
             (pip install schemathesis)",
        );
        return;
    };
    eprintln!("{version}");
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start_with(&["--listen", &addr, "--default-max-sandboxes", "8"]);
    wait_for(10, "admin key and TCP listener", || {
        d.data.join("admin.key").exists() && std::net::TcpStream::connect(&addr).is_ok()
    });
    let key = std::fs::read_to_string(d.data.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    for name in ["st-running", "st-paused", "st-stopped", "st-archived"] {
        d.create(name, &[]);
    }
    d.ok(&["pause", "st-paused"]);
    d.ok(&["stop", "st-stopped"]);
    d.ok(&["stop", "st-archived"]);
    d.ok(&["archive", "st-archived"]);
    let config = d.dir.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let examples =
        std::env::var("DWELL_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "30".to_string());
    let seed = std::env::var("DWELL_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".to_string());
    let mut cmd = Command::new("schemathesis");
    cmd.current_dir(d.dir.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("http://{addr}/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples, "--seed", &seed])
        .args(["--workers", "2", "--no-color", "--request-timeout", "60"]);
    let out = output_within(cmd, "schemathesis run", || tail(&d.log(), 40));
    let report = stdout(&out);
    eprintln!("{report}");
    assert!(
        out.status.success(),
        "schemathesis found failures (exit {:?}):\n{report}\n{}\ndaemon log tail:\n{}",
        out.status.code(),
        stderr(&out),
        tail(&d.log(), 40)
    );
    // A run that tested nothing would pass too: it must have exercised
    // every operation of the document.
    let count = |label: &str| -> usize {
        let line = report
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} in the report:\n{report}"));
        let n = line.trim().rsplit('/').next().unwrap_or_default();
        n.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{label} {line:?}"))
    };
    let (selected, tested) = (count("Selected:"), count("Tested:"));
    assert!(selected >= 40, "only {selected} operations in the document");
    assert_eq!(tested, selected, "operations left untested:\n{report}");
}
