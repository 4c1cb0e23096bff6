//! The sandbox's defaults for commands: the working directory and user an
//! exec (or the service) gets when it names none — the image's WORKDIR and
//! USER. The daemon hands them over in the environment
//! ([`dwell_proto::DEFAULT_WORKDIR_ENV`], [`dwell_proto::DEFAULT_USER_ENV`]);
//! the agent takes them out at start so no process inherits them. The user
//! is resolved per exec (the sandbox's /etc/passwd may change).

use std::sync::OnceLock;

use dwell_proto::{DEFAULT_USER_ENV, DEFAULT_WORKDIR_ENV};

struct Defaults {
    workdir: Option<String>,
    user: Option<String>,
}

static DEFAULTS: OnceLock<Defaults> = OnceLock::new();

fn take(name: &str) -> Option<String> {
    let v = std::env::var(name).ok();
    std::env::remove_var(name);
    v.filter(|v| !v.is_empty())
}

/// Reads and removes the variables. Call first thing in `main`, while the
/// agent has a single thread.
pub fn init_from_env() {
    let d = DEFAULTS.get_or_init(|| Defaults {
        workdir: take(DEFAULT_WORKDIR_ENV),
        user: take(DEFAULT_USER_ENV),
    });
    // As a container runtime does: a WORKDIR the image lacks is made.
    if let Some(w) = &d.workdir {
        if std::process::id() == 1 && std::path::Path::new(w).is_absolute() {
            if let Err(e) = std::fs::create_dir_all(w) {
                eprintln!("dwell-agent: cannot create the working directory {w:?}: {e}");
            }
        }
    }
}

/// The default working directory, if the image set one.
pub fn workdir() -> Option<String> {
    DEFAULTS.get().and_then(|d| d.workdir.clone())
}

/// The default user, if the image set one.
pub fn user() -> Option<String> {
    DEFAULTS.get().and_then(|d| d.user.clone())
}

/// Why the defaults cannot be used now, if they cannot: the user does not
/// resolve, or the working directory is not a directory.
pub fn problem() -> Option<String> {
    if let Some(u) = user() {
        if let Err(e) = crate::user::resolve(&u) {
            return Some(format!("the image's USER: {}", e.message));
        }
    }
    if let Some(w) = workdir() {
        if !std::path::Path::new(&w).is_dir() {
            return Some(format!(
                "the image's WORKDIR {w:?} is not a directory in the sandbox"
            ));
        }
    }
    None
}
