//! Whether a sandbox may dump core. The kernel writes a crashing process's
//! core as `kernel.core_pattern` says; a pattern starting with `|` makes it
//! run that program as root in the host's namespaces with the dump on its
//! stdin, a host program fed by the sandbox. So core dumps stay off
//! (RLIMIT_CORE 1, soft and hard, the one value that also stops a piped
//! dump, and not changeable inside) unless asked for, and asking is refused
//! while the host's pattern is a pipe.

use crate::{Error, Result};

/// Where the kernel publishes the pattern.
pub const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";

/// Refuse core dumps for a sandbox when `pattern` (the content of
/// [`CORE_PATTERN`]) pipes dumps into a host program.
pub fn check(pattern: &str) -> Result<()> {
    let pattern = pattern.trim();
    if let Some(program) = pattern.strip_prefix('|') {
        return Err(Error::Unsupported {
            what: "core dumps in a sandbox".into(),
            why: format!(
                "the host's kernel.core_pattern pipes every core dump into a host program \
                 running as root ({}), which a sandbox could feed",
                program.trim()
            ),
            fix: "create the sandbox without core dumps, or set kernel.core_pattern on the \
                  host to a file name (for example `core`)"
                .into(),
        });
    }
    Ok(())
}

/// [`check`] against this host's current pattern.
pub fn check_host() -> Result<()> {
    let pattern = std::fs::read_to_string(CORE_PATTERN).map_err(|e| Error::Io {
        context: format!("reading {CORE_PATTERN} to decide whether core dumps are safe"),
        source: e,
    })?;
    check(&pattern)
}

/// Before a start: a sandbox granted core dumps only starts while the
/// host's pattern is not a pipe (it may have changed since the create).
pub fn check_grants(config: &crate::SandboxConfig) -> Result<()> {
    if config.grants.core_dumps {
        check_host()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_is_refused_with_the_program_and_the_fix() {
        let err = check("|/usr/lib/systemd/systemd-coredump %P %u %g\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("systemd-coredump"), "{msg}");
        assert!(msg.contains("core_pattern"), "{msg}");
        assert!(check(" |/bin/x").is_err());
    }

    #[test]
    fn a_file_pattern_is_allowed() {
        assert!(check("core\n").is_ok());
        assert!(check("/var/crash/core.%e.%p").is_ok());
        assert!(check("").is_ok());
    }
}
