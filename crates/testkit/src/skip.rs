//! Skips that say why: a test that needs what this machine lacks (root,
//! runsc, a tool) returns early and prints `SKIP <test>: <reason>`, with
//! the way to get it where there is one. Nothing else may skip.

use std::path::{Path, PathBuf};

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("this test")
        .to_string()
}

/// Prints `SKIP <test>: <reason>`.
pub fn skip(reason: &str) {
    eprintln!("SKIP {}: {reason}", test_name());
}

/// True when this process is root; otherwise prints that the test needs
/// root for `needs` (e.g. "namespaces, cgroups, loop devices").
pub fn has_root(needs: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        skip(&format!("needs root ({needs})"));
    }
    root
}

/// The runsc binary the gVisor runtime uses: `DWELL_RUNSC`, or
/// `/usr/bin/runsc`.
pub fn runsc_path() -> PathBuf {
    std::env::var_os("DWELL_RUNSC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/runsc"))
}

/// True when runsc is installed; otherwise prints how to install it.
pub fn has_runsc() -> bool {
    let runsc = runsc_path();
    let found = runsc.is_file();
    if !found {
        skip(&format!(
            "{} is not installed; the gVisor tests need it (scripts/install-deps.sh --gvisor)",
            runsc.display()
        ));
    }
    found
}

/// Whether `tool` is in one of the system's binary directories.
pub fn have_tool(tool: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists())
}

/// True when every one of `tools` is installed; otherwise prints the first
/// one missing.
pub fn has_tools(tools: &[&str]) -> bool {
    match tools.iter().find(|t| !have_tool(t)) {
        Some(missing) => {
            skip(&format!("{missing} is not installed"));
            false
        }
        None => true,
    }
}
